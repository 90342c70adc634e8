"""The fused path's CPU engine: the handwritten C++ kernels of ``_native.cpp``.

On CPU a fused step of a float32 or float64 group runs one C++ function that updates every
tensor of the group in a single OpenMP parallel region: each thread takes one contiguous
slice of all the group's elements laid end to end. torch's fused kernels and the
``torch.compile`` trace both synchronise the threads after every tensor; this does not.

The library is compiled on first use with the system's C++ compiler and cached on disk
(``$OPTBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/optbench`` or ``~/.cache/optbench``, else the
temporary directory), keyed by the source, the compiler, the flags and the CPU, so a cold start
costs about two seconds once per machine. Everything else (CUDA, half precision, non-contiguous
tensors, tracing by dynamo) takes the ``torch.compile`` kernel; without a C++ compiler neither
engine works on CPU and the default path is the for-loop. ``OPTBENCH_NATIVE=0`` (read at import)
or ``ENABLED = False`` turns the C++ engine off: the default CPU path becomes the for-loop, and a
``fused=True`` optimizer whose first fused step runs with it off uses ``torch.compile``.

Every call checks every tensor it hands to C++: a plain tensor (no ``__torch_dispatch__``
subclass, functional wrapper, zero tensor or lazily negated view), on CPU, of the group's dtype,
contiguous, with as many elements as its parameter and memory behind it. Anything else goes to
the ``torch.compile`` kernel. The checks run in C++ on torch's tensor objects
(``_native_checks.cpp``, built against torch's and Python's headers in a background thread on
first use, about 12-16 s once per machine and torch version) and, until it is built or where it
cannot be, in Python (``checked_pointers``). The two read the same properties, except that only
the C++ checks compare the tensor with its storage's size (a storage shrunk under its tensor,
which torch's own ops do not check either).
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
import sys
import sysconfig
import tempfile
import threading
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
_BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC"]
#: tried in order: OpenMP threads; one thread where the compiler lacks OpenMP (macOS's clang);
#: then without -march=native for toolchains that reject it
FLAG_SETS = [
    ["-march=native", *_BASE_FLAGS, "-fopenmp"],
    ["-march=native", *_BASE_FLAGS, "-fopenmp-simd"],
    [*_BASE_FLAGS, "-fopenmp"],
    _BASE_FLAGS,
]
_SUFFIX = {torch.float32: "_f32", torch.float64: "_f64"}


@dataclass(frozen=True)
class Spec:
    """How a Python fused kernel's arguments map to its C++ twin: ``lists`` tensor lists
    (params, grads, state...), then ``hyper``, then ``factors`` when ``has_factors``, then
    boolean options. ``optional`` are the state lists that may be None (an option is off)."""

    symbol: str
    lists: int
    has_factors: bool
    optional: frozenset[int] = frozenset()


#: Python kernel name -> C++ kernel
SPECS = {
    "_adam_kernel": Spec("adam", 5, True, frozenset({4})),
    "_sgd_kernel": Spec("sgd", 3, True, frozenset({2})),
    "_momentum_kernel": Spec("momentum", 3, False),
    "_adagrad_kernel": Spec("adagrad", 3, True),
    "_rmsprop_kernel": Spec("rmsprop", 5, False, frozenset({3, 4})),
    "_rprop_kernel": Spec("rprop", 4, True),
    "_adadelta_kernel": Spec("adadelta", 4, False),
}


def cache_dirs() -> list[Path]:
    """Where the library may be cached, in order of preference."""
    dirs = []
    if os.environ.get("OPTBENCH_CACHE_DIR"):
        dirs.append(Path(os.environ["OPTBENCH_CACHE_DIR"]).resolve())
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        dirs.append(Path(base).resolve() / "optbench")
    except RuntimeError:  # no home directory
        pass
    user = os.getuid() if hasattr(os, "getuid") else "user"
    dirs.append(Path(tempfile.gettempdir()) / f"optbench-{user}")
    return dirs


def _cpu_id() -> str:
    """What -march=native depends on: the first CPU's description in /proc/cpuinfo (model
    and flags on x86, implementer, part and features on ARM), without its changing lines."""
    volatile = ("cpu mhz", "bogomips", "processor", "core id", "apicid", "initial apicid")
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        return "\n".join(ln for ln in first if not ln.lower().startswith(volatile))
    except OSError:
        return f"{platform.machine()} {platform.processor()} {platform.platform()}"


def _compiler_id(compiler: str) -> str:
    try:
        done = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        return done.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(compiler: str, flags: list[str], target: Path, source: Path = SOURCE) -> None:
    """Compile into a temporary file next to ``target``, then rename: concurrent processes
    (``bench.run --jobs``) never load a half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, str(source), *flags, "-o", tmp],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o755 & ~umask)  # mkstemp's 0600 would hide it from other users
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compiler() -> str | None:
    names = (os.environ.get("CXX", ""), "g++", "c++", "clang++")
    return next(filter(None, (shutil.which(c) for c in names if c)), None)


def _build_or_load(
    compiler: str,
    source: Path,
    prefix: str,
    identity: list[str],
    flag_sets: list[list[str]],
    load: Callable[[str], Any],
    errors: list[str],
) -> tuple[Any, list[str]] | None:
    """``load`` of the library built from ``source`` with the first flag set that compiles, and
    that set; None when none does. The library is cached as ``<prefix>_<hash>.so`` in the
    first of ``cache_dirs()`` that works, the hash covering ``identity`` and the flags.
    Failures are appended to ``errors``."""
    for flags in flag_sets:
        key = hashlib.sha256("\0".join([*identity, *flags]).encode()).hexdigest()[:16]
        for folder in cache_dirs():
            target = folder / f"{prefix}_{key}.so"
            try:
                if not target.exists():
                    _build(compiler, flags, target, source)
                return load(str(target)), flags
            except subprocess.SubprocessError as error:  # these flags fail: the next set
                errors.append(str(getattr(error, "stderr", None) or error))
                break
            except OSError as error:  # this folder fails (not writable...): the next one
                errors.append(str(error))
                continue
    return None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use), or None where no compiler can build them."""
    compiler = _compiler()
    if compiler is None:
        return None
    errors: list[str] = []
    try:
        identity = [SOURCE.read_text(), compiler, _compiler_id(compiler), _cpu_id()]
        built = _build_or_load(
            compiler, SOURCE, "optimizers_native", identity, FLAG_SETS, ctypes.CDLL, errors
        )
    except OSError as error:  # e.g. the source cannot be read
        errors.append(str(error))
        built = None
    if built is None:
        warnings.warn(
            "optimizers: could not build the C++ fused kernels; the fused path uses "
            f"torch.compile on CPU ({_last_line(errors)})",
            stacklevel=3,
        )
        return None
    lib, flags = built
    missing = [name for name in ("-fopenmp", "-march=native") if name not in flags]
    if missing:
        warnings.warn(
            f"optimizers: the C++ fused kernels were built without {missing} "
            f"({_last_line(errors)}); the fused CPU path is slower",
            stacklevel=3,
        )
    return lib


def _last_line(errors: list[str]) -> str:
    lines = [line for error in errors for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def available() -> bool:
    """Whether fused kernels created now would use the C++ engine (builds it on first call)."""
    return ENABLED and library() is not None


#: whether kernels may take their argument checks from ``_native_checks.cpp`` (tests switch it)
CHECKS_ENABLED = os.environ.get("OPTBENCH_NATIVE_CHECKS", "1") != "0"
CHECKS_SOURCE = Path(__file__).with_name("_native_checks.cpp")
#: why the C++ argument checks are not there ("" while they are, or are being built)
checks_error = ""
_checks_lock = threading.Lock()
_checks_build: threading.Thread | None = None
_gather: Callable[..., int] | None = None


def _checks_flags() -> list[str]:
    """How to compile ``_native_checks.cpp`` against this torch and this Python."""
    torch_dir = Path(torch.__file__).resolve().parent
    include, lib = torch_dir / "include", torch_dir / "lib"
    python_include = sysconfig.get_paths()["include"]
    if not (Path(python_include) / "Python.h").exists():
        raise FileNotFoundError(f"no Python.h in {python_include} (a python3-dev package)")
    return [
        "-O2",
        "-shared",
        "-fPIC",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        f"-I{python_include}",
        f"-I{include}",
        f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-L{lib}",
        f"-Wl,-rpath,{lib}",
        "-ltorch_python",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
    ]


def _build_checks() -> None:
    """Build (or find in the cache) the C++ argument checks and publish ``gather_pointers``;
    on failure, say why in ``checks_error``."""
    global _gather, checks_error
    try:
        compiler = _compiler()
        if compiler is None:
            raise FileNotFoundError("no C++ compiler")
        flags = _checks_flags()
        identity = [CHECKS_SOURCE.read_text(), compiler, _compiler_id(compiler)]
        identity += [torch.__version__, sys.version]
        errors: list[str] = []
        # torch 2.14's headers need C++20, older ones build with C++17
        flag_sets = [[standard, *flags] for standard in ("-std=c++20", "-std=c++17")]
        built = _build_or_load(
            compiler,
            CHECKS_SOURCE,
            "optimizers_native_checks",
            identity,
            flag_sets,
            lambda path: ctypes.PyDLL(path).gather_pointers,
            errors,
        )
        if built is not None:
            gather = built[0]
            gather.argtypes = [ctypes.py_object, ctypes.c_int64, ctypes.c_int]
            gather.argtypes += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            gather.restype = ctypes.c_int
            _gather = gather
            return
        checks_error = _last_line(errors)
    except Exception as error:  # a speed-up only: whatever fails, the Python checks stay
        checks_error = f"{type(error).__name__}: {error}"


def gather_function(wait: bool = False) -> Callable[..., int] | None:
    """``gather_pointers`` of ``_native_checks.cpp``: the kernels' argument checks in C++.

    None while it is being built (on first use per machine and torch version, about 12-16 s,
    in a background thread, so no step waits for it: the Python checks run meanwhile), or
    where it cannot be built or its build could not start (``checks_error`` says why), or when
    ``CHECKS_ENABLED`` is off. ``wait`` blocks until the build is done.
    """
    global _checks_build
    if not CHECKS_ENABLED:
        return None
    if _gather is None and _checks_build is None and not checks_error:
        with _checks_lock:
            if _checks_build is None and not checks_error:
                _start_checks_build()
    if wait and _checks_build is not None:
        _checks_build.join()
    return _gather


def _start_checks_build() -> None:
    global _checks_build, checks_error
    # not a daemon: an interpreter that exits mid-build finishes it (once per machine) rather
    # than abandoning it
    thread = threading.Thread(target=_build_checks, name="optbench-checks")
    try:
        if sys.is_finalizing():
            raise RuntimeError("the interpreter is shutting down")
        thread.start()
    except RuntimeError as error:  # Python 3.12 refuses new threads at shutdown
        checks_error = f"not built: {error}"
        return
    _checks_build = thread


def _forget_the_build_in_a_forked_child() -> None:
    """A forked child has no build thread (and maybe a held lock): it may start its own."""
    global _checks_build, _checks_lock
    _checks_lock = threading.Lock()
    if _gather is None and not checks_error:  # (a build that failed is not retried)
        _checks_build = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_build_in_a_forked_child)


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


@functools.cache
def plain_tensor_type(cls: type) -> bool:
    """Whether instances of ``cls`` are plain tensors whose memory the C++ loop may walk: a
    ``torch.Tensor`` (or ``nn.Parameter``, or a subclass of either) that overrides neither
    ``__torch_dispatch__`` (DTensor, FakeTensor, nested tensors: their data is elsewhere or
    nowhere) nor ``__torch_function__`` (whose answers to ``data_ptr`` could be anything)."""
    return (
        issubclass(cls, Tensor)
        and cls.__torch_dispatch__ is Tensor.__torch_dispatch__
        and cls.__torch_function__
        in (Tensor.__torch_function__, torch.nn.Parameter.__torch_function__)
    )


def checked_pointers(
    tensors: Sequence[Tensor | None], dtype: torch.dtype, sizes: list[int]
) -> list[int] | None:
    """The data pointers of ``tensors`` when every one is a plain (``plain_tensor_type``),
    contiguous CPU tensor of ``dtype`` with the byte size in ``sizes``, neither functional, nor
    a zero tensor, nor a lazily negated view, and with memory behind it; None otherwise.

    Checked on every call: an address seen before proves nothing (a freed buffer's address is
    reused, ``p.data = p.data.t()`` keeps it). Unlike ``_native_checks.cpp`` this does not
    read storage sizes (a storage shrunk under its tensor, which torch's own ops do not check
    either)."""
    try:
        if (
            not all(map(plain_tensor_type, map(type, tensors)))
            or list(map(_nbytes, tensors)) != sizes
            or not all(map(_is_cpu, tensors))
            or not all(map(operator.is_, map(_dtype, tensors), repeat(dtype)))
            or not all(map(Tensor.is_contiguous, tensors))
            or any(map(Tensor.is_neg, tensors))
            or any(map(Tensor._is_zerotensor, tensors))
            or any(map(torch._is_functional_tensor, tensors))
        ):
            return None
        pointers = list(map(Tensor.data_ptr, tensors))
    except Exception:  # e.g. UninitializedParameter's ValueError: not ours to take
        return None
    if 0 in pointers and any(p == 0 and n > 0 for p, n in zip(pointers, sizes, strict=True)):
        return None  # a storage without memory
    return pointers


class NativeKernel:
    """Called with the Python kernel's arguments: runs the C++ kernel and returns True, or
    returns False, having done nothing, where it does not apply (not CPU, not float32/64, a
    tensor not contiguous or of the wrong size, a state list absent that the step needs, or
    inside a region dynamo is tracing)."""

    def __init__(self, spec: Spec, functions: dict[torch.dtype, Callable]) -> None:
        self.spec = spec
        self.functions = functions
        # the element counts of the last call's params, as the C array and the byte sizes
        # they came from: rebuilt only when the sizes change
        self._numel = array.array("q")
        self._numel_of: tuple[list[int], int] = ([], 0)

    def _gather_in_cpp(
        self, gather: Callable[..., int], lists: Sequence[Sequence[Tensor | None] | None], dtype
    ) -> tuple[array.array, array.array] | None:
        """(element counts, data pointers list after list) from ``_native_checks.cpp``, or
        None where a check fails. Absent optional lists get null pointers."""
        count = len(lists[0])
        double = dtype is torch.float64
        numel = array.array("q", [0]) * count
        pointers = array.array("q", [0]) * (count * len(lists))
        numel_at, base = numel.buffer_info()[0], pointers.buffer_info()[0]
        if gather(lists[0], count, double, None, numel_at, base):
            return None
        for index in range(1, len(lists)):
            if lists[index] is None:
                if index not in self.spec.optional:
                    return None
            elif gather(lists[index], count, double, numel_at, None, base + 8 * count * index):
                return None
        return numel, pointers

    def _gather(
        self, lists: Sequence[Sequence[Tensor | None] | None], dtype: torch.dtype
    ) -> tuple[array.array, array.array] | None:
        """The same as ``_gather_in_cpp``, with the checks in Python."""
        params = lists[0]
        sizes = list(map(_nbytes, params))
        pointers = array.array("q")
        for index, tensors in enumerate(lists):
            if tensors is None:
                if index not in self.spec.optional:
                    return None
                pointers.extend(repeat(0, len(params)))
                continue
            checked = checked_pointers(tensors, dtype, sizes)
            if checked is None:
                return None
            pointers.extend(checked)
        itemsize = params[0].element_size()
        if self._numel_of != (sizes, itemsize):
            self._numel = array.array("q", [size // itemsize for size in sizes])
            self._numel_of = (sizes, itemsize)
        return self._numel, pointers

    def __call__(self, *args: Any) -> bool:
        spec = self.spec
        lists: Sequence[Sequence[Tensor | None] | None] = args[: spec.lists]
        hyper: Tensor = args[spec.lists]
        factors: Tensor | None = args[spec.lists + 1] if spec.has_factors else None
        options = args[spec.lists + 1 + spec.has_factors :]
        params = lists[0]
        dtype = params[0].dtype
        function = self.functions.get(dtype)
        if function is None or not hyper.is_cpu or torch.compiler.is_compiling():
            return False
        gather = gather_function()
        arrays = (
            self._gather(lists, dtype)
            if gather is None
            else self._gather_in_cpp(gather, lists, dtype)
        )
        if arrays is None:
            return False
        numel, pointers = arrays
        if factors is not None:
            factors = factors.to(torch.float64).contiguous()
        status = function(
            len(params),
            numel.buffer_info()[0],
            pointers.buffer_info()[0],
            hyper.data_ptr(),
            None if factors is None else factors.data_ptr(),
            sum(1 << i for i, on in enumerate(options) if on),
            torch.get_num_threads(),
        )
        return status == 0


def increment(steps: list[Tensor]) -> bool:
    """``step += 1`` on float32 CPU step counts in one C call (without bumping the tensors'
    version counters); False, having done nothing, where that does not apply."""
    if not ENABLED or torch.compiler.is_compiling():
        return False
    lib = library()
    if lib is None:
        return False
    count, gather = len(steps), gather_function()
    if gather is not None:  # one element each, float32
        block, ones = array.array("q", [0]) * count, array.array("q", [1]) * count
        if gather(steps, count, False, ones.buffer_info()[0], None, block.buffer_info()[0]):
            return False
    else:
        pointers = checked_pointers(steps, torch.float32, [4] * count)
        if pointers is None:
            return False
        block = array.array("q", pointers)
    lib.add_one_f32(ctypes.c_int64(count), ctypes.c_void_p(block.buffer_info()[0]))
    return True
