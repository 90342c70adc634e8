"""Thin `torch.optim.lr_scheduler.LRScheduler` adapters over `schedulers.functional`.

Each class is named after TensorFlow's schedule class and takes the optimizer, then the function's
arguments without `learning_rate` and `global_step`: the initial lr is each param group's
`initial_lr` (its `lr` when the scheduler is created) and the step is `last_epoch`.

The lr at `last_epoch = k` is always the closed form `f(initial_lr, k)`, never the previous lr times
a factor, so `get_lr()` (used by `step()`) and `_get_closed_form_lr()` (used by `step(epoch)` and by
`SequentialLR` at its milestones) return the same values, and resuming gives exactly the
uninterrupted run. Resume either by `load_state_dict(saved)` or, like every torch scheduler, by
constructing with `last_epoch=saved_last_epoch - 1` (the constructor takes one step).

TensorFlow's step semantics: the scheduler starts at step 0, so the first `optimizer.step()` uses
`f(initial_lr, 0)`; then call `scheduler.step()` once after every `optimizer.step()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from . import functional as F

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
]


class _ClosedFormLR(LRScheduler):
    """Base class: group i's lr at last_epoch k is `self._lr(initial_lr_i, i, k)`."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        # Validate the arguments before the base class touches the optimizer's param groups.
        for i in range(len(optimizer.param_groups)):
            self._lr(1.0, i, 0)
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        raise NotImplementedError

    def _lrs_at(self, step: int) -> list[Any]:
        return [self._lr(base, i, step) for i, base in enumerate(self.base_lrs)]

    def get_lr(self) -> list[Any]:
        """The closed form at `last_epoch` for every param group (what `step()` writes)."""
        if not getattr(self, "_get_lr_called_within_step", False):
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use "
                "`get_last_lr()`.",
                UserWarning,
                stacklevel=2,
            )
        return self._lrs_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[Any]:
        """The same closed form, for `step(epoch)` and `SequentialLR`."""
        return self._lrs_at(self.last_epoch)


def _per_group(name: str, value: Any, n_groups: int, is_one: Any) -> list[Any] | None:
    """None if `value` is one setting for every group, else the list of per-group settings."""
    if is_one(value):
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = list(value)
        if all(is_one(v) for v in items) and items:
            if len(items) != n_groups:
                raise ValueError(
                    f"{name} has {len(items)} per-group entries but the optimizer has "
                    f"{n_groups} param groups; give one {name} for all groups or one per group"
                )
            return items
    return None  # let the functional form reject it with its own message


class Constant(_ClosedFormLR):
    """lr_k = initial_lr: no decay (the registry's `constant`; composes with warm-up)."""

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return initial_lr


class _RateDecay(_ClosedFormLR):
    """Base of the three TF decays with (decay_steps, decay_rate, staircase): `_decay` is the
    functional form, called as `_decay(initial_lr, k, decay_steps, decay_rate, staircase)`."""

    _decay: Any

    def __init__(
        self,
        optimizer: Optimizer,
        decay_steps: float,
        decay_rate: float,
        staircase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        self.decay_steps, self.decay_rate, self.staircase = decay_steps, decay_rate, staircase
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return self._decay(initial_lr, step, self.decay_steps, self.decay_rate, self.staircase)


class ExponentialDecay(_RateDecay):
    """lr_k = initial_lr * decay_rate ** (k / decay_steps), the exponent floored if staircase."""

    _decay = staticmethod(F.exponential_decay)


class PiecewiseConstantDecay(_ClosedFormLR):
    """lr_k = values[0] if k <= boundaries[0], values[i] if boundaries[i-1] < k <= boundaries[i],
    values[-1] after boundaries[-1] (a boundary step still uses the earlier value).

    `values` are absolute learning rates, as in TensorFlow: the groups' own lrs are not used.
    Several param groups: a flat `values` list gives every group the same values; to keep
    different lrs per group, pass one values list per param group, e.g.
    `values=[[0.1, 0.01], [1.0, 0.1]]` for two groups. (`schedulers.create("piecewise", ...)` builds
    such lists from each group's own lr.)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        boundaries: Sequence[float],
        values: Sequence[float] | Sequence[Sequence[float]],
        last_epoch: int = -1,
    ) -> None:
        self.boundaries = list(boundaries) if isinstance(boundaries, Sequence) else boundaries
        n_groups = len(getattr(optimizer, "param_groups", []))
        per_group = _per_group(
            "values",
            values,
            n_groups,
            lambda v: isinstance(v, Sequence) and not any(isinstance(x, Sequence) for x in v),
        )
        self.values = per_group if per_group is not None else [values] * n_groups
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return F.piecewise_constant(step, self.boundaries, self.values[group])


class PolynomialDecay(_ClosedFormLR):
    """lr_k = (initial_lr - end) * (1 - s / D) ** power + end, s = min(k, D), D = decay_steps;
    with cycle, s = k and D = decay_steps * ceil(k / decay_steps).

    `end_learning_rate` is absolute, as in TensorFlow; with several param groups it is the same for
    all of them, unless you pass one per group (a list).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        decay_steps: float,
        end_learning_rate: float | Sequence[float] = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        last_epoch: int = -1,
    ) -> None:
        n_groups = len(getattr(optimizer, "param_groups", []))
        per_group = _per_group(
            "end_learning_rate",
            end_learning_rate,
            n_groups,
            lambda v: not isinstance(v, Sequence),
        )
        self.decay_steps, self.power, self.cycle = decay_steps, power, cycle
        self.end_learning_rate = (
            per_group if per_group is not None else [end_learning_rate] * n_groups
        )
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return F.polynomial_decay(
            initial_lr,
            step,
            self.decay_steps,
            self.end_learning_rate[group],
            self.power,
            self.cycle,
        )


class NaturalExpDecay(_RateDecay):
    """lr_k = initial_lr * exp(-decay_rate * k / decay_steps), the quotient floored if staircase."""

    _decay = staticmethod(F.natural_exp_decay)


class InverseTimeDecay(_RateDecay):
    """lr_k = initial_lr / (1 + decay_rate * k / decay_steps), the quotient floored if staircase."""

    _decay = staticmethod(F.inverse_time_decay)


class CosineDecay(_ClosedFormLR):
    """lr_k = initial_lr * ((1 - alpha) * 0.5 * (1 + cos(pi * min(k, D) / D)) + alpha)."""

    def __init__(
        self,
        optimizer: Optimizer,
        decay_steps: float,
        alpha: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.decay_steps, self.alpha = decay_steps, alpha
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return F.cosine_decay(initial_lr, step, self.decay_steps, self.alpha)


class CosineDecayRestarts(_ClosedFormLR):
    """SGDR: lr_k = initial_lr * ((1 - alpha) * m_mul**i * 0.5 * (1 + cos(pi * f)) + alpha), cycle i
    lasting first_decay_steps * t_mul**i steps, f the fraction of it done at step k."""

    def __init__(
        self,
        optimizer: Optimizer,
        first_decay_steps: float,
        t_mul: float = 2.0,
        m_mul: float = 1.0,
        alpha: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.first_decay_steps, self.t_mul, self.m_mul, self.alpha = (
            first_decay_steps,
            t_mul,
            m_mul,
            alpha,
        )
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return F.cosine_decay_restarts(
            initial_lr, step, self.first_decay_steps, self.t_mul, self.m_mul, self.alpha
        )


class LinearCosineDecay(_ClosedFormLR):
    """lr_k = initial_lr * ((alpha + (D - s) / D) * 0.5 * (1 + cos(2 pi num_periods s / D)) + beta),
    s = min(k, D), D = decay_steps."""

    def __init__(
        self,
        optimizer: Optimizer,
        decay_steps: float,
        num_periods: float = 0.5,
        alpha: float = 0.0,
        beta: float = 0.001,
        last_epoch: int = -1,
    ) -> None:
        self.decay_steps, self.num_periods, self.alpha, self.beta = (
            decay_steps,
            num_periods,
            alpha,
            beta,
        )
        super().__init__(optimizer, last_epoch)

    def _lr(self, initial_lr: Any, group: int, step: int) -> Any:
        return F.linear_cosine_decay(
            initial_lr, step, self.decay_steps, self.num_periods, self.alpha, self.beta
        )
