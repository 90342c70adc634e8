"""Adadelta (Zeiler 2012) with torch's lr factor and eps inside both square roots."""

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


class Adadelta(Optimizer):
    r"""Adadelta, identical to ``torch.optim.Adadelta``.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        v_t = \rho v_{t-1} + (1-\rho) g_t^2 \\
        \Delta x_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,\qquad
        u_t = \rho u_{t-1} + (1-\rho)\Delta x_t^2,\qquad
        \theta_t = \theta_{t-1} - \eta\,\Delta x_t

    ``u_0 = v_0 = 0``. Defaults: ``lr=1.0, rho=0.9, eps=1e-6, weight_decay=0,
    maximize=False``. State: ``step``, ``square_avg`` (v), ``acc_delta`` (u). torch has no
    ``fused`` Adadelta; this one has.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_non_negative("learning rate", lr)
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
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    fused_state = ("square_avg", "acc_delta")
    sparse_error = "Adadelta does not support sparse gradients"

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_step(p, fused=fused)
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        if path == "fused":
            kernel = self._kernel(_adadelta_kernel)
            hyper = (float(group["lr"]), group["rho"], group["eps"], group["weight_decay"])
            for batch, grads in self._fused_batches(index, group):
                batch.increment_steps()
                kernel(
                    batch.params,
                    grads,
                    *batch.state,
                    self._hyper(index, batch.device, hyper),
                    group["weight_decay"] != 0,
                    group["maximize"],
                )
            return
        params, grads, square_avgs, acc_deltas, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(self.sparse_error)
            self._init_state(p, group, fused=False)
            state = self.state[p]
            params.append(p)
            grads.append(p.grad)
            square_avgs.append(state["square_avg"])
            acc_deltas.append(state["acc_delta"])
            steps.append(state["step"])
        if not params:
            return
        update = _multi_tensor_adadelta if path == "foreach" else _single_tensor_adadelta
        update(
            params,
            grads,
            square_avgs,
            acc_deltas,
            steps,
            lr=float(group["lr"]),
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def _single_tensor_adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
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
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(delta, alpha=-lr)


def _multi_tensor_adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    lists = [params, grads, square_avgs, acc_deltas, state_steps]
    for d_params, d_grads, d_sqs, d_accs, d_steps in group_by_device_and_dtype(lists):
        increment_steps(d_steps)
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if weight_decay != 0:
            if maximize:
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
        torch._foreach_add_(d_params, deltas, alpha=-lr)


def _adadelta_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    hyper: Tensor,
    weight_decay_on: bool,
    maximize: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel."""
    lr, rho, eps, weight_decay = hyper.unbind()
    for param, grad, square_avg, acc_delta in zip(
        params, grads, square_avgs, acc_deltas, strict=True
    ):
        if maximize:
            grad = -grad
        if weight_decay_on:
            grad = grad + weight_decay * param
        square_avg.mul_(rho).add_((1 - rho) * grad * grad)
        delta = (acc_delta + eps).sqrt() / (square_avg + eps).sqrt() * grad
        acc_delta.mul_(rho).add_((1 - rho) * delta * delta)
        param.add_(-lr * delta)
