"""optimizers/ against torch.optim, side by side on a small nonlinear problem.

The problem: a tanh MLP regression whose gradients depend on the parameters, two param
groups with different hyperparameters, and a bias that gets no gradient on every third step
(so per-parameter step counts differ). The default path and ``foreach=True`` must equal
torch.optim's bit for bit (params and state); ``fused=True`` (torch.compile) to rounding.

The fused tests of the default suite use one param group with every gradient present (one
compiled graph per optimizer, shared through the process-wide cache); the full matrix of
options, dtypes and param groups on the fused path is in the slow suite.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch._dynamo.utils import counters

from optimizers import SGD, Adadelta, Adagrad, Adam, Momentum, RMSprop, Rprop

STEPS = 100
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


def loss_fn(params: list[torch.Tensor], step: int, sign: float = 1.0, skip: bool = True):
    w1, b1, w2, b2 = params
    x, y = X.to(w1), Y.to(w1)
    out = torch.tanh(x @ w1.T + b1) @ w2.T
    if step % 3 or not skip:  # b2 gets no gradient on every third step
        out = out + b2
    return sign * ((out - y) ** 2).mean()


def groups(params: list[torch.Tensor], group_b: dict | None) -> list:
    if group_b is None:
        return [{"params": params}]
    return [{"params": params[:2]}, {"params": params[2:], **group_b}]


def run(opt, params, steps, sign, lrs=None, skip=True, start=0) -> None:
    for k in range(start, start + steps):
        if lrs is not None:
            for g, base in zip(opt.param_groups, lrs[0], strict=True):
                g["lr"] = base * lrs[1](k)
        opt.zero_grad()
        loss_fn(params, k, sign, skip).backward()
        opt.step()


def wobble(k: int) -> float:
    """An lr multiplier that changes on every step (and is never constant for long)."""
    return 1.0 + 0.5 * math.sin(0.7 * k)


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
PATHS = {"default": {}, "loop": {"foreach": False}, "foreach": {"foreach": True}}
MATRIX = [(name, i) for name, case in CASES.items() for i in range(len(case[2]))]
MOST_OPTIONS = [(name, len(case[2]) - 1) for name, case in CASES.items()]
#: where torch's trajectory is not ours under a schedule (or at all, for Momentum's rounding)
OWN_SEMANTICS = {"momentum", "rprop"}


def reference_kwargs(name: str, opts: dict) -> dict:
    """torch.optim arguments equivalent to ours at a constant lr (Momentum -> SGD)."""
    opts = dict(opts)
    if name == "momentum":
        opts.setdefault("momentum", 0.9)
    return opts


def assert_rel_close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str = "") -> None:
    scale = want.abs().max().clamp_min(1e-30)
    err = ((got.double() - want.double()).abs().max() / scale).item()
    assert err <= tol, f"{what}: max relative difference {err:.3g} > {tol:.3g}"


def compare(name, ours, ref, ours_params, ref_params, tol: float | None) -> None:
    """Params and every state entry of torch's: equal (``tol=None``) or to ``tol``. Momentum's
    velocity is compared with ``-lr * buffer`` (at a constant lr)."""
    for p, q in zip(ours_params, ref_params, strict=True):
        if tol is None:
            assert torch.equal(p, q), "param"
        else:
            assert_rel_close(p.detach().cpu(), q.detach().cpu(), tol, what="param")
    lrs = {id(q): g["lr"] for g in ref.param_groups for q in g["params"]}
    for p, q in zip(ours_params, ref_params, strict=True):
        mine, theirs = ours.state[p], ref.state[q]
        assert set(theirs) <= set(mine) | ({"momentum_buffer"} if name == "momentum" else set())
        for key, want in theirs.items():
            if name == "momentum":
                got, want = mine["velocity"], -lrs[id(q)] * want
            else:
                got = mine[key]
            if key == "step":
                assert got.item() == want.item()
            elif tol is None:
                assert torch.equal(got, want), key
            else:
                # state is held looser: in float32 an entry like RMSprop's g / sqrt(v - gbar^2)
                # amplifies the rounding of the cancellation
                loose = 1e-4 if want.dtype == torch.float32 else tol * 10
                assert_rel_close(got.cpu(), want.cpu(), loose, what=f"state[{key!r}]")


def check_against_torch(name, opt_index, path, dtype, device, steps=STEPS, lrs=None):
    ours_cls, ref_cls, options, group_b = CASES[name]
    opts = options[opt_index]
    sign = -1.0 if opts.get("maximize") else 1.0
    ours_params, ref_params = make_params(dtype, device), make_params(dtype, device)
    ours = ours_cls(groups(ours_params, group_b), lr=LR, **opts, **PATHS[path])
    ref_flags = PATHS[path] if path != "default" else {}
    ref = ref_cls(groups(ref_params, group_b), lr=LR, **reference_kwargs(name, opts), **ref_flags)
    run(ours, ours_params, steps, sign, lrs)
    run(ref, ref_params, steps, sign, lrs)
    assert all(
        not torch.equal(p, p0) for p, p0 in zip(ours_params, make_params(dtype), strict=True)
    )
    compare(name, ours, ref, ours_params, ref_params, TOL[dtype] if name == "momentum" else None)


# ---------------------------------------------------------------- equality with torch
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("path", ["default", "foreach"])
@pytest.mark.parametrize(("name", "opt_index"), MATRIX)
def test_equals_torch_bitwise(name, opt_index, path, dtype):
    """The default path (the for-loop on CPU, as torch's) and ``foreach=True`` equal torch's
    same path bit for bit, params and state (Momentum: torch's SGD, to rounding)."""
    check_against_torch(name, opt_index, path, dtype, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize(("name", "opt_index"), MOST_OPTIONS)
def test_default_path_equals_torch_on_cuda(name, opt_index):
    check_against_torch(name, opt_index, "default", torch.float32, "cuda")


class ClassicalMomentumReference(torch.optim.Optimizer):
    """v <- mu v - lr g; theta <- theta + v (nesterov: theta + mu v - lr g)."""

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
    """iRprop- with theta <- theta - sign(g) * step_size * lr_t / lr_0."""

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


def check_changing_lr(name, opt_index, flags, dtype, group_b, steps=STEPS, skip=True, tol=None):
    """lr changed before every step: equal to torch (bitwise unless ``tol``), or to the
    formula references for Momentum and Rprop (to rounding)."""
    ours_cls, ref_cls, options, _ = CASES[name]
    opts = options[opt_index]
    sign = -1.0 if opts.get("maximize") else 1.0
    ours_params, ref_params = make_params(dtype), make_params(dtype)
    ours = ours_cls(groups(ours_params, group_b), lr=LR, **opts, **flags)
    if name in FORMULA_REFERENCES:
        ref = FORMULA_REFERENCES[name](groups(ref_params, group_b), lr=LR, **opts)
        tol = tol or TOL[dtype]
    else:
        ref_flags = {"foreach": flags.get("foreach", False)}
        ref = ref_cls(groups(ref_params, group_b), lr=LR, **opts, **ref_flags)
    bases = [g["lr"] for g in ours.param_groups]
    run(ours, ours_params, steps, sign, (bases, wobble), skip)
    run(ref, ref_params, steps, sign, (bases, wobble), skip)
    for p, q in zip(ours_params, ref_params, strict=True):
        if tol is None:
            assert torch.equal(p, q)
        else:
            assert_rel_close(p.detach(), q.detach(), tol, what="param")
    return ours, ours_params


@pytest.mark.parametrize("path", ["loop", "foreach"])
@pytest.mark.parametrize("name", list(CASES))
def test_changing_lr(name, path):
    check_changing_lr(name, len(CASES[name][2]) - 1, PATHS[path], torch.float64, CASES[name][3])


def test_changing_lr_differs_from_torch_for_momentum_and_rprop():
    """The two deliberate differences are real: torch's trajectories are not ours."""
    for name in OWN_SEMANTICS:
        ours_cls, ref_cls, options, group_b = CASES[name]
        ours_params, ref_params = make_params(torch.float64), make_params(torch.float64)
        ours = ours_cls(groups(ours_params, group_b), lr=LR, **options[0])
        ref = ref_cls(groups(ref_params, group_b), lr=LR, **reference_kwargs(name, options[0]))
        bases = [g["lr"] for g in ours.param_groups]
        run(ours, ours_params, 50, 1.0, (bases, wobble))
        run(ref, ref_params, 50, 1.0, (bases, wobble))
        diff = max((p - q).abs().max().item() for p, q in zip(ours_params, ref_params, strict=True))
        assert diff > 1e-4, name


# ---------------------------------------------------------------- fused (torch.compile)
def check_fused(name, opt_index, dtype, group_b, skip, steps=40):
    """Fused, lr changing every step: equal to torch's for-loop (or the formula reference)
    to rounding, and after the first steps not one recompile: a graph per group and gradient
    pattern, and SGD's buffers are created on a parameter's first gradient, so with ``skip``
    (no gradient for b2 on steps 0, 3, ...) the patterns repeat from step 4 on."""
    warm = 4 if skip else 2
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    check_changing_lr(name, opt_index, {"fused": True}, dtype, group_b, warm, skip, tol)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    with torch._dynamo.config.patch(error_on_recompile=True):
        opt, params = check_changing_lr(
            name, opt_index, {"fused": True}, dtype, group_b, steps, skip, tol
        )
    assert counters["stats"]["unique_graphs"] == graphs
    return opt, params


@pytest.mark.parametrize("name", list(CASES))
def test_fused_matches_torch_without_recompiling(name):
    check_fused(name, len(CASES[name][2]) - 1, torch.float64, None, skip=False)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "opt_index"), MATRIX)
def test_fused_matches_torch_all_options(name, opt_index, dtype):
    """Two param groups and a parameter without gradient on every third step."""
    check_fused(name, opt_index, dtype, CASES[name][3], skip=True)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "opt_index"), MOST_OPTIONS)
def test_fused_matches_torch_constant_lr(name, opt_index):
    ours_cls, ref_cls, options, group_b = CASES[name]
    opts = options[opt_index]
    sign = -1.0 if opts.get("maximize") else 1.0
    ours_params, ref_params = make_params(torch.float64), make_params(torch.float64)
    ours = ours_cls(groups(ours_params, group_b), lr=LR, **opts, fused=True)
    ref = ref_cls(groups(ref_params, group_b), lr=LR, **reference_kwargs(name, opts))
    run(ours, ours_params, STEPS, sign)
    run(ref, ref_params, STEPS, sign)
    compare(name, ours, ref, ours_params, ref_params, TOL[torch.float64])


# ---------------------------------------------------------------- bitwise resume
def check_resume(
    name: str, flags: dict, steps: int = 30, group_b="case", skip=True, dtype=torch.float32
) -> None:
    ours_cls, _, options, case_group_b = CASES[name]
    group_b = case_group_b if group_b == "case" else group_b
    opts = options[-1]
    sign = -1.0 if opts.get("maximize") else 1.0
    full_params = make_params(dtype)
    full = ours_cls(groups(full_params, group_b), lr=LR, **opts, **flags)
    run(full, full_params, 2 * steps, sign, skip=skip)

    first_params = make_params(dtype)
    first = ours_cls(groups(first_params, group_b), lr=LR, **opts, **flags)
    run(first, first_params, steps, sign, skip=skip)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first_params], "opt": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_params = make_params(dtype)
    with torch.no_grad():
        for p, s in zip(resumed_params, saved["params"], strict=True):
            p.copy_(s)
    resumed = ours_cls(groups(resumed_params, group_b), lr=LR, **opts, **flags)
    resumed.load_state_dict(saved["opt"])
    run(resumed, resumed_params, steps, sign, skip=skip, start=steps)
    for p, q in zip(resumed_params, full_params, strict=True):
        assert torch.equal(p, q)
    assert str(resumed.state_dict()["state"]) == str(full.state_dict()["state"])


@pytest.mark.parametrize("path", ["default", "foreach"])
@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_bitwise(name, path):
    check_resume(name, PATHS[path])


def test_resume_is_bitwise_fused():
    check_resume("adam", {"fused": True}, 10, group_b=None, skip=False, dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_bitwise_fused_all(name):
    check_resume(name, {"fused": True}, steps=10)


# ---------------------------------------------------------------- half precision
def check_half(name: str, flags: dict, dtype: torch.dtype) -> None:
    """Runs without error in bf16/fp16, state in the parameter dtype, and the loss tracks the
    float32 run loosely: the low-precision run gets at least 65% of float32's improvement."""
    ours_cls, _, options, group_b = CASES[name]
    opts = dict(options[0])
    if name == "adam" and dtype == torch.float16:
        opts["eps"] = 1e-4  # 1e-8 underflows to 0 in fp16: 0/0 = NaN, in torch.optim.Adam too
    final = {}
    for dt in (torch.float32, dtype):
        params = make_params(dt)
        opt = ours_cls(groups(params, group_b), lr=LR, **opts, **flags)
        run(opt, params, 100, 1.0)
        assert all(p.dtype == dt and torch.isfinite(p).all() for p in params)
        for state in opt.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    assert value.dtype == dt, key
        final[dt] = loss_fn([p.double() for p in params], 1).item()
    initial = loss_fn([p.double() for p in make_params(torch.float32)], 1).item()
    gain = initial - final[torch.float32]
    assert gain > 0
    assert abs(final[dtype] - final[torch.float32]) <= 0.35 * gain, (final, initial)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_tracks_float32(name, dtype):
    check_half(name, {}, dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_tracks_float32_foreach(name):
    check_half(name, {"foreach": True}, torch.bfloat16)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_tracks_float32_fused(name, dtype):
    check_half(name, {"fused": True}, dtype)


# ---------------------------------------------------------------- state layout
@pytest.mark.parametrize("flags", [{}, {"fused": True}], ids=["default", "fused"])
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam", "rprop", "adadelta"])
def test_state_layout_matches_torch(name, flags):
    """Same state keys, dtypes, devices and shapes as torch after one step (torch's fused
    layout where torch has a fused kernel, else its default layout: our fused ``step`` is
    float32 on the parameter's device, as in torch's fused optimizers)."""
    ours_cls, ref_cls, options, _ = CASES[name]
    torch_fused = flags and name in ("sgd", "adagrad", "adam")
    p, q = make_params(torch.float64), make_params(torch.float64)
    opts = options[-1]
    ours = ours_cls(p, lr=LR, **opts, **flags)
    ref = ref_cls(q, lr=LR, **opts, **({"fused": True} if torch_fused else {}))
    for opt, params in ((ours, p), (ref, q)):
        opt.state_dict()  # (before any step too)
        loss_fn(params, 1).backward()
        opt.step()
    mine, theirs = ours.state[p[0]], ref.state[q[0]]
    assert set(mine) - set(theirs) <= {"lr0"} and set(theirs) <= set(mine)
    for key, value in theirs.items():
        got = mine[key]
        if key == "step" and flags:
            assert (got.dtype, got.device, got.shape) == (torch.float32, p[0].device, ())
        else:
            assert (got.dtype, got.device, got.shape) == (value.dtype, value.device, value.shape)


def test_sgd_without_momentum_keeps_no_state_like_torch():
    for flags in ({}, {"foreach": True}):
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
