"""schedulers.functional and the LRScheduler adapters against TensorFlow's own values and torch.

The golden file comes from a real TensorFlow run (scripts/make_golden_schedules.py); these tests
need no TensorFlow.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import (
    ConstantLR,
    ExponentialLR,
    MultiStepLR,
    SequentialLR,
    StepLR,
)

import schedulers
from schedulers import functional as F

GOLDEN_PATH = Path(__file__).parent / "data" / "tf_schedule_golden.json"
GOLDEN = json.loads(GOLDEN_PATH.read_text())
CASES = GOLDEN["cases"]
CASE_IDS = [f"{i:02d}-{c['fn']}" for i, c in enumerate(CASES)]

ADAPTER = {
    "exponential_decay": schedulers.ExponentialDecay,
    "piecewise_constant": schedulers.PiecewiseConstantDecay,
    "polynomial_decay": schedulers.PolynomialDecay,
    "natural_exp_decay": schedulers.NaturalExpDecay,
    "inverse_time_decay": schedulers.InverseTimeDecay,
    "cosine_decay": schedulers.CosineDecay,
    "cosine_decay_restarts": schedulers.CosineDecayRestarts,
    "linear_cosine_decay": schedulers.LinearCosineDecay,
}

# TensorFlow computing in float64 runs the same operations in the same order as our Python floats.
FLOAT64_RTOL = 1e-12
# TensorFlow's float32 results: 1e-6 relative to the value or to the schedule's scale (its initial
# lr), whichever is larger. Near a zero of 1 + cos(.) float32 cancels badly: there TF's own float32
# values are up to ~3e-3 off (relative) from its float64 values, while both stay within 1e-8 of
# each other in absolute terms on a schedule of scale 1.
FLOAT32_RTOL = 1e-6


def _scale(case: dict) -> float:
    kw = case["kwargs"]
    return kw["learning_rate"] if "learning_rate" in kw else max(kw["values"])


def _function_value(case: dict, step: int) -> float:
    step_arg = "x" if case["fn"] == "piecewise_constant" else "global_step"
    return getattr(F, case["fn"])(**{step_arg: step}, **case["kwargs"])


def _assert_matches_golden(case: dict, ours: list[float]) -> None:
    """Every reference series of the case: float64 to 1e-12, float32 to 1e-6."""
    compared = 0
    for key in ("tf1_float64", "keras3_float64"):
        if key in case:
            for step, got, want in zip(case["steps"], ours, case[key], strict=True):
                assert got == pytest.approx(want, rel=FLOAT64_RTOL, abs=0), (key, step)
            compared += 1
    for key in ("tf1_float32", "keras3_float32"):
        if key in case:
            for step, got, want in zip(case["steps"], ours, case[key], strict=True):
                tol = FLOAT32_RTOL * max(abs(want), _scale(case))
                assert abs(got - want) <= tol, (key, step, got, want)
    # TF computes cosine_decay(_restarts) in float64 only in Keras 3, linear_cosine_decay never.
    assert compared >= 1 or case["fn"] == "linear_cosine_decay"


def _adapter(case: dict, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    kw = {k: v for k, v in case["kwargs"].items() if k != "learning_rate"}
    return ADAPTER[case["fn"]](optimizer, **kw)


def _sgd(lr: float = 0.1, n_groups: int = 1) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(n_groups)]
    return torch.optim.SGD(groups, lr=lr)


def test_golden_file_is_real_and_covers_every_decay():
    assert GOLDEN["generator"] == "scripts/make_golden_schedules.py"
    assert GOLDEN["tensorflow"].startswith("2.")
    assert GOLDEN_PATH.stat().st_size < 1_000_000
    assert {c["fn"] for c in CASES} == set(ADAPTER)
    for case in CASES:
        assert case["call"].startswith(f"tf.compat.v1.train.{case['fn']}(")
        assert len(case["tf1_float32"]) == len(case["steps"]) >= 4
    n_values = sum(len(v) for c in CASES for k, v in c.items() if k.endswith(("32", "64")))
    assert n_values > 3000


def test_golden_steps_include_every_boundary_and_its_neighbours():
    for case in CASES:
        kw, steps = case["kwargs"], set(case["steps"])
        period = kw.get("decay_steps")
        if case["fn"] in ("exponential_decay", "natural_exp_decay", "inverse_time_decay"):
            for k in range(1, int(max(steps) // period) + 1):
                b = k * period
                neighbours = {math.floor(b) - 1, math.floor(b), math.ceil(b), math.ceil(b) + 1}
                assert {s for s in neighbours if s <= max(steps)} <= steps
        if case["fn"] == "piecewise_constant":
            for b in kw["boundaries"]:
                assert {b, b + 1} <= steps and (b == 0 or b - 1 in steps)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_functional_matches_tensorflow(case):
    _assert_matches_golden(case, [_function_value(case, s) for s in case["steps"]])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_lr_scheduler_matches_tensorflow_in_a_training_loop(case):
    """optimizer.step() then scheduler.step(): the lr of optimizer step k is TF's value at k."""
    opt = _sgd(lr=case["kwargs"].get("learning_rate", 123.0))  # piecewise ignores the group lr
    sched = _adapter(case, opt)
    wanted, ours = set(case["steps"]), {}
    for step in range(max(wanted) + 1):
        if step in wanted:
            ours[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    _assert_matches_golden(case, [ours[s] for s in case["steps"]])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_lr_scheduler_step_epoch_uses_the_closed_form(case):
    """step(epoch) jumps anywhere, in any order (TF's schedules are functions of the step)."""
    opt = _sgd(lr=case["kwargs"].get("learning_rate", 123.0))
    sched = _adapter(case, opt)
    opt.step()
    order = list(reversed(case["steps"]))
    ours = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch deprecates the epoch argument
        for step in order:
            sched.step(step)
            ours[step] = sched.get_last_lr()[0]
            assert sched.last_epoch == step
    _assert_matches_golden(case, [ours[s] for s in case["steps"]])


# --- the issue's examples and the reference's hand-checked values ------------------------------


def test_issue_examples():
    assert F.exponential_decay(0.1, 250, 100, 0.96, staircase=True) == pytest.approx(0.1 * 0.96**2)
    assert F.piecewise_constant(10000, boundaries=[10000, 12000], values=[1.0, 0.5, 0.1]) == 1.0
    assert F.piecewise_constant(10001, boundaries=[10000, 12000], values=[1.0, 0.5, 0.1]) == 0.5


@pytest.mark.parametrize(
    ("fn", "kwargs", "steps", "values"),
    [
        (F.polynomial_decay, dict(learning_rate=0.1, decay_steps=10, end_learning_rate=0.01,
                                  cycle=True), [0, 5, 10, 11, 15, 20, 21],
         [0.1, 0.055, 0.01, 0.0505, 0.0325, 0.01, 0.037]),
        (F.cosine_decay_restarts, dict(learning_rate=1.0, first_decay_steps=10, t_mul=2.0,
                                       m_mul=0.5, alpha=0.1), [0, 5, 9, 10, 20, 29, 30],
         [1.0, 0.55, 0.122025, 0.55, 0.325, 0.10277, 0.325]),
        (F.linear_cosine_decay, dict(learning_rate=0.1, decay_steps=10), [0, 5, 10, 20],
         [0.1001, 0.0251, 0.0001, 0.0001]),
    ],
)  # fmt: skip
def test_reference_hand_values(fn, kwargs, steps, values):
    assert [fn(global_step=s, **kwargs) for s in steps] == pytest.approx(values, rel=1e-5)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: F.exponential_decay(0.1, 5, 0, 0.5), "decay_steps must be a number > 0"),
        (lambda: F.exponential_decay(0.1, 5, -3, 0.5), "decay_steps"),
        (lambda: F.exponential_decay(0.1, 5, 10, -0.5), "decay_rate must be a number > 0"),
        (lambda: F.exponential_decay(0.1, 5, 10, 0.5, staircase=1), "staircase must be True or"),
        (lambda: F.exponential_decay(-0.1, 5, 10, 0.5), "learning_rate must be a number >= 0"),
        (lambda: F.exponential_decay(0.1, -1, 10, 0.5), "global_step must be a number >= 0"),
        (lambda: F.exponential_decay(0.1, 5, "10", 0.5), "decay_steps"),
        (lambda: F.exponential_decay(0.1, 5, math.nan, 0.5), "decay_steps"),
        (lambda: F.piecewise_constant(5, [10, 20], [1.0, 0.5]), r"len\(boundaries\) \+ 1 = 3"),
        (lambda: F.piecewise_constant(5, [20, 10], [1.0, 0.5, 0.1]), "strictly increasing"),
        (lambda: F.piecewise_constant(5, [10, 10], [1.0, 0.5, 0.1]), "strictly increasing"),
        (lambda: F.piecewise_constant(5, [10], [1.0, -0.5]), "each of values must be"),
        (lambda: F.piecewise_constant(5, 10, [1.0, 0.5]), "boundaries must be a list"),
        (lambda: F.polynomial_decay(0.1, 5, 10, cycle="yes"), "cycle must be True or False"),
        (lambda: F.polynomial_decay(0.1, 5, 10, power=0), "power must be a number > 0"),
        (lambda: F.polynomial_decay(0.1, 5, 10, end_learning_rate=-1), "end_learning_rate"),
        (lambda: F.natural_exp_decay(0.1, 5, 10, -0.5), "decay_rate must be a number >= 0"),
        (lambda: F.inverse_time_decay(0.1, 5, 10, -0.5), "decay_rate must be a number >= 0"),
        (lambda: F.inverse_time_decay(0.1, 5, 10, 0.5, staircase=None), "staircase"),
        (lambda: F.cosine_decay(0.1, 5, 0), "decay_steps"),
        (lambda: F.cosine_decay(0.1, 5, 10, alpha=1.5), r"alpha must be a number in \[0, 1\]"),
        (lambda: F.cosine_decay_restarts(0.1, 5, 0), "first_decay_steps"),
        (lambda: F.cosine_decay_restarts(0.1, 5, 10, t_mul=0.5), "t_mul must be a number >= 1"),
        (lambda: F.cosine_decay_restarts(0.1, 5, 10, m_mul=-1.0), "m_mul"),
        (lambda: F.linear_cosine_decay(0.1, 5, 10, beta=-1.0), "beta must be a number >= 0"),
        (lambda: F.linear_cosine_decay(0.1, 5, 0), "decay_steps"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_adapters_validate_before_touching_the_optimizer():
    opt = _sgd(lr=0.1)
    with pytest.raises(ValueError, match="decay_steps"):
        schedulers.ExponentialDecay(opt, decay_steps=0, decay_rate=0.5)
    assert "initial_lr" not in opt.param_groups[0]
    with pytest.raises(ValueError, match="strictly increasing"):
        schedulers.PiecewiseConstantDecay(opt, boundaries=[5, 5], values=[1.0, 0.5, 0.1])
    with pytest.raises(TypeError, match="is not an Optimizer"):
        schedulers.CosineDecay(object(), decay_steps=10)


# --- torch's own schedulers, where the math coincides --------------------------------------------


def _run(opt: torch.optim.Optimizer, sched, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_exponential_lr_is_per_step_exponential_decay():
    ours = _run(o := _sgd(0.3), schedulers.ExponentialDecay(o, decay_steps=1, decay_rate=0.9), 60)
    torchs = _run(o := _sgd(0.3), ExponentialLR(o, gamma=0.9), 60)
    assert ours == pytest.approx(torchs, rel=1e-12)


@pytest.mark.parametrize("step_size", [1, 3, 10])
def test_step_lr_is_staircase_exponential_decay(step_size):
    sched = schedulers.ExponentialDecay(o := _sgd(0.3), step_size, 0.5, staircase=True)
    ours = _run(o, sched, 50)
    torchs = _run(o := _sgd(0.3), StepLR(o, step_size=step_size, gamma=0.5), 50)
    assert ours == pytest.approx(torchs, rel=1e-12)


def test_multistep_lr_is_piecewise_constant_one_step_earlier():
    """MultiStepLR switches AT a milestone, TF's piecewise_constant one step AFTER a boundary."""
    milestones, base, gamma = [10, 25], 0.3, 0.1
    torchs = _run(o := _sgd(base), MultiStepLR(o, milestones=milestones, gamma=gamma), 40)
    values = [base, base * gamma, base * gamma**2]
    shifted = _run(o := _sgd(base), schedulers.PiecewiseConstantDecay(o, [9, 24], values), 40)
    assert shifted == pytest.approx(torchs, rel=1e-12)
    same = _run(o := _sgd(base), schedulers.PiecewiseConstantDecay(o, milestones, values), 40)
    assert same[10] == base and torchs[10] == pytest.approx(base * gamma)  # the one-step difference
    assert same[11] == pytest.approx(base * gamma)


# --- the LRScheduler lifecycle -------------------------------------------------------------------


def test_construction_sets_step_zero_value():
    opt = _sgd(0.1)
    sched = schedulers.LinearCosineDecay(opt, decay_steps=10)
    assert sched.last_epoch == 0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 1.001)
    assert opt.param_groups[0]["initial_lr"] == 0.1


def test_a_real_training_loop_uses_value_k_at_optimizer_step_k():
    """SGD on L = sum(w): each update moves w by exactly -lr, so the update is the lr used."""
    w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = schedulers.ExponentialDecay(opt, decay_steps=3, decay_rate=0.5, staircase=True)
    used = []
    for _ in range(12):
        opt.zero_grad()
        w.sum().backward()
        before = w.item()
        opt.step()
        used.append(before - w.item())
        sched.step()
    expected = [F.exponential_decay(0.1, k, 3, 0.5, staircase=True) for k in range(12)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert used[:4] == pytest.approx([0.1, 0.1, 0.1, 0.05])


def test_values_never_compound_an_outside_lr_change():
    opt = _sgd(1.0)
    sched = schedulers.ExponentialDecay(opt, decay_steps=1, decay_rate=0.5)
    _run(opt, sched, 3)
    opt.param_groups[0]["lr"] = 10.0  # torch's ExponentialLR would continue from 10
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5**4


SCHEDULES = {
    "exponential": (
        schedulers.ExponentialDecay,
        {"decay_steps": 7, "decay_rate": 0.8, "staircase": True},
    ),
    "piecewise": (
        schedulers.PiecewiseConstantDecay,
        {"boundaries": [5, 12], "values": [0.2, 0.1, 0.05]},
    ),
    "polynomial": (
        schedulers.PolynomialDecay,
        {"decay_steps": 6, "end_learning_rate": 0.01, "power": 2.0, "cycle": True},
    ),
    "restarts": (
        schedulers.CosineDecayRestarts,
        {"first_decay_steps": 4, "t_mul": 2.0, "m_mul": 0.5, "alpha": 0.1},
    ),
}


@pytest.mark.parametrize(("cls", "kwargs"), SCHEDULES.values(), ids=SCHEDULES.keys())
def test_state_dict_resumes_exactly(cls, kwargs):
    opt = _sgd(0.2)
    whole = _run(opt, cls(opt, **kwargs), 30)
    opt = _sgd(0.2)
    sched = cls(opt, **kwargs)
    first = _run(opt, sched, 11)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    opt = _sgd(0.2)
    sched = cls(opt, **kwargs)  # construct the scheduler, then load the optimizer and scheduler
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    assert sched.last_epoch == 11
    assert first + _run(opt, sched, 19) == whole


@pytest.mark.parametrize(("cls", "kwargs"), SCHEDULES.values(), ids=SCHEDULES.keys())
def test_resume_with_last_epoch(cls, kwargs):
    """torch's convention: the constructor steps once, so pass the saved last_epoch - 1."""
    opt = _sgd(0.2)
    whole = _run(opt, cls(opt, **kwargs), 30)
    opt = _sgd(0.2)
    sched = cls(opt, **kwargs)
    first = _run(opt, sched, 11)
    saved_epoch, opt_state = sched.last_epoch, opt.state_dict()
    opt = _sgd(0.2)
    opt.load_state_dict(opt_state)  # brings initial_lr back
    opt.param_groups[0]["lr"] = 99.0  # the closed form never reads the current lr
    sched = cls(opt, **kwargs, last_epoch=saved_epoch - 1)
    assert sched.last_epoch == saved_epoch
    assert first + _run(opt, sched, 19) == whole


def test_sequential_lr_restarts_the_next_schedule_at_its_step_zero():
    opt = _sgd(1.0)
    first = schedulers.ExponentialDecay(opt, decay_steps=1, decay_rate=0.5)
    second = schedulers.PolynomialDecay(opt, decay_steps=4, end_learning_rate=0.0)
    sched = SequentialLR(opt, [first, second], milestones=[3])
    lrs = _run(opt, sched, 9)
    assert lrs == pytest.approx([1.0, 0.5, 0.25, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


def test_sequential_lr_after_a_torch_scheduler():
    opt = _sgd(1.0)
    first = ConstantLR(opt, factor=0.5, total_iters=2)
    second = schedulers.ExponentialDecay(opt, decay_steps=2, decay_rate=0.1, staircase=True)
    lrs = _run(opt, SequentialLR(opt, [first, second], milestones=[2]), 7)
    assert lrs == pytest.approx([0.5, 0.5, 1.0, 1.0, 0.1, 0.1, 0.01])


def test_several_param_groups():
    opt = _sgd(n_groups=2)
    opt.param_groups[1]["lr"] = 1.0
    sched = schedulers.ExponentialDecay(opt, decay_steps=2, decay_rate=0.5)
    _run(opt, sched, 4)
    assert sched.get_last_lr() == pytest.approx([0.1 * 0.25, 1.0 * 0.25])
    # Piecewise values are absolute: a flat list is the same for every group ...
    opt = _sgd(n_groups=2)
    sched = schedulers.PiecewiseConstantDecay(opt, [1], [0.3, 0.03])
    assert _run(opt, sched, 3) == [0.3, 0.3, 0.03]
    assert sched.get_last_lr() == [0.03, 0.03]
    # ... or one list per group.
    opt = _sgd(n_groups=2)
    sched = schedulers.PiecewiseConstantDecay(opt, [1], [[0.3, 0.03], [1.0, 0.5]])
    _run(opt, sched, 3)
    assert sched.get_last_lr() == [0.03, 0.5]
    with pytest.raises(ValueError, match="values has 3 per-group entries but the optimizer has 2"):
        schedulers.PiecewiseConstantDecay(_sgd(n_groups=2), [1], [[1.0, 0.5]] * 3)
    opt = _sgd(n_groups=2)
    sched = schedulers.PolynomialDecay(opt, 2, end_learning_rate=[0.0, 0.05])
    _run(opt, sched, 3)
    assert sched.get_last_lr() == pytest.approx([0.0, 0.05])


class _PlainSGD(torch.optim.Optimizer):
    """Any Optimizer subclass works: the adapters only read and write param_groups."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


def test_works_with_any_optimizer_subclass(device):
    w = torch.nn.Parameter(torch.zeros(3, device=device, dtype=torch.float64))
    opt = _PlainSGD([w], lr=0.5)
    sched = schedulers.CosineDecay(opt, decay_steps=8, alpha=0.1)
    for _ in range(10):
        w.grad = torch.ones_like(w)
        opt.step()
        sched.step()
    expected = -sum(F.cosine_decay(0.5, k, 8, 0.1) for k in range(10))
    assert w.detach().cpu().tolist() == pytest.approx([expected] * 3, rel=1e-12)


def test_tensor_lr_is_updated_in_place():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([w], lr=torch.tensor(0.1), foreach=False)
    lr_tensor = opt.param_groups[0]["lr"]
    sched = schedulers.ExponentialDecay(opt, decay_steps=10, decay_rate=0.5)
    for _ in range(10):
        w.grad = torch.ones_like(w)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is lr_tensor
    assert lr_tensor.item() == pytest.approx(0.05)


def test_get_lr_outside_step_warns_like_torch():
    sched = schedulers.CosineDecay(_sgd(), decay_steps=10)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()
