"""RMSprop (Tieleman & Hinton 2012) in torch's form: eps outside the root, lr outside momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _fused
from ._base import (
    Optimizer,
    ParamsT,
    add_,
    addcdiv_,
    check_lr,
    check_non_negative,
    default_to_foreach,
    foreach_add_,
    foreach_addcdiv_,
    increment_steps,
    new_step,
    run_lr,
    scalar,
    view_as_real,
    zeros_like,
)


class RMSprop(Optimizer):
    r"""RMSprop, identical to ``torch.optim.RMSprop`` (plus a ``fused`` path, which torch lacks).

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2 \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ with }
        \bar g_t = \alpha\bar g_{t-1} + (1-\alpha) g_t \text{ if centered, else }
        \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t,\quad \theta_t = \theta_{t-1} - \eta\, b_t
        \qquad(\theta_t = \theta_{t-1} - \eta\, g_t / d_t \text{ if } \mu = 0)

    All accumulators start at zero. State: ``step``, ``square_avg``, ``momentum_buffer``
    (momentum > 0) and ``grad_avg`` (centered), each created when its option is first on.
    """

    state_keys = ("square_avg", "grad_avg", "momentum_buffer", "step")
    sparse_error = "RMSprop does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative("epsilon value", eps)
        check_non_negative("momentum value", momentum)
        check_non_negative("weight_decay value", weight_decay)
        check_non_negative("alpha value", alpha)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if not state:
            state["step"] = new_step(p, group)
            state["square_avg"] = zeros_like(p)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = zeros_like(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = zeros_like(p)

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        rmsprop(
            params,
            grads,
            *states,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
            maximize=group["maximize"],
        )


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """Functional RMSprop: one step on the given lists, by the path the flags pick (both
    None: torch.optim's choice, the for-loop on CPU)."""
    lists = (params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps)
    options = dict(alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
    options.update(centered=centered, maximize=maximize)
    if fused:
        _fused.run(_multi_tensor_rmsprop, *lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_rmsprop(*lists, lr=lr, **options)
    else:
        _single_tensor_rmsprop(*lists, lr=lr, **options)


def _single_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        square_avg, grad_avg, buf = square_avgs[i], grad_avgs[i], momentum_buffers[i]
        state_steps[i] += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if torch.is_complex(param):
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            square_avg = torch.view_as_real(square_avg)
            grad_avg = torch.view_as_real(grad_avg) if centered else None
            buf = torch.view_as_real(buf) if momentum > 0 else None
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf.mul_(momentum).addcdiv_(grad, avg)
            add_(param, buf, -lr)
        else:
            addcdiv_(param, grad, avg, -lr)


def _multi_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    lr = scalar(lr)
    lists = [params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps]
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(lists)
    for (d_params, d_grads, d_sqs, d_gavgs, d_bufs, d_steps), _ in grouped.values():
        view_as_real(d_params, d_grads, d_sqs, d_gavgs, d_bufs)
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        increment_steps(d_steps)
        if weight_decay != 0:
            if maximize:  # (d_grads is already a copy)
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        torch._foreach_mul_(d_sqs, alpha)
        torch._foreach_addcmul_(d_sqs, d_grads, d_grads, value=1 - alpha)
        if centered:
            torch._foreach_lerp_(d_gavgs, d_grads, 1 - alpha)
            avg = torch._foreach_addcmul(d_sqs, d_gavgs, d_gavgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(d_sqs)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            torch._foreach_mul_(d_bufs, momentum)
            torch._foreach_addcdiv_(d_bufs, d_grads, avg)
            foreach_add_(d_params, d_bufs, -lr)
        else:
            foreach_addcdiv_(d_params, d_grads, avg, -lr)
