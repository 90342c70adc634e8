"""``fused=True``: an optimizer's multi-tensor update run as one ``torch.compile`` graph.

The function compiled is ``_multi_tensor_<name>``, the same one ``foreach=True`` runs eagerly,
so the update rule is written once for both. ``torch.compile(fullgraph=True, dynamic=False)``
traces its ``torch._foreach_*`` ops into one graph per param group, for which inductor
generates one fused loop nest (one kernel on CPU). Its numbers equal the multi-tensor path's
up to rounding: inductor keeps intermediates in registers and may contract multiply-adds.

* ``lr`` enters the graph as a 0-dim float64 CPU tensor, so a schedule that changes it every
  step never recompiles. The other hyperparameters and the boolean options are compiled in as
  constants: changing one recompiles once. Step counts are read inside the graph.
* Complex parameters are updated through their real views (inductor has no complex kernels).
* Checked before every call, where a compiled kernel would differ from the eager ops: params
  are floating point or complex on a device with fused kernels, no tensor is updated twice in
  one step (a parameter listed twice, params sharing a state dict: the eager ops update it
  twice, a compiled graph once), no inference tensor is written outside inference mode, and
  gradients are dense (zero-tensor or lazily negated gradients are materialised first). The
  optimizer classes also check every state tensor against its param's shape and dtype.
* Inductor loads the code it generates from its cache directory; before the first compile
  ``private_cache_dir`` makes sure that directory belongs to this user and no one else can
  write it.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
import warnings
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

#: graphs kept per update function (dynamo's default of 8 is shared by every optimizer using
#: that function in the process: model shapes, param groups and options each take one);
#: beyond it a step runs the update uncompiled, with a warning
RECOMPILE_LIMIT = 64


@functools.cache
def compiled(fn: Callable) -> Callable:
    """``fn`` compiled once per process (graphs are cached per input shapes and options)."""
    return torch.compile(fn, fullgraph=True, dynamic=False)


def run(fn: Callable, *lists: list, lr: float | Tensor, **options: Any) -> None:
    """``fn(*lists, lr=lr, **options)`` compiled: ``lists`` are the params, the grads and the
    state lists in ``fn``'s order. Entries ``fn`` creates in a state list (SGD's first
    momentum buffer) land in the caller's list."""
    params, grads, *states = lists
    check_inputs(params, grads, states)
    if not _cache_checked:
        private_cache_dir()
    if any(map(Tensor._is_zerotensor, grads)) or any(map(Tensor.is_neg, grads)):
        grads = [_materialized(g) for g in grads]
    complex_params = (
        list(map(torch.is_complex, params)) if any(map(torch.is_complex, params)) else []
    )
    if complex_params:  # real views, in copies of the lists
        used = [[_real(t) for t in ts] if _is_tensor_list(ts) else ts for ts in lists]
        used[1] = [_real(g) for g in grads]
    else:
        used = [params, grads, *states]
    # a per-run lr is an (N,) tensor (see _base.run_lr)
    lr_tensor = lr.to(torch.float64) if isinstance(lr, Tensor) else _scalar_tensor(float(lr))
    try:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            compiled(fn)(*used, lr=lr_tensor, **options)
    except torch._dynamo.exc.FailOnRecompileLimitHit:  # (raised before anything ran)
        warnings.warn(
            f"optimizers: {fn.__name__} has {RECOMPILE_LIMIT} compiled graphs (param groups, "
            "shapes, options); this one runs uncompiled, as foreach=True",
            stacklevel=4,
        )
        fn(*used, lr=lr_tensor, **options)
    if complex_params:
        for original, new in zip(states, used[2:], strict=True):
            for i, (old, t) in enumerate(zip(original, new, strict=True)):
                if old is None and t is not None and _is_tensor_list(original):
                    original[i] = torch.view_as_complex(t) if complex_params[i] else t


@functools.lru_cache(maxsize=64)
def _scalar_tensor(value: float) -> Tensor:
    """``value`` as a 0-dim float64 CPU tensor (the same one while it does not change; the
    graphs only read it)."""
    return torch.tensor(value, dtype=torch.float64)


def _real(t: Any) -> Any:
    return torch.view_as_real(t) if isinstance(t, Tensor) and torch.is_complex(t) else t


def _is_tensor_list(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(t, Tensor) or t is None for t in value)


def _materialized(grad: Tensor) -> Tensor:
    """A zero tensor (no memory) or a lazily negated view as a plain tensor of its values:
    inductor's kernels read neither right."""
    if grad._is_zerotensor():
        return torch.zeros(grad.shape, dtype=grad.dtype, device=grad.device)
    return grad.resolve_neg() if grad.is_neg() else grad


@functools.cache
def _fused_devices() -> list[str]:
    return _get_fused_kernels_supported_devices()


def _fused_error(devices: list[str], p: Tensor) -> str:
    return (
        "`fused=True` requires all the params to be floating point Tensors of "
        f"supported devices: {devices} but {p.dtype} and {p.device.type}"
    )


_IS_CPU, _IS_SPARSE, _DTYPE = attrgetter("is_cpu"), attrgetter("is_sparse"), attrgetter("dtype")


def check_inputs(params: list[Tensor], grads: list[Tensor], states: tuple) -> None:
    """The fused path's refusals (see the module docstring), before anything changes."""
    if not all(map(_IS_CPU, params)):
        devices = _fused_devices()
        for p in params:
            if p.device.type not in devices:
                raise RuntimeError(_fused_error(devices, p))
    for dtype in set(map(_DTYPE, params)):
        if not (dtype.is_floating_point or dtype.is_complex):
            p = next(p for p in params if p.dtype == dtype)
            raise RuntimeError(_fused_error(_fused_devices(), p))
    if any(map(_IS_SPARSE, grads)):
        raise RuntimeError("fused=True does not support sparse gradients; use foreach=False")
    written = [t for ts in (params, *states) if _is_tensor_list(ts) for t in ts if t is not None]
    if len(set(map(id, written))) != len(written):
        raise ValueError(
            "fused=True: a tensor would be updated twice in one step (a parameter listed "
            "twice, or parameters sharing a state dict); remove the duplicate, or use "
            "foreach=False, which updates it twice as torch.optim does"
        )
    if not torch.is_inference_mode_enabled() and any(map(Tensor.is_inference, written)):
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed (the "
            "optimizer state was created under torch.inference_mode())"
        )


_cache_checked = False


def _private(path: str) -> bool:
    """Whether ``path`` is a directory (created 0700 if absent) that belongs to this user and
    that no one else can write: not a symlink, not group- or world-writable."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not hasattr(os, "geteuid"):  # no owners to check (Windows)
        return stat.S_ISDIR(st.st_mode)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def private_cache_dir() -> str:
    """Point inductor at a cache directory only this user can write, and return it.

    ``$TORCHINDUCTOR_CACHE_DIR``, else inductor's default ``<tmp>/torchinductor_<user>`` (a
    predictable shared path), is kept if it passes ``_private``; else
    ``$XDG_CACHE_HOME/optbench/torchinductor`` (``~/.cache/...``), else a new temporary
    directory. Inductor keeps precompiled headers in its default directory whatever the
    setting: where that one fails the check, header precompilation is switched off.
    """
    global _cache_checked
    from torch._inductor.runtime import cache_dir_utils  # (slow to import: only when compiling)

    default = cache_dir_utils.default_cache_dir()
    if not _private(default):
        torch._inductor.config.cpp_cache_precompile_headers = False
    wanted = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default
    home = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    fallback = os.path.join(home, "optbench", "torchinductor")
    chosen = next((d for d in (wanted, fallback) if _private(d)), None)
    if chosen is None:
        chosen = tempfile.mkdtemp(prefix="torchinductor-")
    if chosen != wanted:
        warnings.warn(
            f"optimizers: inductor's cache {wanted} is not a private directory of this user "
            f"(owner or permissions); compiling into {chosen}",
            stacklevel=3,
        )
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = chosen
    triton = os.environ.get("TRITON_CACHE_DIR")
    if triton and not _private(triton):
        os.environ["TRITON_CACHE_DIR"] = os.path.join(chosen, "triton")
    _cache_checked = True
    return chosen
