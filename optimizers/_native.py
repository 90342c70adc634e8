"""The fused path's CPU engine: the handwritten C++ kernels of ``_native.cpp``.

On CPU a fused step of a float32 or float64 group runs one C++ function that updates every
tensor of the group in a single OpenMP parallel region: each thread takes one contiguous
slice of all the group's elements laid end to end. torch's fused kernels and the
``torch.compile`` trace both synchronise the threads after every tensor; this does not, which
is what puts it ahead of torch's fastest path on CPU (see the README's speed table).

The library is compiled on first use with the system's C++ compiler and cached on disk
(``$OPTBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/optbench`` or ``~/.cache/optbench``), keyed by
the source, the compiler and the CPU, so a cold start costs about a second once per machine.
Everything else (CUDA, half precision, non-contiguous tensors, no compiler) takes the
``torch.compile`` kernel. ``OPTBENCH_NATIVE=0``, or ``ENABLED = False`` before an optimizer's
first step, makes that optimizer use ``torch.compile`` on CPU too.
"""

from __future__ import annotations

import array
import ctypes
import functools
import hashlib
import operator
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: whether fused kernels created from now on may use the C++ engine (tests switch it off)
ENABLED = os.environ.get("OPTBENCH_NATIVE", "1") != "0"

SOURCE = Path(__file__).with_name("_native.cpp")
#: no fused multiply-adds (roundings as torch's elementwise ops), vectorised sqrt (no errno)
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-std=c++17"]
FLAGS += ["-shared", "-fPIC"]
_SUFFIX = {torch.float32: "_f32", torch.float64: "_f64"}


@dataclass(frozen=True)
class Spec:
    """How a Python fused kernel's arguments map to its C++ twin: ``lists`` tensor lists
    (params, grads, state...), then ``hyper``, then ``factors`` when ``has_factors``, then
    boolean options."""

    symbol: str
    lists: int
    has_factors: bool


#: Python kernel name -> C++ kernel
SPECS = {
    "_adam_kernel": Spec("adam", 5, True),
    "_sgd_kernel": Spec("sgd", 3, True),
    "_momentum_kernel": Spec("momentum", 3, False),
    "_adagrad_kernel": Spec("adagrad", 3, True),
    "_rmsprop_kernel": Spec("rmsprop", 5, False),
    "_rprop_kernel": Spec("rprop", 4, True),
    "_adadelta_kernel": Spec("adadelta", 4, False),
}


def cache_dir() -> Path:
    if os.environ.get("OPTBENCH_CACHE_DIR"):
        return Path(os.environ["OPTBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "optbench"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _build(compiler: str, flags: list[str], target: Path) -> None:
    """Compile into a temporary file next to ``target``, then rename: concurrent processes
    (``bench.run --jobs``) never load a half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, str(SOURCE), "-o", tmp], check=True, capture_output=True, text=True
        )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use), or None where no compiler can build them."""
    names = (os.environ.get("CXX", ""), "g++", "c++", "clang++")
    compiler = next((shutil.which(c) for c in names if c and shutil.which(c)), None)
    if compiler is None:
        return None
    errors = []
    # OpenMP threads where the compiler has them (macOS's clang does not: one thread then)
    for flags in ([*FLAGS, "-fopenmp"], [*FLAGS, "-fopenmp-simd"], FLAGS):
        key = hashlib.sha256(
            "\0".join([SOURCE.read_text(), compiler, *flags, _cpu_id()]).encode()
        ).hexdigest()[:16]
        target = cache_dir() / f"optimizers_native_{key}.so"
        try:
            if not target.exists():
                _build(compiler, flags, target)
            return ctypes.CDLL(str(target))
        except (OSError, subprocess.CalledProcessError) as error:
            errors.append(getattr(error, "stderr", None) or str(error))
    warnings.warn(
        "optimizers: could not build the C++ fused kernels; the fused path uses torch.compile "
        f"on CPU ({errors[-1].strip().splitlines()[-1] if errors else 'unknown error'})",
        stacklevel=3,
    )
    return None


def available() -> bool:
    """Whether fused kernels created now would use the C++ engine (builds it on first call)."""
    return ENABLED and library() is not None


def kernel(name: str) -> Callable[..., bool] | None:
    """The C++ twin of the Python fused kernel ``name`` (a ``NativeKernel``), or None when the
    engine is off, has no twin for ``name`` or cannot be built."""
    spec = SPECS.get(name)
    if not ENABLED or spec is None:
        return None
    lib = library()
    if lib is None:
        return None
    functions = {}
    for dtype, suffix in _SUFFIX.items():
        fn = getattr(lib, spec.symbol + suffix)
        fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        fn.argtypes += [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        fn.restype = ctypes.c_int
        functions[dtype] = fn
    return NativeKernel(spec, functions)


_nbytes = operator.attrgetter("nbytes")
_is_cpu = operator.attrgetter("is_cpu")
_dtype = operator.attrgetter("dtype")


class _CheckedLists:
    """Data pointers of tensor lists, each checked once: CPU tensors of one dtype, contiguous,
    and as many bytes as the params (so a state of another size can never make the loop
    overrun it).

    A list that is passed again (the fused path's cached params and state lists are the same
    list objects every step) with the same pointers is not checked again: its tensors are the
    same objects at the same addresses, and a tensor cannot shrink its storage in place.
    Per step that leaves one pass over each list (reading its pointers) instead of three.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Sequence, list[int], list[int]]] = {}

    def pointers(
        self,
        tensors: Sequence[Tensor | None],
        dtype: torch.dtype,
        sizes: list[int] | None,
        stable: bool = True,
    ) -> tuple[list[int], list[int]] | None:
        """(pointers, byte sizes) of ``tensors``, or None where one is absent, not a contiguous
        CPU tensor of ``dtype``, or not of the byte size in ``sizes`` (when given)."""
        try:
            pointers = list(map(Tensor.data_ptr, tensors))
        except TypeError:  # a None entry: a param lacks this state
            return None
        seen = self._seen.get(id(tensors))
        if (
            seen is not None
            and seen[0] is tensors
            and seen[1] == pointers
            and (sizes is None or seen[2] is sizes)
        ):
            return pointers, seen[2]
        own = list(map(_nbytes, tensors))
        if (
            (sizes is not None and own != sizes)
            or not all(map(_is_cpu, tensors))
            or set(map(_dtype, tensors)) != {dtype}
            or not all(map(Tensor.is_contiguous, tensors))
        ):
            return None
        if stable:
            if len(self._seen) >= 64:  # lists of plans that were rebuilt
                self._seen.clear()
            self._seen[id(tensors)] = (tensors, pointers, own if sizes is None else sizes)
        return pointers, own if sizes is None else sizes


class NativeKernel:
    """Called with the Python kernel's arguments: runs the C++ kernel and returns True, or
    returns False, having done nothing, where it does not apply (not CPU, not float32/64, a
    tensor not contiguous or absent where an option needs it)."""

    def __init__(self, spec: Spec, functions: dict[torch.dtype, Callable]) -> None:
        self.spec = spec
        self.functions = functions
        self.checked = _CheckedLists()

    def __call__(self, *args: Any) -> bool:
        spec = self.spec
        lists: Sequence[Sequence[Tensor | None] | None] = args[: spec.lists]
        hyper: Tensor = args[spec.lists]
        factors: Tensor | None = args[spec.lists + 1] if spec.has_factors else None
        options = args[spec.lists + 1 + spec.has_factors :]
        params = lists[0]
        function = self.functions.get(params[0].dtype)
        if function is None or hyper.device.type != "cpu":
            return False
        dtype = params[0].dtype
        checked = self.checked.pointers(params, dtype, None)
        if checked is None:
            return False
        pointers, sizes = checked
        all_pointers = array.array("q", pointers)
        for index, tensors in enumerate(lists[1:], start=1):
            if tensors is None:
                all_pointers.extend(repeat(0, len(params)))
                continue
            # the grads are a new list every step: checked every time, never remembered
            checked = self.checked.pointers(tensors, dtype, sizes, stable=index != 1)
            if checked is None:
                return False
            all_pointers.extend(checked[0])
        itemsize = params[0].element_size()
        numel = array.array("q", [size // itemsize for size in sizes])
        if factors is not None:
            factors = factors.to(torch.float64).contiguous()
        status = function(
            len(params),
            numel.buffer_info()[0],
            all_pointers.buffer_info()[0],
            hyper.data_ptr(),
            None if factors is None else factors.data_ptr(),
            sum(1 << i for i, on in enumerate(options) if on),
            torch.get_num_threads(),
        )
        return status == 0


_STEP_LISTS = _CheckedLists()
_FOUR_BYTES: dict[int, list[int]] = {}


def increment(steps: list[Tensor]) -> bool:
    """``step += 1`` on float32 CPU step counts in one C call (without bumping the tensors'
    version counters); False, having done nothing, where that does not apply."""
    lib = library() if ENABLED else None
    if lib is None:
        return False
    four = _FOUR_BYTES.setdefault(len(steps), [4] * len(steps))  # one float32 each
    checked = _STEP_LISTS.pointers(steps, torch.float32, four)
    if checked is None:
        return False
    pointers = array.array("q", checked[0])
    lib.add_one_f32(ctypes.c_int64(len(steps)), ctypes.c_void_p(pointers.buffer_info()[0]))
    return True
