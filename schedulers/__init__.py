"""TensorFlow's learning-rate decays for PyTorch: pure functions, LRScheduler adapters, a registry.

    import schedulers
    from schedulers import functional as F      # F.exponential_decay(0.1, 250, 100, 0.96, True)
    from schedulers import ExponentialDecay     # ExponentialDecay(opt, 100, 0.96, staircase=True)
    schedulers.available()                      # registry names, incl. the *100 presets
    schedulers.defaults("staircase", total_steps=1000, lr=0.1)
    schedulers.create("staircase", opt, total_steps=1000, warmup_steps=0, decay_rate=0.5)

Registry defaults scale with the run length T = total_steps (see `_REGISTRY`; the README has the
table). The `<decay>100` presets follow the article's advice that the rate end at least 100x below
its start: each gives lr(T - 1) <= lr(0) / 100 for every T >= 3.

Warm-up (`warmup_steps=N`): torch's own `SequentialLR([LinearLR, decay], milestones=[N])`. Steps
0..N-1 use lr * (k + 1) / (N + 1); the decay clock starts at N (step N uses the decay's step-0
value, lr) and the decay is built for the remaining T - N steps, so it ends where it would have.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR

from . import functional
from .lr_schedulers import (
    Constant,
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LinearCosineDecay,
    NaturalExpDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
)

__all__ = [
    "Constant",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LinearCosineDecay",
    "NaturalExpDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "available",
    "create",
    "defaults",
    "functional",
]


class _Entry(NamedTuple):
    cls: type[LRScheduler]
    defaults: Callable[[int, float], dict[str, Any]]  # (total_steps, lr) -> constructor kwargs
    min_steps: int = 1


def _tenth(t: int) -> int:
    return max(1, t // 10)


def _last(t: int) -> int:
    """The last step of a T-step run (steps 0..T-1); at least 1 so it can be a decay length."""
    return max(1, t - 1)


def _piecewise100_boundaries(t: int) -> list[int]:
    # TF switches at boundary + 1: lr/10 after 50 %, lr/100 after 75 %, both before the last step.
    b2 = min(3 * t // 4, t - 2)
    return [min(t // 2, b2 - 1), b2]


_REGISTRY: dict[str, _Entry] = {
    "constant": _Entry(Constant, lambda t, lr: {}),
    # The article's figure 2: 0.96 every 100 of 1000 steps.
    "exponential": _Entry(
        ExponentialDecay,
        lambda t, lr: {"decay_steps": _tenth(t), "decay_rate": 0.96, "staircase": False},
    ),
    "staircase": _Entry(
        ExponentialDecay,
        lambda t, lr: {"decay_steps": _tenth(t), "decay_rate": 0.96, "staircase": True},
    ),
    # The article's figure 3: boundaries 10000 and 12000 of 20000 steps.
    "piecewise": _Entry(
        PiecewiseConstantDecay,
        lambda t, lr: {
            "boundaries": [t // 2, max(6 * t // 10, t // 2 + 1)],
            "values": [lr, 0.5 * lr, 0.1 * lr],
        },
    ),
    "polynomial": _Entry(
        PolynomialDecay,
        lambda t, lr: {"decay_steps": t, "end_learning_rate": 0.0, "power": 1.0, "cycle": False},
    ),
    "inverse_time": _Entry(
        InverseTimeDecay,
        lambda t, lr: {"decay_steps": _tenth(t), "decay_rate": 1.0, "staircase": False},
    ),
    "natural_exp": _Entry(
        NaturalExpDecay,
        lambda t, lr: {"decay_steps": _tenth(t), "decay_rate": 0.25, "staircase": False},
    ),
    "cosine": _Entry(CosineDecay, lambda t, lr: {"decay_steps": t, "alpha": 0.0}),
    # Three cycles (1 + 2 + 4 = 7 units) ending exactly at step T.
    "cosine_restarts": _Entry(
        CosineDecayRestarts,
        lambda t, lr: {"first_decay_steps": t / 7, "t_mul": 2.0, "m_mul": 1.0, "alpha": 0.0},
    ),
    "linear_cosine": _Entry(
        LinearCosineDecay,
        lambda t, lr: {"decay_steps": t, "num_periods": 0.5, "alpha": 0.0, "beta": 0.001},
    ),
    # The article's advice: end at least 100x below the start, lr(T - 1) <= lr(0) / 100.
    "exponential100": _Entry(
        ExponentialDecay,
        lambda t, lr: {"decay_steps": _last(t), "decay_rate": 0.01, "staircase": False},
        min_steps=3,
    ),
    "staircase100": _Entry(
        ExponentialDecay,
        lambda t, lr: {
            "decay_steps": max(1, min(_last(t) // 3 + 1, _last(t) // 2)),
            "decay_rate": 0.1,
            "staircase": True,
        },
        min_steps=3,
    ),
    "piecewise100": _Entry(
        PiecewiseConstantDecay,
        lambda t, lr: {
            "boundaries": _piecewise100_boundaries(t),
            "values": [lr, 0.1 * lr, 0.01 * lr],
        },
        min_steps=3,
    ),
    "polynomial100": _Entry(
        PolynomialDecay,
        lambda t, lr: {
            "decay_steps": _last(t),
            "end_learning_rate": lr / 100,
            "power": 1.0,
            "cycle": False,
        },
        min_steps=3,
    ),
    "inverse_time100": _Entry(
        InverseTimeDecay,
        lambda t, lr: {"decay_steps": _last(t), "decay_rate": 99.0, "staircase": False},
        min_steps=3,
    ),
    "natural_exp100": _Entry(
        NaturalExpDecay,
        lambda t, lr: {"decay_steps": _last(t), "decay_rate": math.log(100), "staircase": False},
        min_steps=3,
    ),
    "cosine100": _Entry(
        CosineDecay, lambda t, lr: {"decay_steps": _last(t), "alpha": 0.01}, min_steps=3
    ),
    # Cycle peaks 1, 0.1, 0.01: the third cycle (from 3T/7 on) never exceeds lr / 100.
    "cosine_restarts100": _Entry(
        CosineDecayRestarts,
        lambda t, lr: {"first_decay_steps": t / 7, "t_mul": 2.0, "m_mul": 0.1, "alpha": 0.0},
        min_steps=3,
    ),
    "linear_cosine100": _Entry(
        LinearCosineDecay,
        lambda t, lr: {"decay_steps": _last(t), "num_periods": 0.5, "alpha": 0.0, "beta": 0.001},
        min_steps=3,
    ),
}


def available() -> list[str]:
    """Registry names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: Any) -> _Entry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    names = available()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"unknown schedule {name!r}; {hint}choose from {', '.join(names)}")


def _check_int(what: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{what} must be an integer {allowed}, got {value!r}")


def defaults(name: str, total_steps: int, lr: float = 1.0) -> dict[str, Any]:
    """The constructor kwargs the registry uses for a `total_steps`-step run starting at `lr`."""
    entry = _entry(name)
    _check_int(f"total_steps for schedule '{name}'", total_steps, entry.min_steps)
    functional._non_negative("lr", lr)
    return entry.defaults(int(total_steps), lr)


def create(
    name: str,
    optimizer: Optimizer,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    **overrides: Any,
) -> LRScheduler:
    """Registry schedule `name` for a `total_steps`-step run, its defaults updated by `overrides`.

    Lr-dependent defaults (piecewise `values`, polynomial `end_learning_rate`) are computed from
    each param group's own lr. With `warmup_steps=N > 0` the result is
    `SequentialLR([LinearLR(1/(N+1) -> 1, N steps), decay for total_steps - N], milestones=[N])`.
    Call `scheduler.step()` once after every `optimizer.step()`.
    """
    entry = _entry(name)
    if not isinstance(optimizer, Optimizer):
        raise ValueError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    _check_int("total_steps", total_steps, 1)
    _check_int("warmup_steps", warmup_steps, 0, total_steps - 1)
    decay_length = int(total_steps) - int(warmup_steps)
    _check_int(f"total_steps - warmup_steps for schedule '{name}'", decay_length, entry.min_steps)
    lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
    per_group = [entry.defaults(decay_length, lr) for lr in lrs]
    kwargs = dict(per_group[0])
    unknown = sorted(set(overrides) - set(kwargs))
    if unknown:
        accepts = ", ".join(sorted(kwargs)) or "no arguments"
        raise ValueError(f"schedule '{name}' does not accept {unknown[0]!r}; it accepts {accepts}")
    for key in kwargs:
        if key in overrides:
            kwargs[key] = overrides[key]
        elif any(d[key] != kwargs[key] for d in per_group):
            kwargs[key] = [d[key] for d in per_group]  # lr-dependent: one per param group
    try:
        decay = entry.cls(optimizer, **kwargs)
    except ValueError as e:
        raise ValueError(f"schedule '{name}': {e}") from None
    if warmup_steps == 0:
        return decay
    warmup = LinearLR(
        optimizer, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps
    )
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])
