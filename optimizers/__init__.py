"""Handwritten torch.optim optimizers and their registry.

>>> import optimizers
>>> optimizers.available()
['adadelta', 'adagrad', 'adam', 'momentum', 'nesterov', 'rmsprop', 'rprop', 'sgd']
>>> opt = optimizers.create("adam", model.parameters(), lr=3e-4)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch

from ._base import FLAGS, ParamsT, signature_defaults
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .momentum import Momentum
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "Momentum",
    "RMSprop",
    "Rprop",
    "available",
    "create",
    "defaults",
]

# name -> (class, keyword arguments the name fixes)
_REGISTRY: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "adadelta": (Adadelta, {}),
    "adagrad": (Adagrad, {}),
    "adam": (Adam, {}),
    "momentum": (Momentum, {}),
    "nesterov": (Momentum, {"nesterov": True}),
    "rmsprop": (RMSprop, {}),
    "rprop": (Rprop, {}),
    "sgd": (SGD, {}),
}


def available() -> list[str]:
    """The registered optimizer names, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), available(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown optimizer '{name}'; {hint}choose from {', '.join(available())}")
    return _REGISTRY[name]


def _accepted(name: str) -> list[str]:
    cls, fixed = _lookup(name)
    return [k for k in signature_defaults(cls) if k not in fixed]


def defaults(name: str) -> dict[str, Any]:
    """The constructor defaults of optimizer ``name`` (hyperparameters only; the switches
    ``foreach``, ``fused``, ``capturable``, ``differentiable`` are left out), e.g.
    ``{"lr": 1e-3, "betas": (0.9, 0.999), ...}``."""
    cls, fixed = _lookup(name)
    values = {k: v for k, v in signature_defaults(cls).items() if k not in FLAGS}
    values.update(fixed)
    return values


def create(name: str, params: ParamsT, **kwargs: Any) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``params``, configured by ``kwargs`` (constructor arguments).

    Raises ValueError for an unknown name or keyword (with a close match when there is one),
    and the constructor's ValueError for a bad value.
    """
    cls, fixed = _lookup(name)
    accepted = _accepted(name)
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"optimizer '{name}' does not accept '{key}'; {hint}"
                f"it accepts {', '.join(accepted)}"
            )
    factory: Callable[..., torch.optim.Optimizer] = cls
    return factory(params, **fixed, **kwargs)
