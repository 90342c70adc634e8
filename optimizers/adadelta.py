"""Adadelta (Zeiler 2012) with torch's lr factor and eps inside both square roots."""

from __future__ import annotations

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
    increment_steps,
    new_step,
    run_lr,
    scalar,
    view_as_real,
    zeros_like,
)


class Adadelta(Optimizer):
    r"""Adadelta, identical to ``torch.optim.Adadelta`` (plus a ``fused`` path, which torch
    lacks).

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        v_t = \rho v_{t-1} + (1-\rho) g_t^2 \\
        \Delta x_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,\qquad
        u_t = \rho u_{t-1} + (1-\rho)\Delta x_t^2,\qquad
        \theta_t = \theta_{t-1} - \eta\,\Delta x_t

    ``u_0 = v_0 = 0``. State: ``step``, ``square_avg`` (v), ``acc_delta`` (u).
    """

    state_keys = ("square_avg", "acc_delta", "step")
    sparse_error = "Adadelta does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_non_negative("epsilon value", eps)
        check_non_negative("weight_decay value", weight_decay)
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if not state:
            state["step"] = new_step(p, group)
            state["square_avg"] = zeros_like(p)
            state["acc_delta"] = zeros_like(p)

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        adadelta(
            params,
            grads,
            *states,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Functional Adadelta: one step on the given lists, by the path the flags pick (both
    None: torch.optim's choice, the for-loop on CPU)."""
    lists = (params, grads, square_avgs, acc_deltas, state_steps)
    options = dict(rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    if fused:
        _fused.run(_multi_tensor_adadelta, *lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_adadelta(*lists, lr=lr, **options)
    else:
        _single_tensor_adadelta(*lists, lr=lr, **options)


def _single_tensor_adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for param, grad, square_avg, acc_delta, step in zip(
        params, grads, square_avgs, acc_deltas, state_steps, strict=True
    ):
        step += 1
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if torch.is_complex(param):
            square_avg, acc_delta = torch.view_as_real(square_avg), torch.view_as_real(acc_delta)
            grad = torch.view_as_real(grad)
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        if torch.is_complex(param):
            delta = torch.view_as_complex(delta)
        add_(param, delta, -lr)


def _multi_tensor_adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    lr = scalar(lr)
    lists = [params, grads, square_avgs, acc_deltas, state_steps]
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(lists)
    for (d_params, d_grads, d_sqs, d_accs, d_steps), _ in grouped.values():
        view_as_real(d_params, d_grads, d_sqs, d_accs)
        increment_steps(d_steps)
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if weight_decay != 0:
            if maximize:  # (d_grads is already a copy)
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        torch._foreach_mul_(d_sqs, rho)
        torch._foreach_addcmul_(d_sqs, d_grads, d_grads, value=1 - rho)
        std = torch._foreach_add(d_sqs, eps)
        torch._foreach_sqrt_(std)
        deltas = torch._foreach_add(d_accs, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, d_grads)
        torch._foreach_mul_(d_accs, rho)
        torch._foreach_addcmul_(d_accs, deltas, deltas, value=1 - rho)
        foreach_add_(d_params, deltas, -lr)
