"""The fused path's C++ engine (optimizers/_native.cpp): threads, layouts, fallbacks, build.

Equality with torch.optim for every option is in test_optimizers.py (path "fused"); its
problem is small enough to run on one thread, so here the tensors are large enough for the
threads to split tensors mid-way.
"""

from __future__ import annotations

import array
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.testing._internal.two_tensor import TwoTensor

import optimizers
from optimizers import _native

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler"
)

# every option that changes the C++ loop, at once (as test_optimizers' last option sets)
MOST_OPTIONS = {
    "sgd": dict(momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False, maximize=True),
    "nesterov": dict(weight_decay=0.01),
    "momentum": dict(weight_decay=0.01, maximize=True),
    "adagrad": dict(lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
    "rmsprop": dict(momentum=0.5, centered=True, weight_decay=0.01, maximize=True),
    "adam": dict(amsgrad=True, weight_decay=0.01, decoupled_weight_decay=True),
    "rprop": dict(maximize=True),
    "adadelta": dict(weight_decay=0.01),
}
# sizes that are no multiple of 16 and, together, far above the engine's serial threshold
SHAPES = [(300, 77), (13,), (129, 257), (5, 3, 3, 7), (1,)]


def make_params(dtype=torch.float64, memory_format=torch.contiguous_format):
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in SHAPES:
        p = torch.randn(shape, generator=gen, dtype=dtype)
        if p.dim() == 4:
            p = p.contiguous(memory_format=memory_format)
        params.append(torch.nn.Parameter(p))
    return params


def train(name: str, flags: dict, steps: int = 12, threads: int = 2, **kwargs):
    params = make_params(**kwargs)
    opt = optimizers.create(name, params, lr=1e-2, **MOST_OPTIONS[name], **flags)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for k in range(steps):
            for i, p in enumerate(params):
                # gradients that depend on the parameters; the last param skips every 3rd step
                if i == len(params) - 1 and k % 3 == 2:
                    p.grad = None
                else:
                    p.grad = torch.sin(p.detach() * (k + 1)) + 0.1 * p.detach()
            opt.step()
    finally:
        torch.set_num_threads(previous)
    return params, opt


@pytest.fixture(params=["cpp", "python"])
def checks(request, monkeypatch):
    """The kernels' argument checks: in C++ (``_native_checks.cpp``) or in Python."""
    if request.param == "cpp":
        if _native.gather_function(wait=True) is None:
            pytest.skip(f"no C++ argument checks here: {_native.checks_error}")
    else:
        monkeypatch.setattr(_native, "CHECKS_ENABLED", False)
    return request.param


@pytest.mark.parametrize("name", list(MOST_OPTIONS))
def test_threaded_slices_match_the_loop(name, checks):
    fused, _ = train(name, {"fused": True})
    loop, _ = train(name, {"foreach": False})
    for p, q in zip(fused, loop, strict=True):
        scale = q.abs().max().item()
        assert (p - q).abs().max().item() <= 1e-12 * max(scale, 1.0)


@pytest.mark.parametrize("name", ["adam", "sgd", "rprop"])
def test_threads_split_the_work_without_gaps_or_overlaps(name):
    """Bitwise the same on 1, 2 and 3 threads: the slices cover every element exactly once."""
    one, _ = train(name, {"fused": True}, threads=1, dtype=torch.float32)
    for threads in (2, 3):
        many, _ = train(name, {"fused": True}, threads=threads, dtype=torch.float32)
        assert all(torch.equal(p, q) for p, q in zip(one, many, strict=True))


def test_native_engine_runs_without_compiling():
    assert _native.available()
    graphs = counters["stats"]["unique_graphs"]
    for name in MOST_OPTIONS:
        for dtype in (torch.float32, torch.float64):
            train(name, {"fused": True}, steps=3, dtype=dtype)
    assert counters["stats"]["unique_graphs"] == graphs


def test_layouts_the_flat_loop_cannot_walk_take_the_compiled_kernel(checks):
    """A channels_last param, and a transposed gradient: same numbers as the loop, by way of
    the torch.compile kernel (which the graph counter sees)."""
    graphs = counters["stats"]["unique_graphs"]
    fused, _ = train("adam", {"fused": True}, memory_format=torch.channels_last)
    loop, _ = train("adam", {"foreach": False}, memory_format=torch.channels_last)
    assert fused[3].is_contiguous(memory_format=torch.channels_last)
    for p, q in zip(fused, loop, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert counters["stats"]["unique_graphs"] > graphs

    p = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    q = torch.nn.Parameter(p.detach().clone())
    ours, ref = optimizers.Adam([p], fused=True), torch.optim.Adam([q], foreach=False)
    for _ in range(3):
        grad = torch.randn(4, 6, dtype=torch.float64).t()
        assert not grad.is_contiguous()
        p.grad, q.grad = grad, grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["replaced", "data swapped", "step replaced"])
def test_state_of_the_wrong_size_is_refused_not_overrun(how, checks):
    """A state tensor shorter than its param must never reach the C++ loop, also when it is
    swapped in behind a tensor object the kernel has already checked (``.data =``)."""
    p = torch.nn.Parameter(torch.randn(1000))
    opt = optimizers.Adam([p], fused=True)
    for _ in range(2):
        p.grad = torch.randn(1000)
        opt.step()
    if how == "replaced":
        opt.state[p]["exp_avg"] = torch.zeros(10)
    elif how == "data swapped":
        opt.state[p]["exp_avg"].data = torch.zeros(10)
    else:  # a float64 step: 8 bytes, which the float32 increment must not touch
        opt.state[p]["step"] = torch.tensor(2.0, dtype=torch.float64)
    if how == "step replaced":
        opt.step()  # torch's add_ increments it instead
        assert opt.state[p]["step"].item() == 3.0
    else:
        with pytest.raises(RuntimeError):
            opt.step()


def test_param_data_swapped_between_steps_is_followed(checks):
    """``p.data = ...`` moves a param the kernel has seen: the new storage is updated."""
    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        params, opt = train("adam", flags, steps=4)
        with torch.no_grad():
            params[0].data = params[0].detach().clone() * 0.5
        for k in range(4):
            for p in params:
                p.grad = torch.cos(p.detach() * (k + 1))
            opt.step()
        results.append(params)
    for p, q in zip(*results, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_library_is_built_into_the_cache_dir(tmp_path):
    code = "from optimizers import _native; print(_native.library()._name)"
    done = run_python(code, OPTBENCH_CACHE_DIR=str(tmp_path), OPTBENCH_NATIVE="1")
    assert done.returncode == 0, done.stderr
    built = Path(done.stdout.strip())
    assert built.parent == tmp_path and built.suffix == ".so" and built.exists()
    assert [f.name for f in tmp_path.iterdir()] == [built.name]  # no temporary file left
    before = built.stat()
    again = run_python(code, OPTBENCH_CACHE_DIR=str(tmp_path), OPTBENCH_NATIVE="1")
    assert again.stdout == done.stdout  # the same library, not rebuilt:
    after = built.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert after.st_mode & 0o044  # readable by others sharing the cache dir (subject to umask)


def test_environment_switch_turns_the_engine_off():
    code = (
        "import torch, optimizers\n"
        "from optimizers import _native\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "print(_native.available(), _native.kernel('_adam_kernel'),"
        " optimizers.choose_path([p], None, None))"
    )
    done = run_python(code, OPTBENCH_NATIVE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "None", "loop"]


@pytest.mark.parametrize("checks_on", ["1", "0"])
def test_a_missing_state_list_is_an_error_not_a_crash(checks_on):
    """State under other keys (e.g. loaded from another optimizer): the C++ kernel must not
    run on absent tensors, with the C++ or the Python checks. Run in a subprocess, so a
    regression shows as a crash there."""
    code = (
        "import torch, optimizers\n"
        "from optimizers import _native\n"
        f"assert (_native.gather_function(wait=True) is not None) == {checks_on == '1'}\n"
        "p = torch.nn.Parameter(torch.randn(100))\n"
        "opt = optimizers.Momentum([p], lr=0.1, fused=True)\n"
        "opt.state[p] = {'momentum_buffer': torch.zeros(100)}\n"
        "p.grad = torch.randn(100)\n"
        "try:\n"
        "    opt.step()\n"
        "except Exception as error:\n"
        "    print('raised', type(error).__name__)\n"
    )
    done = run_python(code, OPTBENCH_NATIVE_CHECKS=checks_on)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith("raised")


def test_same_address_fewer_bytes_is_refused(checks):
    """``.data =`` a view that starts at the same address but is shorter: the pointer is one
    the kernel has seen, the size is not, and nothing may be written past it."""
    p = torch.nn.Parameter(torch.randn(1000))
    opt = optimizers.Adam([p], fused=True)
    for _ in range(2):
        p.grad = torch.randn(1000)
        opt.step()
    exp_avg = opt.state[p]["exp_avg"]
    address = exp_avg.data_ptr()
    exp_avg.data = exp_avg.data[:500]
    assert exp_avg.data_ptr() == address
    p.grad = torch.randn(1000)
    with pytest.raises(RuntimeError):
        opt.step()


def test_same_address_other_layout_is_followed(checks):
    """``p.data = p.data.t()`` keeps the address but not the layout: the flat loop must not
    walk it; the result is the for-loop's."""
    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        p = torch.nn.Parameter(torch.arange(36.0, dtype=torch.float64).reshape(6, 6) / 7)
        opt = optimizers.Adam([p], lr=0.1, **flags)
        for k in range(6):
            if k == 3:
                p.data = p.data.t()
                assert not p.is_contiguous()
            p.grad = torch.sin(p.detach() * (k + 1)).contiguous()
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "momentum"])
def test_sparse_gradients_on_the_default_path_take_the_loop(name, checks):
    """The default path would be fused; sparse gradients go to the for-loop, as torch's do."""
    results = []
    for flags in ({}, {"foreach": False}):
        torch.manual_seed(0)
        embedding = torch.nn.Embedding(50, 8, sparse=True).double()
        opt = optimizers.create(name, embedding.parameters(), lr=0.1, momentum=0.9, **flags)
        for k in range(5):
            opt.zero_grad()
            embedding(torch.tensor([k, k + 1, 7])).pow(2).sum().backward()
            assert embedding.weight.grad.is_sparse
            opt.step()
        results.append(embedding.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    explicit = optimizers.create(name, embedding.parameters(), lr=0.1, momentum=0.9, fused=True)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        explicit.step()


def test_rprop_clamps_like_torch_when_the_bounds_cross():
    """torch.clamp(x, lo, hi) is min(max(x, lo), hi): hi wins when lo > hi."""
    results = []
    for cls, flags in ((optimizers.Rprop, {"fused": True}), (torch.optim.Rprop, {})):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 40, dtype=torch.float64))
        opt = cls([p], lr=0.7, step_sizes=(1.0, 0.5), **flags)
        for k in range(4):
            p.grad = torch.cos(p.detach() * (k + 2))
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_empty_params_do_not_push_the_step_to_the_compiler(checks):
    """A zero-element param (a null data pointer) among others: still the C++ kernel, with
    amsgrad's optional list present, and the for-loop's numbers."""
    graphs = counters["stats"]["unique_graphs"]
    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        tensors = (torch.linspace(-2, 2, 30), torch.empty(0), torch.ones(4))
        params = [torch.nn.Parameter(t) for t in tensors]
        opt = optimizers.Adam(params, lr=0.1, amsgrad=True, **flags)
        for k in range(4):
            for p in params:
                p.grad = torch.sin(p.detach() + k)
            opt.step()
        results.append([p.detach().clone() for p in params])
    for p, q in zip(*results, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("name", ["sgd", "rprop"])
def test_per_tensor_factors(name, checks):
    """A param whose first gradient comes later, under a changing lr: SGD's undamped first
    buffer update and Rprop's lr_t / lr_0 then differ per tensor (the ``factors`` vector)."""
    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        params = [
            torch.nn.Parameter(torch.linspace(-1, 1, 20, dtype=torch.float64) * (i + 1))
            for i in range(3)
        ]
        extra = {"momentum": 0.9, "dampening": 0.3} if name == "sgd" else {}
        opt = optimizers.create(name, params, lr=0.05, **extra, **flags)
        for k in range(8):
            opt.param_groups[0]["lr"] = 0.05 * (1 + 0.5 * (k % 3))
            for i, p in enumerate(params):
                p.grad = None if (i == 2 and k < 3) else torch.sin(p.detach() * (k + 1))
            opt.step()
        results.append([p.detach().clone() for p in params])
    for p, q in zip(*results, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_a_compiler_that_fails_gives_one_warning_and_the_compiled_engine(tmp_path):
    code = (
        "import warnings, torch, optimizers\n"
        "from optimizers import _native\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(_native.library(), _native.available(), _native.library())\n"
        "print(len(caught), caught[0].message if caught else '')\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "print(optimizers.choose_path([p], None, None))\n"
    )
    done = run_python(code, CXX="/bin/false", OPTBENCH_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "None False None"
    assert lines[1].startswith("1 optimizers: could not build the C++ fused kernels")
    assert lines[2] == "loop"


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # from torch's own Adagrad
@pytest.mark.parametrize("flags", [{}, {"foreach": False}, {"foreach": True}])
@pytest.mark.parametrize("options", [{}, {"lr_decay": 0.1, "maximize": True}])
def test_adagrad_sparse_gradients_match_torch(flags, options):
    """torch.optim.Adagrad's sparse update (only the touched rows), on every non-fused path."""
    results = []
    for cls, extra in ((optimizers.Adagrad, flags), (torch.optim.Adagrad, {})):
        torch.manual_seed(0)
        embedding = torch.nn.Embedding(20, 3, sparse=True).double()
        opt = cls(embedding.parameters(), lr=0.5, initial_accumulator_value=0.1, **options, **extra)
        for k in range(6):
            opt.zero_grad()
            embedding(torch.tensor([k, (3 * k) % 20, 7, 7])).pow(2).sum().backward()
            opt.step()
        results.append(embedding.weight.detach().clone())
    assert not torch.equal(results[0], torch.nn.Embedding(20, 3).weight)  # it moved
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)
    embedding = torch.nn.Embedding(20, 3, sparse=True)
    refused = (({"fused": True}, "sparse gradients"), ({"weight_decay": 0.1}, "weight_decay"))
    for bad, match in refused:
        opt = optimizers.Adagrad(embedding.parameters(), **bad)
        embedding(torch.tensor([1])).sum().backward()
        with pytest.raises(RuntimeError, match=match):
            opt.step()


def cpp_gather(tensors, numel, double=False):
    """The data pointers from ``_native_checks.cpp`` (or None where a check fails)."""
    gather = _native.gather_function(wait=True)
    if gather is None:
        pytest.skip(f"no C++ argument checks here: {_native.checks_error}")
    expected = array.array("q", numel)
    pointers = array.array("q", [0]) * len(numel)
    status = gather(
        tensors, len(numel), double, expected.buffer_info()[0], None, pointers.buffer_info()[0]
    )
    return None if status else list(pointers)


def tensor_zoo():
    """40-element float32 tensors the kernels may take, and others they must not."""
    offset = torch.randn(50)[10:]
    resized = torch.randn(40)
    resized.untyped_storage().resize_(0)  # as FSDP frees a param's memory
    return {
        "contiguous": (torch.randn(8, 5), True),
        "parameter": (torch.nn.Parameter(torch.randn(40)), True),
        "offset view": (offset, True),
        "float64": (torch.randn(40, dtype=torch.float64), False),
        "int32": (torch.zeros(40, dtype=torch.int32), False),
        "fewer elements": (torch.randn(39), False),
        "transposed": (torch.randn(5, 8).t(), False),
        "channels_last": (
            torch.randn(2, 5, 2, 2).contiguous(memory_format=torch.channels_last),
            False,
        ),
        "expanded": (torch.randn(1, 5).expand(8, 5), False),
        "sparse": (torch.randn(8, 5).to_sparse(), False),
        "meta": (torch.empty(40, device="meta"), False),
        "None": (None, False),
        "storage freed": (resized, False),
        # no memory behind the storage, or memory the loop would misread
        "negated view": (torch.randn(40)._neg_view(), False),
        "zero tensor": (torch._efficientzerotensor(40), False),
        "functional": (torch._to_functional_tensor(torch.randn(40)), False),
        "fake": (FakeTensorMode().from_tensor(torch.randn(40)), False),
        "dispatch subclass": (TwoTensor(torch.randn(40), torch.randn(40)), False),
        "uninitialized": (torch.nn.UninitializedParameter(), False),
    }


@pytest.mark.parametrize("name", list(tensor_zoo()))
def test_cpp_checks_take_what_the_python_checks_take(name):
    tensor, ok = tensor_zoo()[name]
    got = cpp_gather([tensor], [40])
    assert (got is not None) == ok
    if ok:
        assert got == [tensor.data_ptr()]
    if name != "storage freed":  # the Python checks read no storage size (a documented gap)
        assert (_native.checked_pointers([tensor], torch.float32, [160]) is not None) == ok


def test_cpp_checks_refuse_a_list_of_another_length_and_take_empty_tensors():
    a, b = torch.randn(40), torch.randn(3)
    assert cpp_gather([a, b], [40, 3]) == [a.data_ptr(), b.data_ptr()]
    assert cpp_gather([a], [40, 3]) is None
    assert cpp_gather((a, b), [40, 3]) is not None  # a tuple is taken as well
    assert cpp_gather([torch.empty(0)], [0]) is not None
    d = torch.randn(4, dtype=torch.float64)
    assert cpp_gather([d], [4], double=True) == [d.data_ptr()]


def test_cpp_checks_are_built_where_python_headers_exist():
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python.h")
    assert _native.gather_function(wait=True) is not None, _native.checks_error


def test_without_the_cpp_checks_the_python_ones_run(tmp_path):
    """No Python.h (or OPTBENCH_NATIVE_CHECKS=0): no C++ checks, a reason, and the C++ kernels
    still run, with the Python checks."""
    code = (
        "import sysconfig, torch, optimizers\n"
        "from optimizers import _native\n"
        "real = sysconfig.get_paths\n"
        "sysconfig.get_paths = lambda *a, **k: {**real(*a, **k), 'include': '/nonexistent'}\n"
        "print(_native.gather_function(wait=True), _native.checks_error)\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "p.grad = torch.ones(3)\n"
        "optimizers.Adam([p], lr=0.1, fused=True).step()\n"
        "print(p.tolist(), _native.library() is not None)\n"
    )
    done = run_python(code, OPTBENCH_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("None FileNotFoundError: no Python.h in /nonexistent")
    q = torch.nn.Parameter(torch.ones(3))
    q.grad = torch.ones(3)
    torch.optim.Adam([q], lr=0.1).step()
    assert second == f"{q.tolist()} True"  # torch's first Adam step, to the bit
    assert not [f for f in tmp_path.iterdir() if "checks" in f.name]  # nothing half-built
    off = run_python(code, OPTBENCH_CACHE_DIR=str(tmp_path), OPTBENCH_NATIVE_CHECKS="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines()[0] == "None "  # switched off: nothing built, no reason


@pytest.mark.parametrize("checks_on", ["1", "0"])
def test_tensors_without_memory_take_another_path_not_a_crash(checks_on):
    """A zero-tensor gradient, a negated view, params made under FakeTensorMode and a
    __torch_dispatch__ subclass: the fused and default paths give the loop's result (or the
    loop's own error), never a write through a null pointer. In a subprocess: a crash is a
    failure there."""
    code = (
        "import torch, optimizers\n"
        "from optimizers import _native\n"
        "from torch._subclasses.fake_tensor import FakeTensorMode\n"
        "from torch.testing._internal.two_tensor import TwoTensor\n"
        "_native.gather_function(wait=True)\n"
        "def run(flags, grad):\n"
        "    p = torch.nn.Parameter(torch.linspace(-1, 1, 40, dtype=torch.float64))\n"
        "    opt = optimizers.SGD([p], lr=0.1, momentum=0.9, **flags)\n"
        "    for _ in range(2):\n"
        "        p.grad = grad()\n"
        "        opt.step()\n"
        "    return p.detach()\n"
        "g = torch.cos(torch.linspace(0, 3, 40, dtype=torch.float64))\n"
        "for grad in (lambda: torch._efficientzerotensor(40, dtype=torch.float64),\n"
        "             lambda: g.clone()._neg_view()):\n"
        "    ref = run({'foreach': False}, lambda: grad().clone())\n"
        "    for flags in ({}, {'fused': True}):\n"
        "        torch.testing.assert_close(run(flags, grad), ref, rtol=1e-12, atol=1e-12)\n"
        "with FakeTensorMode():\n"
        "    p = torch.nn.Parameter(torch.randn(40))\n"
        "    print(optimizers.choose_path([p], None, None))\n"
        "    opt = optimizers.Adam([p], lr=0.1)\n"
        "    p.grad = torch.randn(40)\n"
        "    opt.step()\n"
        "t = TwoTensor(torch.randn(40), torch.randn(40))\n"
        "print(optimizers.choose_path([t], None, None))\n"
        "print('done')\n"
    )
    done = run_python(code, OPTBENCH_NATIVE_CHECKS=checks_on)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout.split() == ["loop", "loop", "done"]
