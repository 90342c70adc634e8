"""The schedulers registry: names, run-length defaults, overrides, the 100x presets, warm-up."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler, SequentialLR

import schedulers
from schedulers import functional as F

REQUIRED = [
    "constant",
    "exponential",
    "staircase",
    "piecewise",
    "polynomial",
    "inverse_time",
    "natural_exp",
    "cosine",
    "cosine_restarts",
]
PRESETS_100 = [name for name in schedulers.available() if name.endswith("100")]


def _sgd(lr: float = 0.1, n_groups: int = 1) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(n_groups)]
    return torch.optim.SGD(groups, lr=lr)


def _lrs(opt: torch.optim.Optimizer, sched: LRScheduler, steps: int, group: int = 0) -> list:
    """The lr each of `steps` optimizer steps uses, in TF's loop order."""
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        sched.step()
    return out


def _lr_at(name: str, total_steps: int, step: int, lr: float = 0.1, **kw) -> float:
    """The registry schedule's lr at `step`, through the scheduler's closed form (step(epoch))."""
    opt = _sgd(lr)
    sched = schedulers.create(name, opt, total_steps, **kw)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch deprecates step(epoch)
        sched.step(step)
    return opt.param_groups[0]["lr"]


def test_available_is_sorted_and_has_the_required_names_and_a_100x_preset_per_decay():
    names = schedulers.available()
    assert names == sorted(names)
    assert set(REQUIRED) | {"linear_cosine"} <= set(names)
    decays = set(REQUIRED) - {"constant"} | {"linear_cosine"}
    assert {f"{d}100" for d in decays} == set(PRESETS_100)


def test_defaults_reproduce_the_articles_figures():
    assert schedulers.defaults("exponential", 1000, lr=0.1) == {
        "decay_steps": 100,
        "decay_rate": 0.96,
        "staircase": False,
    }
    assert schedulers.defaults("staircase", 1000)["staircase"] is True
    assert schedulers.defaults("piecewise", 20000, lr=1.0) == {
        "boundaries": [10000, 12000],
        "values": [1.0, 0.5, 0.1],
    }


@pytest.mark.parametrize("total_steps", [1, 2, 7, 1000, 20001])
def test_defaults_scale_with_the_run_length(total_steps):
    d = schedulers.defaults("staircase", total_steps)
    assert d["decay_steps"] == max(1, total_steps // 10)
    b = schedulers.defaults("piecewise", total_steps)["boundaries"]
    assert b[0] == total_steps // 2 and b[0] < b[1]
    assert schedulers.defaults("cosine", total_steps)["decay_steps"] == total_steps
    assert schedulers.defaults("cosine_restarts", total_steps)["first_decay_steps"] * 7 == (
        pytest.approx(total_steps)
    )


@pytest.mark.parametrize("name", sorted(set(schedulers.available()) - set(PRESETS_100)))
def test_every_schedule_is_its_class_with_the_defaults(name):
    total = 200
    sched = schedulers.create(name, opt := _sgd(0.1), total)
    assert isinstance(sched, LRScheduler)
    ours = _lrs(opt, sched, total)
    cls = type(sched)
    direct = _lrs(opt := _sgd(0.1), cls(opt, **schedulers.defaults(name, total, lr=0.1)), total)
    assert ours == direct
    start = 0.1 * (1.001 if name == "linear_cosine" else 1.0)  # TF's beta is added on top
    assert ours[0] == pytest.approx(start)
    if name != "constant":
        assert ours[-1] < ours[0]


def test_article_staircase_through_the_registry():
    opt = _sgd(0.1)
    lrs = _lrs(opt, schedulers.create("staircase", opt, 1000), 1000)
    assert (
        lrs[99] == 0.1
        and lrs[100] == pytest.approx(0.096)
        and lrs[999] == pytest.approx(0.1 * 0.96**9)
    )
    assert lrs == pytest.approx([F.exponential_decay(0.1, k, 100, 0.96, True) for k in range(1000)])


def test_overrides():
    opt = _sgd(1.0)
    lrs = _lrs(opt, schedulers.create("staircase", opt, total_steps=3000, decay_rate=0.5), 601)
    assert (lrs[299], lrs[300], lrs[600]) == (1.0, 0.5, 0.25)
    opt = _sgd(1.0)
    sched = schedulers.create("piecewise", opt, 100, boundaries=[3], values=[0.7, 0.07])
    assert _lrs(opt, sched, 5) == [0.7] * 4 + [0.07]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda o: schedulers.create("stairs", o, 100), "unknown schedule 'stairs'; did you mean "),
        (lambda o: schedulers.create("zzz", o, 100), "unknown schedule 'zzz'; choose from consta"),
        (
            lambda o: schedulers.create("staircase", o, 100, gamma=0.5),
            "'staircase' does not accept 'gamma'; it accepts decay_rate, decay_steps, staircase",
        ),
        (
            lambda o: schedulers.create("constant", o, 100, decay_rate=0.5),
            "it accepts no arguments",
        ),
        (
            lambda o: schedulers.create("staircase", o, 100, decay_rate=-1.0),
            "schedule 'staircase': decay_rate must be a number > 0, got -1.0",
        ),
        (lambda o: schedulers.create("cosine", o, 0), "total_steps must be an integer >= 1"),
        (lambda o: schedulers.create("cosine", o, 10.5), "total_steps must be an integer"),
        (
            lambda o: schedulers.create("cosine", o, 10, warmup_steps=10),
            r"warmup_steps must be an integer in \[0, 9\], got 10",
        ),
        (lambda o: schedulers.create("cosine", o, 10, warmup_steps=-1), "warmup_steps"),
        (lambda o: schedulers.create("cosine100", o, 2), "must be an integer >= 3"),
        (lambda o: schedulers.create("cosine", "sgd", 10), "optimizer must be a torch.optim"),
        (lambda o: schedulers.defaults("cosin", 10), "did you mean 'cosine'"),
        (lambda o: schedulers.defaults("cosine", -5), "total_steps"),
    ],
)
def test_bad_input_is_a_one_line_value_error(call, match):
    opt = _sgd()
    with pytest.raises(ValueError, match=match) as e:
        call(opt)
    assert "\n" not in str(e.value)
    assert "initial_lr" not in opt.param_groups[0]  # nothing was half-attached


@pytest.mark.parametrize("total_steps", [3, 4, 5, 7, 10, 11, 99, 100, 1000, 1001, 20000])
@pytest.mark.parametrize("name", PRESETS_100)
def test_100x_presets_end_at_least_100x_below_their_start(name, total_steps):
    first = _lr_at(name, total_steps, 0)
    last = _lr_at(name, total_steps, total_steps - 1)
    assert last <= first / 100 * (1 + 1e-12)  # some land exactly on lr/100, up to rounding


@pytest.mark.parametrize("name", PRESETS_100)
def test_100x_presets_with_warmup_still_end_100x_below(name):
    opt = _sgd(0.1)
    lrs = _lrs(opt, schedulers.create(name, opt, 300, warmup_steps=30), 300)
    assert max(lrs) <= 0.1 * 1.001 + 1e-15
    assert lrs[-1] <= max(lrs) / 100 * (1 + 1e-12)


def test_multi_group_lr_dependent_defaults_follow_each_group():
    opt = _sgd(n_groups=2)
    opt.param_groups[1]["lr"] = 1.0
    sched = schedulers.create("piecewise", opt, 10)  # boundaries [5, 6]
    _lrs(opt, sched, 7)
    assert sched.get_last_lr() == pytest.approx([0.01, 0.1])
    opt = _sgd(n_groups=2)
    opt.param_groups[1]["lr"] = 1.0
    sched = schedulers.create("polynomial100", opt, 10)
    _lrs(opt, sched, 9)
    assert sched.get_last_lr() == pytest.approx([0.001, 0.01])


@pytest.mark.parametrize("name", ["constant", "staircase", "piecewise", "cosine_restarts"])
def test_warmup_is_linear_then_the_decay_starts_its_clock_at_n(name):
    total, n, lr = 100, 8, 0.1
    opt = _sgd(lr)
    sched = schedulers.create(name, opt, total, warmup_steps=n)
    assert isinstance(sched, SequentialLR)
    lrs = _lrs(opt, sched, total)
    assert lrs[:n] == pytest.approx([lr * (k + 1) / (n + 1) for k in range(n)], rel=1e-12)
    decay = schedulers.create(name, opt2 := _sgd(lr), total - n)  # built for the remaining steps
    assert lrs[n:] == pytest.approx(_lrs(opt2, decay, total - n), rel=1e-12)
    assert lrs[n] == lr


def test_warmup_resumes_from_state_dict():
    def fresh():
        opt = _sgd(0.1)
        return opt, schedulers.create("cosine", opt, 40, warmup_steps=10)

    opt, sched = fresh()
    whole = _lrs(opt, sched, 40)
    for cut in (5, 10, 23):
        opt, sched = fresh()
        first = _lrs(opt, sched, cut)
        opt_state, sched_state = opt.state_dict(), sched.state_dict()
        opt, sched = fresh()
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
        assert first + _lrs(opt, sched, 40 - cut) == pytest.approx(whole, rel=1e-12)


def test_warmup_in_a_real_training_loop():
    """SGD on L = sum(w): each update is exactly -lr, so the updates are the lrs used."""
    w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = schedulers.create("staircase", opt, 30, warmup_steps=3)
    used = []
    for _ in range(30):
        opt.zero_grad()
        w.sum().backward()
        before = w.item()
        opt.step()
        sched.step()
        used.append(before - w.item())
    decay = [F.exponential_decay(0.1, k - 3, 2, 0.96, staircase=True) for k in range(3, 30)]
    assert used == pytest.approx([0.025, 0.05, 0.075, *decay], rel=1e-12)
