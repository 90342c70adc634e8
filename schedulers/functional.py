"""TensorFlow's learning-rate decays as pure closed-form functions of the step.

One function per `tf.compat.v1.train.*_decay`, with TensorFlow's names, argument names, defaults and
semantics (the Keras 2 `LearningRateSchedule` code those functions call):

- the step is a float: `global_step / decay_steps` is a float division, floored only with
  `staircase=True`;
- `piecewise_constant` gives a boundary to the LEFT piece (`values[0]` while `x <= boundaries[0]`);
- `polynomial_decay(cycle=True)` gives `end_learning_rate` at `s = k * decay_steps` and restarts at
  `k * decay_steps + 1`;
- `cosine_decay_restarts` never scales `alpha` by `m_mul`.

The operations follow TensorFlow's order (e.g. `natural_exp_decay` is `exponential_decay` with the
base `exp(-decay_rate)`), computed in Python floats (float64). TensorFlow computing in float64 gives
the same values; its float32 values agree to 1e-6 of the schedule's scale (tests/test_schedulers.py,
against tests/data/tf_schedule_golden.json written by scripts/make_golden_schedules.py).

Unlike TensorFlow, bad arguments raise ValueError naming the argument and the allowed values.
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = [
    "cosine_decay",
    "cosine_decay_restarts",
    "exponential_decay",
    "inverse_time_decay",
    "linear_cosine_decay",
    "natural_exp_decay",
    "piecewise_constant",
    "polynomial_decay",
]


# --- validation -------------------------------------------------------------------------------


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _real(name: str, x: Any, allowed: str, ok: bool) -> None:
    """Raise ValueError unless `x` is a finite real number and `ok` holds for it."""
    if not _is_real(x) or not math.isfinite(x) or not ok:
        raise ValueError(f"{name} must be {allowed}, got {x!r}")


def _positive(name: str, x: Any) -> None:
    _real(name, x, "a number > 0", _is_real(x) and x > 0)


def _non_negative(name: str, x: Any) -> None:
    _real(name, x, "a number >= 0", _is_real(x) and x >= 0)


def _learning_rate(x: Any, name: str = "learning_rate") -> None:
    # A tensor lr (torch allows one in a param group) is passed through unchecked.
    if _is_real(x) or not hasattr(x, "dtype"):
        _non_negative(name, x)


def _flag(name: str, x: Any) -> None:
    if not isinstance(x, bool):
        raise ValueError(f"{name} must be True or False, got {x!r}")


def _step(global_step: Any) -> None:
    _non_negative("global_step", global_step)


# --- the decays ---------------------------------------------------------------------------------


def exponential_decay(
    learning_rate: float,
    global_step: float,
    decay_steps: float,
    decay_rate: float,
    staircase: bool = False,
) -> float:
    """lr = learning_rate * decay_rate ** p,  p = global_step / decay_steps (floor if staircase)."""
    _learning_rate(learning_rate)
    _step(global_step)
    _positive("decay_steps", decay_steps)
    _positive("decay_rate", decay_rate)
    _flag("staircase", staircase)
    p = global_step / decay_steps
    if staircase:
        p = math.floor(p)
    return learning_rate * decay_rate**p


def piecewise_constant(x: float, boundaries: Sequence[float], values: Sequence[float]) -> float:
    """values[0] if x <= b[0];  values[i] if b[i-1] < x <= b[i];  values[-1] if x > b[-1].

    A boundary belongs to the left piece: with boundaries [10, 20] the value changes at x = 11 and
    x = 21. `values` are absolute learning rates, not factors.
    """
    _non_negative("x", x)
    _check_boundaries(boundaries)
    _check_values(values, len(boundaries))
    return values[bisect.bisect_left(boundaries, x)]


def _check_boundaries(boundaries: Any) -> None:
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
        raise ValueError(f"boundaries must be a list of numbers, got {boundaries!r}")
    if not all(_is_real(b) and math.isfinite(b) for b in boundaries):
        raise ValueError(f"boundaries must be a list of finite numbers, got {list(boundaries)!r}")
    if any(b1 >= b2 for b1, b2 in itertools.pairwise(boundaries)):
        raise ValueError(f"boundaries must be strictly increasing, got {list(boundaries)!r}")


def _check_values(values: Any, n_boundaries: int) -> None:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"values must be a list of numbers, got {values!r}")
    if len(values) != n_boundaries + 1:
        raise ValueError(
            f"values must have len(boundaries) + 1 = {n_boundaries + 1} entries, got {len(values)}"
        )
    for v in values:
        _learning_rate(v, name="each of values")


def polynomial_decay(
    learning_rate: float,
    global_step: float,
    decay_steps: float,
    end_learning_rate: float = 0.0001,
    power: float = 1.0,
    cycle: bool = False,
) -> float:
    """lr = (learning_rate - end) * (1 - s / D) ** power + end.

    Without cycle: s = min(global_step, decay_steps), D = decay_steps.
    With cycle: s = global_step, D = decay_steps * ceil(global_step / decay_steps) (1 at step 0),
    so s = k * decay_steps gives end_learning_rate and the restart comes at k * decay_steps + 1.
    """
    _learning_rate(learning_rate)
    _step(global_step)
    _positive("decay_steps", decay_steps)
    _learning_rate(end_learning_rate, name="end_learning_rate")
    _positive("power", power)
    _flag("cycle", cycle)
    if cycle:
        multiplier = 1.0 if global_step == 0 else math.ceil(global_step / decay_steps)
        decay_steps = decay_steps * multiplier
    else:
        global_step = min(global_step, decay_steps)
    p = global_step / decay_steps
    return (learning_rate - end_learning_rate) * (1 - p) ** power + end_learning_rate


def natural_exp_decay(
    learning_rate: float,
    global_step: float,
    decay_steps: float,
    decay_rate: float,
    staircase: bool = False,
) -> float:
    """lr = learning_rate * exp(-decay_rate * p),  p = global_step / decay_steps (floor: staircase).

    Computed as TensorFlow does: exponential_decay with the base exp(-decay_rate).
    """
    _non_negative("decay_rate", decay_rate)
    return exponential_decay(
        learning_rate, global_step, decay_steps, math.exp(-decay_rate), staircase=staircase
    )


def inverse_time_decay(
    learning_rate: float,
    global_step: float,
    decay_steps: float,
    decay_rate: float,
    staircase: bool = False,
) -> float:
    """lr = learning_rate / (1 + decay_rate * p),  p = global_step / decay_steps (floor: staircase).

    TensorFlow's `InverseTimeDecay`; torch's Adagrad `lr_decay` is this with decay_steps = 1.
    """
    _learning_rate(learning_rate)
    _step(global_step)
    _positive("decay_steps", decay_steps)
    _non_negative("decay_rate", decay_rate)
    _flag("staircase", staircase)
    p = global_step / decay_steps
    if staircase:
        p = math.floor(p)
    return learning_rate / (1 + decay_rate * p)


def cosine_decay(
    learning_rate: float, global_step: float, decay_steps: float, alpha: float = 0.0
) -> float:
    """lr = learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha),
    s = min(global_step, decay_steps)."""
    _learning_rate(learning_rate)
    _step(global_step)
    _positive("decay_steps", decay_steps)
    _real("alpha", alpha, "a number in [0, 1]", _is_real(alpha) and 0 <= alpha <= 1)
    s = min(global_step, decay_steps)
    cosine_decayed = 0.5 * (1 + math.cos(math.pi * (s / decay_steps)))
    return learning_rate * ((1 - alpha) * cosine_decayed + alpha)


def cosine_decay_restarts(
    learning_rate: float,
    global_step: float,
    first_decay_steps: float,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
) -> float:
    """SGDR: lr = learning_rate * ((1 - alpha) * m_mul**i * 0.5 * (1 + cos(pi * f)) + alpha).

    With q = global_step / first_decay_steps, cycle i lasts first_decay_steps * t_mul**i steps:
    t_mul == 1: i = floor(q), f = q - i;
    else:       i = floor(log(1 - q * (1 - t_mul)) / log(t_mul)),
                f = (q - (1 - t_mul**i) / (1 - t_mul)) / t_mul**i.
    alpha (the floor, as a fraction of learning_rate) is not scaled by m_mul.
    """
    _learning_rate(learning_rate)
    _step(global_step)
    _positive("first_decay_steps", first_decay_steps)
    _real("t_mul", t_mul, "a number >= 1", _is_real(t_mul) and t_mul >= 1)
    _non_negative("m_mul", m_mul)
    _real("alpha", alpha, "a number in [0, 1]", _is_real(alpha) and 0 <= alpha <= 1)
    fraction = global_step / first_decay_steps
    if t_mul == 1.0:
        i_restart = math.floor(fraction)
        fraction -= i_restart
    else:
        i_restart = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
        sum_r = (1.0 - t_mul**i_restart) / (1.0 - t_mul)
        fraction = (fraction - sum_r) / t_mul**i_restart
    cosine_decayed = 0.5 * m_mul**i_restart * (1.0 + math.cos(math.pi * fraction))
    return learning_rate * ((1 - alpha) * cosine_decayed + alpha)


def linear_cosine_decay(
    learning_rate: float,
    global_step: float,
    decay_steps: float,
    num_periods: float = 0.5,
    alpha: float = 0.0,
    beta: float = 0.001,
) -> float:
    """lr = learning_rate * ((alpha + (D - s) / D) * 0.5 * (1 + cos(2 pi num_periods s / D)) + beta)

    with s = min(global_step, D), D = decay_steps.
    """
    _learning_rate(learning_rate)
    _step(global_step)
    _positive("decay_steps", decay_steps)
    _non_negative("num_periods", num_periods)
    _non_negative("alpha", alpha)
    _non_negative("beta", beta)
    s = min(global_step, decay_steps)
    linear_decayed = (decay_steps - s) / decay_steps
    fraction = 2.0 * num_periods * (s / decay_steps)
    cosine_decayed = 0.5 * (1.0 + math.cos(math.pi * fraction))
    return learning_rate * ((alpha + linear_decayed) * cosine_decayed + beta)
