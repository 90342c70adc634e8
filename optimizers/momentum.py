"""Classical momentum (Sutskever et al. 2013 form), optionally Nesterov's accelerated gradient."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from . import _fused
from ._base import (
    Optimizer,
    ParamsT,
    add_,
    check_lr,
    check_non_negative,
    default_to_foreach,
    foreach_add_,
    run_lr,
    scalar,
    zeros_like,
)


class Momentum(Optimizer):
    r"""Classical momentum: the velocity holds lr-scaled gradients.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        v_t &= \mu v_{t-1} - \eta_t g_t \qquad (v_0 = 0) \\
        \theta_t &= \theta_{t-1} + v_t
        \qquad\text{or, with nesterov:}\qquad \theta_t = \theta_{t-1} + \mu v_t - \eta_t g_t

    State: ``velocity`` (like the parameter); no ``step``. With a constant lr this is
    ``torch.optim.SGD(momentum=mu)`` up to rounding (``v_t = -lr * b_t``). When a schedule
    changes lr, torch rescales its whole buffer of raw gradients by the *current* lr; here
    each gradient keeps the lr at which it was seen, so after an lr drop the velocity decays
    geometrically from its old size.

    ``load_state_dict`` also takes a ``torch.optim.SGD`` checkpoint (``dampening=0``): its
    buffer ``b`` becomes ``velocity = -lr * b`` at the group's saved lr, which continues the
    run exactly as torch would at that lr.
    """

    state_keys = ("velocity",)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative("momentum value", momentum)
        check_non_negative("weight_decay value", weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if "velocity" not in state:
            state["velocity"] = zeros_like(p)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(from_torch_sgd(state_dict))

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        momentum(
            params,
            grads,
            *states,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )


def from_torch_sgd(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A ``torch.optim.SGD`` state dict as ours (others unchanged): buffer ``b`` of a group
    with lr ``eta`` becomes ``velocity = -eta * b``; ``dampening`` must be 0."""
    groups = state_dict["param_groups"]
    if not any("dampening" in g for g in groups):
        return state_dict
    for group in groups:
        if group.get("dampening", 0) != 0 and group.get("momentum", 0) != 0:
            raise ValueError(
                f"cannot load a torch.optim.SGD state with dampening={group['dampening']} "
                "into Momentum: classical momentum has no dampening"
            )
    state_dict = copy.copy(state_dict)
    lrs = {i: float(g["lr"]) for g in groups for i in g["params"]}
    state_dict["param_groups"] = [{k: v for k, v in g.items() if k != "dampening"} for g in groups]
    state_dict["state"] = {
        i: ({"velocity": -lrs[i] * s["momentum_buffer"]} if "momentum_buffer" in s else s)
        for i, s in state_dict["state"].items()
    }
    return state_dict


def momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """Functional classical momentum: one step on the given lists, by the path the flags
    pick (both None: torch.optim's choice, the for-loop on CPU; sparse gradients: the loop)."""
    lists = (params, grads, velocities)
    options = dict(momentum=momentum, weight_decay=weight_decay)
    options.update(nesterov=nesterov, maximize=maximize)
    if fused:
        _fused.run(_multi_tensor_momentum, *lists, lr=lr, **options)
    elif any(g.is_sparse for g in grads):
        _single_tensor_momentum(*lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_momentum(*lists, lr=lr, **options)
    else:
        _single_tensor_momentum(*lists, lr=lr, **options)


def _single_tensor_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for param, grad, velocity in zip(params, grads, velocities, strict=True):
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        add_(velocity.mul_(momentum), grad, -lr)
        if nesterov:
            add_(param.add_(velocity, alpha=momentum), grad, -lr)
        else:
            param.add_(velocity)


def _multi_tensor_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    lr = scalar(lr)
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype([params, grads, velocities])
    for (d_params, d_grads, d_velocities), _ in grouped.values():
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if weight_decay != 0:
            if maximize:  # (d_grads is already a copy)
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        torch._foreach_mul_(d_velocities, momentum)
        foreach_add_(d_velocities, d_grads, -lr)
        if nesterov:
            torch._foreach_add_(d_params, d_velocities, alpha=momentum)
            foreach_add_(d_params, d_grads, -lr)
        else:
            torch._foreach_add_(d_params, d_velocities)
