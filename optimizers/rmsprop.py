"""RMSprop (Hinton's lecture 6e) in torch's form: eps outside the sqrt, lr outside the momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    Optimizer,
    ParamsT,
    check_non_negative,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
)


class RMSprop(Optimizer):
    r"""RMSprop, identical to ``torch.optim.RMSprop``.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2 \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ with }
        \bar g_t = \alpha\bar g_{t-1} + (1-\alpha) g_t \text{ if centered, else }
        \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t,\quad \theta_t = \theta_{t-1} - \eta\, b_t
        \qquad(\theta_t = \theta_{t-1} - \eta\, g_t / d_t \text{ if } \mu = 0)

    All accumulators start at zero. Defaults: ``lr=1e-2, alpha=0.99, eps=1e-8,
    weight_decay=0, momentum=0, centered=False, maximize=False``. State: ``step``,
    ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered). torch has
    no ``fused`` RMSprop; this one has.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_non_negative("learning rate", lr)
        check_non_negative("epsilon value", eps)
        check_non_negative("momentum value", momentum)
        check_non_negative("weight_decay value", weight_decay)
        check_non_negative("alpha value", alpha)
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    fused_state = ("square_avg", "grad_avg", "momentum_buffer")
    sparse_error = "RMSprop does not support sparse gradients"

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_step(p, fused=fused)
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        if path == "fused":
            kernel = self._kernel(_rmsprop_kernel)
            hyper = (
                float(group["lr"]),
                group["alpha"],
                group["eps"],
                group["weight_decay"],
                group["momentum"],
            )
            for batch, grads in self._fused_batches(index, group):
                batch.increment_steps()
                kernel(
                    batch.params,
                    grads,
                    *batch.state,
                    self._hyper(index, batch.device, hyper),
                    group["weight_decay"] != 0,
                    group["momentum"] > 0,
                    group["centered"],
                    group["maximize"],
                )
            return
        lists: list[list[Any]] = [[], [], [], [], [], []]
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(self.sparse_error)
            self._init_state(p, group, fused=False)
            state = self.state[p]
            values = (
                p,
                p.grad,
                state["square_avg"],
                state.get("grad_avg"),
                state.get("momentum_buffer"),
                state["step"],
            )
            for target, value in zip(lists, values, strict=True):
                target.append(value)
        if not lists[0]:
            return
        update = _multi_tensor_rmsprop if path == "foreach" else _single_tensor_rmsprop
        update(
            *lists,
            lr=float(group["lr"]),
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
            maximize=group["maximize"],
        )


def _single_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        square_avg = square_avgs[i]
        state_steps[i] += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf = momentum_buffers[i]
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)


def _multi_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    lists = [params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps]
    for d_params, d_grads, d_sqs, d_gavgs, d_bufs, d_steps in group_by_device_and_dtype(lists):
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        increment_steps(d_steps)
        if weight_decay != 0:
            if maximize:
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
            torch._foreach_add_(d_params, d_bufs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(d_params, d_grads, avg, value=-lr)


def _rmsprop_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor] | None,
    momentum_buffers: list[Tensor] | None,
    hyper: Tensor,
    weight_decay_on: bool,
    momentum_on: bool,
    centered: bool,
    maximize: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel."""
    lr, alpha, eps, weight_decay, momentum = hyper.unbind()
    for i, (param, grad, square_avg) in enumerate(zip(params, grads, square_avgs, strict=True)):
        if maximize:
            grad = -grad
        if weight_decay_on:
            grad = grad + weight_decay * param
        square_avg.mul_(alpha).add_((1 - alpha) * grad * grad)
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg.add_((grad - grad_avg) * (1 - alpha))
            avg = (square_avg - grad_avg * grad_avg).sqrt() + eps
        else:
            avg = square_avg.sqrt() + eps
        if momentum_on:
            buf = momentum_buffers[i]
            buf.mul_(momentum).add_(grad / avg)
            param.add_(-lr * buf)
        else:
            param.add_(grad / avg * -lr)
