"""What every optimizer here shares: flag checks, the choice of implementation path, the
hyperparameter tensors of the fused path and its kernels.

Three paths compute the same update (see each optimizer's module):

* ``loop``: a Python for-loop over the parameters, one small kernel per op (torch's default on CPU);
* ``foreach``: the multi-tensor path, ``torch._foreach_*`` ops over lists grouped by
  device and dtype;
* ``fused``: one kernel per step for all tensors of a (device, dtype) group. On CPU, for
  contiguous float32/float64 tensors, it is the handwritten C++ twin of the optimizer's Python
  kernel (``_native``: one OpenMP region, each thread a slice of all the group's elements);
  everywhere else (CUDA, half precision, other layouts) it is the Python kernel traced once with
  ``torch.compile(fullgraph=True)``, for which inductor emits one kernel.
  Hyperparameters reach either as one float64 tensor on the parameters' device (updated in
  place only when a value changes), so a learning-rate schedule never triggers a recompile.
  Step-dependent factors (bias corrections, decayed lr) are Python floats written into that
  tensor when all params of the group share one step count (the usual case), else float64
  vectors computed by a few eager ops. The tensor lists the kernel takes are cached between
  steps (``_fused_batches``), so a step only re-reads ``p.grad``.

``choose_path`` is the rule behind ``foreach=None, fused=None``.
"""

from __future__ import annotations

import functools
import operator
import os
import shutil
import types
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from . import _native

#: Where the C++ kernels do not apply (CUDA, half precision, non-contiguous params), ``foreach=None,
#: fused=None`` takes the torch.compile'd fused path only from this many parameter elements on.
#: Measured for Adam on a busy 2-core CPU: the first (compiling) step takes 2-4 s with a warm
#: inductor cache and 40-65 s cold; the compiled step then saves ~0.1 ms per step on a
#: 7k-parameter MLP but ~1 ms (SGD) to ~2.5 ms (Adam) per million elements on ResNet-18 shapes.
#: From 2M elements a warm compile is repaid within ~1k steps and a cold one within a long run.
FUSED_AUTO_MIN_NUMEL = 2_000_000

_FUSED_DEVICES = ("cpu", "cuda", "xpu", "mps")
_FOREACH_DEVICES = ("cuda", "xpu", "mtia")

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


@functools.cache
def compile_works_on(device_type: str) -> bool:
    """Whether ``torch.compile`` (inductor) can generate kernels for this device type."""
    if not torch._dynamo.is_dynamo_supported():
        return False
    if device_type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++"))
    if device_type in ("cuda", "xpu"):
        from torch.utils._triton import has_triton

        return has_triton()
    return False


def choose_path(params: Sequence[Tensor], foreach: bool | None, fused: bool | None) -> str:
    """The implementation path for a group: ``"fused"``, ``"foreach"`` or ``"loop"``.

    Explicit flags win. With both ``None``:

    * ``fused`` on CPU when the group's params are contiguous float32/float64 tensors and the
      C++ kernels of ``_native`` are built (about two seconds, once per machine): they beat the
      for-loop from a few thousand elements on, and on large models match or beat torch's own
      fused kernels;
    * else ``fused`` when torch.compile works on the device and the group has at least
      ``FUSED_AUTO_MIN_NUMEL`` elements (the compile time pays off);
    * never ``fused`` for tensor subclasses with their own ``__torch_dispatch__`` or
      ``__torch_function__`` (DTensor, FakeTensor, ...);
    * else ``foreach`` on CUDA-like devices and ``loop`` elsewhere (on CPU the for-loop beats
      foreach, as torch's own default assumes).

    Inside a region that is itself being compiled the loop is used, and dynamo traces it.
    """
    if fused:
        return "fused"
    if foreach:
        return "foreach"
    if torch.compiler.is_compiling() or not params:
        return "loop"
    device_types = {p.device.type for p in params}
    if len(device_types) != 1:
        return "loop"
    (device_type,) = device_types
    # tensor subclasses with their own dispatch (DTensor, FakeTensor...) take the loop or
    # foreach, as torch's own default does, never a fused kernel that could not walk them
    plain = all(map(_native.plain_tensor_type, {type(p) for p in params}))
    if fused is None and foreach is None and plain:
        if device_type == "cpu" and _native_applies(params):
            return "fused"
        if compile_works_on(device_type) and sum(p.numel() for p in params) >= FUSED_AUTO_MIN_NUMEL:
            return "fused"
    if foreach is None and device_type in _FOREACH_DEVICES:
        return "foreach"
    return "loop"


def _native_applies(params: Sequence[Tensor]) -> bool:
    """Whether the C++ kernels can take these (CPU) params: built, and every param a
    contiguous float32 or float64 tensor."""
    return (
        _native.available()
        and {p.dtype for p in params} <= {torch.float32, torch.float64}
        and all(map(Tensor.is_contiguous, params))
    )


def compile_private(fn: Callable) -> Callable:
    """``torch.compile(fn, fullgraph=True, dynamic=False)`` with a cache of its own.

    Dynamo keeps compiled graphs (and counts recompiles against ``recompile_limit``) per code
    object. Giving every optimizer its own copy of the kernel's code object keeps one
    optimizer's shapes and options from evicting another's graphs, which would silently fall
    back to eager execution.
    """
    clone = types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    return torch.compile(clone, fullgraph=True, dynamic=False)


class FusedKernel:
    """A fused update: the handwritten C++ kernel when it applies to the arguments, else the
    ``torch.compile`` trace of the Python kernel ``fn`` (the same math, line by line)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.native = _native.kernel(fn.__name__)
        self._compiled: Callable | None = None

    @property
    def compiled(self) -> Callable:
        """The torch.compile'd kernel, created on first use (where torch.compile itself is
        unavailable only a call that needs it fails)."""
        if self._compiled is None:
            self._compiled = compile_private(self.fn)
        return self._compiled

    def __call__(self, *args: Any) -> None:
        if self.native is not None and self.native(*args):
            return
        # a gradient that is a zero tensor (no memory) or a lazily negated view: neither engine
        # reads it right (inductor's kernel crashes on the first and ignores the sign of the
        # second), so it goes in materialised; every kernel takes (params, grads, ...)
        grads = args[1]
        if any(map(_is_lazy, grads)):
            args = (args[0], [materialized(g) for g in grads], *args[2:])
            if self.native is not None and self.native(*args):
                return
        self.compiled(*args)


def _is_lazy(tensor: Tensor) -> bool:
    return tensor._is_zerotensor() or tensor.is_neg()


def materialized(tensor: Tensor) -> Tensor:
    """``tensor`` as a tensor with memory holding its values (zero tensors and negated views
    have none or other values)."""
    if tensor._is_zerotensor():
        return torch.zeros(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    return tensor.resolve_neg() if tensor.is_neg() else tensor


class _SparseGradients(Exception):
    """Raised before anything changes when the default path chose ``fused`` for a group whose
    gradients are sparse: ``step`` retries the group on the loop path."""


def scalar_dtype(device: torch.device) -> torch.dtype:
    """dtype of hyperparameter tensors: float64, so float64 parameters lose no precision."""
    return torch.float32 if device.type == "mps" else torch.float64


def group_with_indices(tensorlists: list[list[Any]]) -> list[tuple[list[list[Any]], list[int]]]:
    """The tensor lists split by (device, dtype) of the first list, as torch's foreach paths
    do, each with the indices it took; one split without copying in the usual one-group case."""
    first = tensorlists[0]
    device, dtype = first[0].device, first[0].dtype
    if all(t.dtype == dtype and t.device == device for t in first):
        return [(tensorlists, list(range(len(first))))]
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(
        tensorlists, with_indices=True
    )
    return list(grouped.values())


def group_by_device_and_dtype(tensorlists: list[list[Any]]) -> list[list[list[Any]]]:
    """The tensor lists split by (device, dtype) of the first list."""
    return [lists for (lists, _indices) in group_with_indices(tensorlists)]


def new_step(param: Tensor, fused: bool) -> Tensor:
    """torch's ``step`` state: 0-dim float; on CPU (float32, or float64 under a float64 default
    dtype), or float32 on the parameter's device for the fused path."""
    if fused:
        return torch.tensor(0.0, dtype=torch.float32, device=param.device)
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def stacked_steps(steps: list[Tensor], device: torch.device) -> Tensor:
    """The per-parameter step counts as one float64 vector on ``device``."""
    if any(s.device != device for s in steps):
        steps = [s.to(device) for s in steps]
    return torch.stack(steps).to(scalar_dtype(device))


_ONE = torch.tensor(1.0)


def increment_steps(steps: list[Tensor]) -> None:
    """``step += 1`` for a list of step tensors (a CPU-tensor scalar is ~5x faster on CPU)."""
    if steps[0].is_cpu:
        torch._foreach_add_(steps, _ONE, alpha=1.0)
    else:
        torch._foreach_add_(steps, 1.0)


def state_list(states: list[dict[str, Any]], key: str) -> list[Tensor | None] | None:
    """``state[key]`` of each param, or None when no param has it (e.g. ``max_exp_avg_sq``
    without amsgrad): one input for dynamo to guard instead of one per param."""
    values = [s.get(key) for s in states]
    return None if all(v is None for v in values) else values


_GRAD = operator.attrgetter("grad")
_VERSION = operator.attrgetter("_version")
_IS_SPARSE = operator.attrgetter("is_sparse")

#: what the fused path's cache records for a param without state (never written to)
_NO_STATE: dict[str, Any] = {}


@dataclass
class FusedBatch:
    """The fused kernel's tensors for one (device, dtype) share of a param group.

    ``state`` holds one list per key of the optimizer's ``fused_state`` (``None`` where a
    param lacks that entry, and ``None`` instead of the list when all do). ``step`` is the
    count that all ``steps`` share after this step's increment, or ``None`` when they differ
    (or there are none): step-dependent factors are then Python floats instead of
    per-parameter vectors. ``fresh`` marks params whose state was created when this batch was
    built (an optimizer that needs it clears it after the step).
    """

    device: torch.device
    params: list[Tensor]
    states: list[dict[str, Any]]
    state: list[list[Tensor | None] | None]
    steps: list[Tensor]
    fresh: list[bool] | None
    step: float | None = None
    step_versions: list[int] = field(default_factory=list)

    def increment_steps(self) -> None:
        """``step += 1`` on every step tensor, and on the shared count."""
        if self.steps:
            if not _native.increment(self.steps):  # (which leaves the versions as they are)
                increment_steps(self.steps)
                self.step_versions = list(map(_VERSION, self.steps))
            if self.step is not None:
                # the count stays exact in a float32 step tensor up to 2**24
                self.step = self.step + 1.0 if self.step < 2**24 else None

    def stacked_steps(self) -> Tensor:
        return stacked_steps(self.steps, self.device)


@dataclass
class FusedPlan:
    """A param group's fused batches, cached between steps while ``key`` (the ids of the params
    with a gradient) and every state entry stay the same."""

    key: tuple[int, ...]
    params: list[Tensor]
    states: list[dict[str, Any]]
    state_ids: list[int]
    dict_ids: list[int]
    batches: list[FusedBatch]


def check_non_negative(label: str, value: Any) -> None:
    """torch's ``Invalid <label>: <value>`` ValueError for a negative hyperparameter."""
    if not value >= 0.0:
        raise ValueError(f"Invalid {label}: {value}")


class Optimizer(torch.optim.Optimizer):
    """Base class: torch.optim.Optimizer plus path choice and fused-kernel plumbing.

    Subclasses implement ``_step_group(index, group, path)``; for the fused path they also
    implement ``_init_state(p, group, fused)``, list the state keys the kernel takes in
    ``fused_state`` and get their tensors from ``_fused_batches``.
    """

    #: state keys whose tensors the fused kernel takes, in its argument order
    fused_state: tuple[str, ...] = ()
    #: the RuntimeError for a sparse gradient (None: not checked)
    sparse_error: str | None = None

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if isinstance(defaults.get("lr"), Tensor) and defaults["lr"].numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        super().__init__(params, defaults)
        self._kernels: dict[str, Callable] = {}
        # (name, device) -> (values, tensor, a NumPy view of a CPU tensor for cheap rewrites)
        self._hypers: dict[tuple[Hashable, torch.device], tuple[tuple, Tensor, Any]] = {}
        self._plans: dict[int, FusedPlan] = {}
        self._dict_ids: list[int] | None = None  # ids of self.state's items, once per step
        if defaults.get("fused"):
            for group in self.param_groups:
                self._check_fused(group["params"])

    @staticmethod
    def _check_fused(params: Iterable[Tensor]) -> None:
        for p in params:
            if not (p.device.type in _FUSED_DEVICES and torch.is_floating_point(p)):
                raise RuntimeError(
                    "`fused=True` requires all the params to be floating point Tensors of "
                    f"supported devices: {list(_FUSED_DEVICES)} but {p.dtype} and "
                    f"{p.device.type}"
                )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if param_group.get("fused"):
            self._check_fused(param_group["params"])
        if hasattr(self, "_plans"):
            self._plans.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans.clear()

    def _path(self, group: dict[str, Any]) -> str:
        if group.get("fused") and group.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        return choose_path(group["params"], group.get("foreach"), group.get("fused"))

    def _kernel(self, fn: Callable) -> Callable:
        """This optimizer's fused kernel ``fn``: its C++ twin where that applies (CPU,
        float32/float64, contiguous tensors; see ``_native``), else this optimizer's
        ``torch.compile``'d copy of ``fn`` (compiled on first call)."""
        if fn.__name__ not in self._kernels:
            self._kernels[fn.__name__] = FusedKernel(fn)
        return self._kernels[fn.__name__]

    def _hyper(self, name: Hashable, device: torch.device, values: Sequence[float]) -> Tensor:
        """``values`` as one float64 vector on ``device``, cached under ``name``: rewritten in
        place (one small copy) only when a value changes, e.g. when a schedule sets a new lr."""
        key = (name, device)
        values = tuple(values)
        cached = self._hypers.get(key)
        if cached is None or len(cached[0]) != len(values):
            tensor = torch.tensor(values, dtype=scalar_dtype(device), device=device)
            self._hypers[key] = (values, tensor, tensor.numpy() if tensor.is_cpu else None)
            return tensor
        old, tensor, view = cached
        if old != values:
            if view is not None:  # through the NumPy view: no temporary tensor, no dispatch
                view[:] = values
            else:
                tensor.copy_(torch.tensor(values, dtype=tensor.dtype))
            self._hypers[key] = (values, tensor, view)
        return tensor

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        """Create ``self.state[p]`` if it is empty (the fused path calls this)."""
        raise NotImplementedError

    def _fused_batches(self, index: int, group: dict[str, Any]) -> list[tuple[FusedBatch, list]]:
        """The group's params that have a gradient, with their state, split by (device, dtype)
        as the fused kernels take them; each batch comes with its current gradients.

        The lists are built once and reused while the same params have gradients and no state
        entry was replaced (checked by identity every step; ``load_state_dict`` and
        ``add_param_group`` drop them), so a step only re-reads ``p.grad``.
        """
        params = group["params"]
        grads = list(map(_GRAD, params))
        if any(g is None for g in grads):
            params = [p for p, g in zip(params, grads, strict=True) if g is not None]
            grads = [g for g in grads if g is not None]
        if not params:
            return []
        if any(map(_IS_SPARSE, grads)):  # checked before any state is created
            if self.sparse_error is not None:
                raise RuntimeError(self.sparse_error)
            if group.get("fused") is None:
                raise _SparseGradients
            raise RuntimeError(
                f"{type(self).__name__}(fused=True) does not support sparse gradients; "
                "use foreach=False"
            )
        key = tuple(map(id, params))
        plan = self._plans.get(index)
        if plan is None or plan.key != key or not self._plan_is_current(plan):
            plan = self._build_plan(key, params, group)
            self._plans[index] = plan
        if len(plan.batches) == 1:  # one device and dtype: the grads are already in order
            return [(plan.batches[0], grads)]
        return [(batch, list(map(_GRAD, batch.params))) for batch in plan.batches]

    def _plan_is_current(self, plan: FusedPlan) -> bool:
        """Whether ``self.state`` still holds the same state dicts, each holding the same
        objects, and no step tensor was changed since our last increment.

        The state is compared by the ids of its keys and values, in order, rather than looked
        up per param: a lookup hashes the tensor through ``Tensor.__hash__``, a Python call per
        param. The plan keeps its params and their old dicts alive, so a replaced one cannot
        reuse an id."""
        if self._dict_ids is None:  # once per step, not per group: it covers every param
            self._dict_ids = list(map(id, chain.from_iterable(self.state.items())))
        return (
            self._dict_ids == plan.dict_ids
            and list(map(id, chain.from_iterable(map(dict.values, plan.states)))) == plan.state_ids
            and all(
                list(map(_VERSION, batch.steps)) == batch.step_versions for batch in plan.batches
            )
        )

    def _build_plan(self, key: tuple[int, ...], params: list[Tensor], group: dict) -> FusedPlan:
        fresh = [not self.state.get(p) for p in params]
        for p in params:
            self._init_state(p, group, fused=True)
        states = [self.state.get(p, _NO_STATE) for p in params]
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            by_kind.setdefault((p.device, p.dtype), []).append(i)
        batches = []
        for indices in by_kind.values():
            d_params = [params[i] for i in indices]
            d_states = [states[i] for i in indices]
            d_fresh = [fresh[i] for i in indices]
            steps = [s["step"] for s in d_states] if "step" in d_states[0] else []
            counts = {s.item() for s in steps}
            batches.append(
                FusedBatch(
                    device=d_params[0].device,
                    params=d_params,
                    states=d_states,
                    state=[state_list(d_states, k) for k in self.fused_state],
                    steps=steps,
                    fresh=d_fresh,
                    step=counts.pop() if len(counts) == 1 else None,
                    step_versions=list(map(_VERSION, steps)),
                )
            )
        state_ids = list(map(id, chain.from_iterable(map(dict.values, states))))
        # (keys too: a state dict moved to another param changes no value's id)
        self._dict_ids = dict_ids = list(map(id, chain.from_iterable(self.state.items())))
        return FusedPlan(key, params, states, state_ids, dict_ids, batches)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._kernels = {}
        self._hypers = {}
        self._plans = {}
        self._dict_ids = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step (``closure`` re-evaluates the model, optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._dict_ids = None  # the state may have changed since the last step
        for index, group in enumerate(self.param_groups):
            try:
                self._step_group(index, group, self._path(group))
            except _SparseGradients:  # the for-loop takes them, as torch's does
                self._step_group(index, group, "loop")
        return loss

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        raise NotImplementedError
