"""optimizers/ against torch.optim, side by side on a small nonlinear problem.

The problem: a tanh MLP regression whose gradients depend on the parameters, two param
groups with different hyperparameters, and a bias that gets no gradient on every third step
(so per-parameter step counts differ). Hundreds of steps; parameters and state compared.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import inspect
import io
import math
from unittest import mock

import pytest
import torch
from torch._dynamo.utils import counters

from optimizers import SGD, Adadelta, Adagrad, Adam, Momentum, RMSprop, Rprop, _native

STEPS = 200
TOL = {torch.float64: 1e-12, torch.float32: 2e-6}


# ---------------------------------------------------------------- problem and harness
def make_params(dtype: torch.dtype, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    shapes = [(6, 4), (6,), (3, 6), (3,)]
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).to(device))
        for s in shapes
    ]


_gen = torch.Generator().manual_seed(0)
X = torch.randn(16, 4, generator=_gen, dtype=torch.float64)
Y = torch.randn(16, 3, generator=_gen, dtype=torch.float64)


def loss_fn(params: list[torch.Tensor], step: int, sign: float = 1.0) -> torch.Tensor:
    w1, b1, w2, b2 = params
    x, y = X.to(w1), Y.to(w1)
    out = torch.tanh(x @ w1.T + b1) @ w2.T
    if step % 3:  # b2 gets no gradient on every third step
        out = out + b2
    return sign * ((out - y) ** 2).mean()


def groups(params: list[torch.Tensor], group_b: dict) -> list[dict]:
    return [{"params": params[:2]}, {"params": params[2:], **group_b}]


def run(opt: torch.optim.Optimizer, params: list, steps: int, sign: float, lrs=None) -> None:
    for k in range(steps):
        if lrs is not None:
            for g, base in zip(opt.param_groups, lrs[0], strict=True):
                g["lr"] = base * lrs[1](k)
        opt.zero_grad()
        loss_fn(params, k, sign).backward()
        opt.step()


# name -> (our class, reference class, option dicts (the last has most options on), group B)
CASES = {
    "sgd": (
        SGD,
        torch.optim.SGD,
        [
            {},
            {"momentum": 0.9},
            {"momentum": 0.9, "nesterov": True},
            {"momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01, "maximize": True},
        ],
        {"lr": 0.02, "weight_decay": 0.05},
    ),
    "momentum": (
        Momentum,
        torch.optim.SGD,
        [
            {"momentum": 0.9},
            {"momentum": 0.9, "weight_decay": 0.01},
            {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01, "maximize": True},
        ],
        {"lr": 0.02, "momentum": 0.5},
    ),
    "adagrad": (
        Adagrad,
        torch.optim.Adagrad,
        [
            {},
            {"lr_decay": 0.01},
            {
                "lr_decay": 0.01,
                "initial_accumulator_value": 0.1,
                "weight_decay": 0.01,
                "eps": 1e-8,
                "maximize": True,
            },
        ],
        {"lr": 0.05, "weight_decay": 0.02},
    ),
    "rmsprop": (
        RMSprop,
        torch.optim.RMSprop,
        [
            {},
            {"centered": True},
            {"momentum": 0.5},
            {"momentum": 0.5, "centered": True, "weight_decay": 0.01, "maximize": True},
        ],
        {"lr": 0.003, "alpha": 0.9},
    ),
    "adam": (
        Adam,
        torch.optim.Adam,
        [
            {},
            {"amsgrad": True},
            {"weight_decay": 0.01},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
            {"amsgrad": True, "weight_decay": 0.01, "maximize": True, "betas": (0.8, 0.99)},
        ],
        {"lr": 0.003, "betas": (0.5, 0.9)},
    ),
    "rprop": (
        Rprop,
        torch.optim.Rprop,
        [
            {},
            {"etas": (0.4, 1.3), "step_sizes": (1e-4, 0.05), "maximize": True},
        ],
        {"lr": 0.002, "etas": (0.3, 1.1)},
    ),
    "adadelta": (
        Adadelta,
        torch.optim.Adadelta,
        [
            {},
            {"rho": 0.95, "weight_decay": 0.01, "eps": 1e-5, "maximize": True},
        ],
        {"lr": 0.5, "rho": 0.8},
    ),
}
LR = 0.01
# "fused" on CPU runs the C++ kernels (float32/float64); "compiled" is the fused path with them
# switched off, i.e. the torch.compile kernel that CUDA and half precision use.
PATHS = {
    "loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
    "compiled": {"fused": True},
}


def native_off():
    """Fused kernels created inside take the torch.compile engine on CPU too."""
    return mock.patch.object(_native, "ENABLED", False)


def engine_of_path(check):
    """Runs ``check`` with the C++ engine off when its ``path`` argument is "compiled"; for
    "fused" on CPU in float32/float64, asserts that the C++ engine did all the work (nothing
    was handed to torch.compile, which would compile a graph)."""
    signature = inspect.signature(check)

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        path, device = arguments.arguments["path"], torch.device(arguments.arguments["device"])
        dtype = arguments.arguments.get("dtype", torch.float32)
        if path == "compiled":
            if device.type != "cpu":
                pytest.skip("off CPU the fused path is the compiled one")
            with native_off():
                return check(*args, **kwargs)
        graphs = counters["stats"]["unique_graphs"]
        result = check(*args, **kwargs)
        if path == "fused" and device.type == "cpu" and dtype in (torch.float32, torch.float64):
            assert counters["stats"]["unique_graphs"] == graphs, "the C++ engine declined"
        return result

    return wrapper


def reference_kwargs(name: str, opts: dict) -> dict:
    """torch.optim arguments equivalent to ours at a constant lr (Momentum -> SGD)."""
    opts = dict(opts)
    if name == "momentum":
        opts.setdefault("momentum", 0.9)
    return opts


def compare_state(name: str, ours: torch.optim.Optimizer, ref: torch.optim.Optimizer, tol: float):
    ours_params = [p for g in ours.param_groups for p in g["params"]]
    ref_params = [p for g in ref.param_groups for p in g["params"]]
    ref_lrs = {id(p): g["lr"] for g in ref.param_groups for p in g["params"]}
    for p, q in zip(ours_params, ref_params, strict=True):
        rs, os_ = ref.state[q], ours.state[p]
        for key, value in rs.items():
            if name == "momentum":  # velocity = -lr * torch's buffer at a constant lr
                got, want = os_["velocity"], -ref_lrs[id(q)] * value
            else:
                got, want = os_[key], value
            if key == "step":
                assert got.item() == want.item()
                continue
            assert got.shape == want.shape and got.dtype == want.dtype, key
            assert_rel_close(got.cpu(), want.cpu(), tol, what=f"state[{key!r}]")


def assert_rel_close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str = "") -> None:
    scale = want.abs().max().clamp_min(1e-30)
    err = ((got.double() - want.double()).abs().max() / scale).item()
    assert err <= tol, f"{what}: max relative difference {err:.3g} > {tol:.3g}"


@engine_of_path
def check_against_torch(name, opt_index, path, dtype, device, steps=STEPS, lrs=None):
    ours_cls, ref_cls, options, group_b = CASES[name]
    opts = options[opt_index]
    sign = -1.0 if opts.get("maximize") else 1.0
    ours_params, ref_params = make_params(dtype, device), make_params(dtype, device)
    ours = ours_cls(groups(ours_params, group_b), lr=LR, **opts, **PATHS[path])
    ref = ref_cls(groups(ref_params, group_b), lr=LR, **reference_kwargs(name, opts), foreach=False)
    run(ours, ours_params, steps, sign, lrs)
    run(ref, ref_params, steps, sign, lrs)
    for p, q in zip(ours_params, ref_params, strict=True):
        assert_rel_close(p.detach().cpu(), q.detach().cpu(), TOL[dtype], what="param")
    start = make_params(dtype, device)
    assert all(not torch.equal(p, p0) for p, p0 in zip(ours_params, start, strict=True)), (
        "nothing moved"
    )
    # State is held to a looser bound than params: in float32 an entry like RMSprop's
    # g / sqrt(v - gbar^2) amplifies the rounding of the cancellation (measured <= 3.3e-5).
    compare_state(name, ours, ref, 1e-4 if dtype == torch.float32 else TOL[dtype] * 10)


MATRIX = [(name, i) for name, case in CASES.items() for i in range(len(case[2]))]
MOST_OPTIONS = [(name, len(case[2]) - 1) for name, case in CASES.items()]


# ---------------------------------------------------------------- equality with torch
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("path", ["loop", "foreach"])
@pytest.mark.parametrize(("name", "opt_index"), MATRIX)
def test_matches_torch(name, opt_index, path, dtype, device):
    check_against_torch(name, opt_index, path, dtype, device)


@pytest.mark.parametrize("path", ["fused", "compiled"])
@pytest.mark.parametrize(("name", "opt_index"), MOST_OPTIONS)
def test_fused_matches_torch_most_options(name, opt_index, path, device):
    check_against_torch(name, opt_index, path, torch.float64, device)


@pytest.mark.parametrize("path", ["fused", pytest.param("compiled", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "opt_index"), MATRIX)
def test_fused_matches_torch_all_options(name, opt_index, dtype, path, device):
    check_against_torch(name, opt_index, path, dtype, device)


def check_native_equals_compiled(name, opt_index, steps=25):
    """float32, CPU: the C++ kernels round exactly like the traced Python kernels."""
    ours_cls, _, options, group_b = CASES[name]
    opts = options[opt_index]
    sign = -1.0 if opts.get("maximize") else 1.0
    results = []
    for engine in ("native", "compiled"):
        params = make_params(torch.float32)
        opt = ours_cls(groups(params, group_b), lr=LR, **opts, fused=True)
        with native_off() if engine == "compiled" else contextlib.nullcontext():
            run(opt, params, steps, sign)
        results.append(params)
    for p, q in zip(*results, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("name", "opt_index"), MOST_OPTIONS)
def test_native_equals_compiled_bitwise(name, opt_index):
    check_native_equals_compiled(name, opt_index)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "opt_index"), MATRIX)
def test_native_equals_compiled_bitwise_all_options(name, opt_index):
    check_native_equals_compiled(name, opt_index)


# ---------------------------------------------------------------- lr changing every step
def wobble(k: int) -> float:
    """An lr multiplier that changes on every step (and is never constant for long)."""
    return 1.0 + 0.5 * math.sin(0.7 * k)


class ClassicalMomentumReference(torch.optim.Optimizer):
    """v <- mu v - lr g; theta <- theta + v (nesterov: theta + mu v - lr g), from the issue."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, nesterov=False, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, {**defaults, "maximize": maximize})

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = -p.grad if g["maximize"] else p.grad
                grad = grad + g["weight_decay"] * p
                v = self.state[p].setdefault("velocity", torch.zeros_like(p))
                v.copy_(g["momentum"] * v - g["lr"] * grad)
                p += g["momentum"] * v - g["lr"] * grad if g["nesterov"] else v


class RpropScheduleReference(torch.optim.Optimizer):
    """iRprop- with theta <- theta - sign(g) * step_size * lr_t / lr_0, from the issue."""

    def __init__(self, params, lr, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False):
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            eta_minus, eta_plus = g["etas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(prev=torch.zeros_like(p), size=torch.full_like(p, g["lr"]))
                    st["lr0"] = g["lr"]
                grad = -p.grad if g["maximize"] else p.grad.clone()
                s = torch.sign(grad * st["prev"])
                factor = torch.ones_like(s)
                factor[s > 0], factor[s < 0] = eta_plus, eta_minus
                st["size"] = (st["size"] * factor).clamp(*g["step_sizes"])
                grad = torch.where(s < 0, 0.0, grad)
                p -= torch.sign(grad) * st["size"] * (g["lr"] / st["lr0"])
                st["prev"] = grad


FORMULA_REFERENCES = {"momentum": ClassicalMomentumReference, "rprop": RpropScheduleReference}


@engine_of_path
def check_changing_lr(name, opt_index, path, dtype, device, steps=STEPS):
    ours_cls, ref_cls, options, group_b = CASES[name]
    opts = options[opt_index]
    ref_cls = FORMULA_REFERENCES.get(name, ref_cls)
    ref_opts = {} if name in FORMULA_REFERENCES else {"foreach": False}
    sign = -1.0 if opts.get("maximize") else 1.0
    ours_params, ref_params = make_params(dtype, device), make_params(dtype, device)
    ours = ours_cls(groups(ours_params, group_b), lr=LR, **opts, **PATHS[path])
    ref = ref_cls(groups(ref_params, group_b), lr=LR, **opts, **ref_opts)
    bases = [g["lr"] for g in ours.param_groups]
    run(ours, ours_params, steps, sign, (bases, wobble))
    run(ref, ref_params, steps, sign, (bases, wobble))
    for p, q in zip(ours_params, ref_params, strict=True):
        assert_rel_close(p.detach().cpu(), q.detach().cpu(), TOL[dtype], what="param")


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", list(CASES))
def test_changing_lr(name, path, device):
    check_changing_lr(name, len(CASES[name][2]) - 1, path, torch.float64, device)


def test_changing_lr_differs_from_torch_for_momentum_and_rprop():
    """The two deliberate differences are real: torch's trajectories are not ours."""
    for name in ("momentum", "rprop"):
        ours_cls, ref_cls, options, group_b = CASES[name]
        ours_params, ref_params = make_params(torch.float64), make_params(torch.float64)
        ours = ours_cls(groups(ours_params, group_b), lr=LR, **options[0])
        ref = ref_cls(groups(ref_params, group_b), lr=LR, **reference_kwargs(name, options[0]))
        bases = [g["lr"] for g in ours.param_groups]
        run(ours, ours_params, 50, 1.0, (bases, wobble))
        run(ref, ref_params, 50, 1.0, (bases, wobble))
        diff = max((p - q).abs().max().item() for p, q in zip(ours_params, ref_params, strict=True))
        assert diff > 1e-4, name


@pytest.mark.parametrize("name", list(CASES))
def test_fused_changing_lr_without_recompiling(name, device):
    """The compiled fused kernel, most options on, lr changing every step: equal to the
    reference, and after the first steps (which compile one graph per param group and grad
    pattern) no recompile."""
    with native_off():
        check_no_recompile(name, device)
    check_changing_lr(name, len(CASES[name][2]) - 1, "compiled", torch.float64, device, steps=60)


def check_no_recompile(name, device):
    ours_cls, _, options, group_b = CASES[name]
    opts = options[-1]
    params = make_params(torch.float64, device)
    opt = ours_cls(groups(params, group_b), lr=LR, **opts, fused=True)
    bases = [g["lr"] for g in opt.param_groups]
    sign = -1.0 if opts.get("maximize") else 1.0
    run(opt, params, 3, sign, (bases, wobble))  # steps 0-2 see every grad pattern
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for k in range(3, 40):
            for g, base in zip(opt.param_groups, bases, strict=True):
                g["lr"] = base * wobble(k)
            opt.zero_grad()
            loss_fn(params, k, sign).backward()
            opt.step()
    assert counters["stats"]["unique_graphs"] == graphs
    assert graphs > 0


# ---------------------------------------------------------------- fused path's cached lists
@pytest.mark.parametrize("engine", ["native", "compiled"])
def test_fused_mixed_dtypes_in_one_group_match_the_loop(engine):
    """One param group with float64 and float32 params: one cached batch per dtype."""

    def mixed():
        params = make_params(torch.float64)
        params[1].data = params[1].data.float()
        params[3].data = params[3].data.float()
        return params

    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        params = mixed()
        opt = Adam(params, lr=LR, **flags)
        with native_off() if engine == "compiled" else contextlib.nullcontext():
            for k in range(20):
                opt.zero_grad()
                loss_fn([p.double() for p in params], k).backward()
                opt.step()
        results.append(params)
    for p, q in zip(*results, strict=True):  # float32 rounding reaches the float64 params too
        assert p.dtype == q.dtype
        assert_rel_close(p.detach(), q.detach(), TOL[torch.float32], what="param")


def edit_state(opt: torch.optim.Optimizer, params: list[torch.Tensor], k: int) -> None:
    """State changes a user may make between steps, which the fused path must not miss (on
    steps where the same params have gradients as on the step before)."""
    if k == 5:  # replace a state tensor
        opt.state[params[0]]["exp_avg"] = torch.full_like(params[0], 0.1)
    if k == 8:  # reset one param's state
        del opt.state[params[2]]
    if k == 11:  # change a step count in place (the params' counts now differ)
        opt.state[params[0]]["step"].fill_(3.0)
    if k == 10:  # make params[3]'s state the last entry (no change in meaning)
        opt.state[params[3]] = opt.state.pop(params[3])
    if k == 12:  # move it to another key: the values stay in the same order
        opt.state[torch.zeros(1)] = opt.state.pop(params[3])
    if k == 14:  # replace a param's whole state dict
        opt.state[params[1]] = {key: v.clone() for key, v in opt.state[params[1]].items()}
        opt.state[params[1]]["exp_avg_sq"].mul_(2.0)
    if k == 16:  # reset every param's state
        opt.state = collections.defaultdict(dict)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("engine", ["native", "compiled"])
def test_fused_sees_state_changed_between_steps(engine, groups):
    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        params = make_params(torch.float64)
        # 3 groups: the edits hit the first two, the third's plan must still see them
        split = [params] if groups == 1 else [params[:1], params[1:3], params[3:]]
        opt = Adam([{"params": ps, "lr": LR * (i + 1)} for i, ps in enumerate(split)], **flags)
        with native_off() if engine == "compiled" else contextlib.nullcontext():
            for k in range(18):
                edit_state(opt, params, k)
                opt.zero_grad()
                loss_fn(params, k).backward()
                opt.step()
        results.append(params)
    for p, q in zip(*results, strict=True):
        assert_rel_close(p.detach(), q.detach(), TOL[torch.float64], what="param")


# ---------------------------------------------------------------- bitwise resume
@engine_of_path
def check_resume(name: str, path: str, device, steps: int = 30):
    ours_cls, _, options, group_b = CASES[name]
    opts = options[-1]
    sign = -1.0 if opts.get("maximize") else 1.0
    full_params = make_params(torch.float32, device)
    full = ours_cls(groups(full_params, group_b), lr=LR, **opts, **PATHS[path])
    run(full, full_params, 2 * steps, sign)

    first_params = make_params(torch.float32, device)
    first = ours_cls(groups(first_params, group_b), lr=LR, **opts, **PATHS[path])
    run(first, first_params, steps, sign)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first_params], "opt": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    resumed_params = make_params(torch.float32, device)
    with torch.no_grad():
        for p, s in zip(resumed_params, saved["params"], strict=True):
            p.copy_(s)
    resumed = ours_cls(groups(resumed_params, group_b), lr=LR, **opts, **PATHS[path])
    resumed.load_state_dict(saved["opt"])
    for k in range(steps, 2 * steps):
        resumed.zero_grad()
        loss_fn(resumed_params, k, sign).backward()
        resumed.step()
    for p, q in zip(resumed_params, full_params, strict=True):
        assert torch.equal(p, q)
    assert str(resumed.state_dict()["state"]) == str(full.state_dict()["state"])


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_bitwise(name, path, device):
    check_resume(name, path, device)


@pytest.mark.parametrize("name", ["adam", "rprop"])
def test_resume_is_bitwise_compiled(name, device):
    check_resume(name, "compiled", device, steps=10)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_bitwise_compiled_all(name, device):
    check_resume(name, "compiled", device, steps=10)


# ---------------------------------------------------------------- half precision
@engine_of_path
def check_half(name: str, path: str, dtype: torch.dtype, device) -> None:
    """Runs without error in bf16/fp16, state in the parameter dtype, and the loss tracks the
    float32 run loosely: the low-precision run gets at least 65% of float32's improvement."""
    ours_cls, _, options, group_b = CASES[name]
    opts = dict(options[0])
    if name == "adam" and dtype == torch.float16:
        opts["eps"] = 1e-4  # 1e-8 underflows to 0 in fp16: 0/0 = NaN, in torch.optim.Adam too
    final = {}
    for dt in (torch.float32, dtype):
        params = make_params(dt, device)
        opt = ours_cls(groups(params, group_b), lr=LR, **opts, **PATHS[path])
        run(opt, params, 100, 1.0)
        assert all(p.dtype == dt and torch.isfinite(p).all() for p in params)
        for state in opt.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    assert value.dtype == dt, key
        final[dt] = loss_fn([p.double() for p in params], 1).item()
    initial = loss_fn([p.double() for p in make_params(torch.float32, device)], 1).item()
    gain = initial - final[torch.float32]
    assert gain > 0
    assert abs(final[dtype] - final[torch.float32]) <= 0.35 * gain, (final, initial)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_tracks_float32(name, dtype, device):
    check_half(name, "loop", dtype, device)


@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bf16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_tracks_float32_foreach(name, dtype, device):
    check_half(name, "foreach", dtype, device)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_tracks_float32_fused(name, dtype, device):
    check_half(name, "fused", dtype, device)


# ---------------------------------------------------------------- state layout
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam", "rprop", "adadelta"])
def test_state_layout_matches_torch(name, fused, device):
    """Same state keys, dtypes, devices and shapes as torch after one step (torch's fused
    layout where torch has a fused kernel: float32 `step` on the parameter's device)."""
    ours_cls, ref_cls, options, _ = CASES[name]
    torch_fused = fused and name in ("sgd", "adagrad", "adam")
    p, q = make_params(torch.float64, device)[:1], make_params(torch.float64, device)[:1]
    opts = options[-1]
    ours = ours_cls(p, lr=LR, **opts, **({"fused": True} if fused else {"foreach": False}))
    ref = ref_cls(q, lr=LR, **opts, **({"fused": True} if torch_fused else {"foreach": False}))
    for opt, params in ((ours, p), (ref, q)):
        loss_fn([*params, *make_params(torch.float64, device)[1:]], 1).backward()
        opt.step()
    mine, theirs = ours.state[p[0]], ref.state[q[0]]
    assert set(theirs) <= set(mine)
    assert set(mine) - set(theirs) <= {"lr0"}
    for key, value in theirs.items():
        got = mine[key]
        if key == "step" and fused:  # our fused path keeps torch's fused layout
            assert (got.dtype, got.device, got.shape) == (torch.float32, p[0].device, ())
        else:
            assert (got.dtype, got.device, got.shape) == (value.dtype, value.device, value.shape)


def test_sgd_without_momentum_keeps_no_state_like_torch():
    for flags in ({"fused": True}, {"foreach": True}, {"foreach": False}):
        params = make_params(torch.float64)
        opt = SGD(params, lr=LR, **flags)
        loss_fn(params, 1).backward()
        opt.step()
        assert opt.state_dict()["state"] == {}, flags


def test_adagrad_state_is_created_in_constructor():
    ours = Adagrad(make_params(torch.float64), initial_accumulator_value=0.5)
    ref = torch.optim.Adagrad(make_params(torch.float64), initial_accumulator_value=0.5)
    assert str(ours.state_dict()["state"]) == str(ref.state_dict()["state"])


def test_grad_none_params_are_skipped():
    params = make_params(torch.float64)
    opt = Adam(params, lr=0.1)
    loss_fn(params, 0).backward()  # step 0: b2 gets no gradient
    before = params[3].detach().clone()
    opt.step()
    assert params[3] not in opt.state and torch.equal(params[3], before)
    assert opt.state[params[0]]["step"].item() == 1.0


def test_works_with_torch_lr_scheduler():
    params = make_params(torch.float64)
    opt = Momentum(params, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for k in range(5):
        opt.zero_grad()
        loss_fn(params, k).backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_rprop_lr0_is_the_schedulers_initial_lr():
    """With a warm-up starting at lr 0, step sizes start at initial_lr (torch would start at 0)."""
    params = make_params(torch.float64)
    opt = Rprop(params, lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: k / 5)
    loss_fn(params, 1).backward()
    before = params[0].detach().clone()
    opt.step()
    sched.step()
    assert opt.state[params[0]]["lr0"] == 0.01
    assert torch.equal(params[0], before)  # lr_t / lr_0 = 0 on the first step
    assert torch.all(opt.state[params[0]]["step_size"] == 0.01)


def test_deepcopy_and_zero_grad():
    params = make_params(torch.float64)
    opt = Adam(params, lr=0.1)
    loss_fn(params, 1).backward()
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_closure_returns_loss():
    params = make_params(torch.float64)
    opt = SGD(params, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = loss_fn(params, 1)
        loss.backward()
        return loss

    assert isinstance(opt.step(closure), torch.Tensor)
