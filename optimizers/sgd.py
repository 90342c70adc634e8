"""Stochastic gradient descent with torch's momentum form (the buffer starts at the gradient)."""

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
    run_lr,
    scalar,
)


class SGD(Optimizer):
    r"""SGD, identical to ``torch.optim.SGD`` (including its momentum form).

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        b_1 &= g_1,\qquad b_t = \mu b_{t-1} + (1-\tau) g_t \quad(\text{only if } \mu \ne 0) \\
        \theta_t &= \theta_{t-1} - \eta_t\,(g_t + \mu b_t \text{ if nesterov, else } b_t)

    (``g_t`` itself when ``momentum=0``). State: ``momentum_buffer`` only when
    ``momentum != 0``; no ``step``. The buffer accumulates raw gradients and the *current* lr
    scales it, so a schedule rescales the whole velocity; see :class:`Momentum` for the
    classical form that keeps each gradient's rate. Sparse gradients take the for-loop.
    """

    state_keys = ("momentum_buffer",)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
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
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        (buffers,) = states
        new = [i for i, buf in enumerate(buffers) if buf is None]
        sgd(
            params,
            grads,
            buffers,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if group["momentum"] != 0:  # the buffers created from first gradients
            for i in new:
                self.state[params[i]]["momentum_buffer"] = buffers[i]


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """Functional SGD: one step on the given lists (a ``None`` buffer is created from the
    gradient and stored in ``momentum_buffers``), by the path the flags pick."""
    lists = (params, grads, momentum_buffers)
    options = dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    options.update(nesterov=nesterov, maximize=maximize)
    if fused:
        _fused.run(_multi_tensor_sgd, *lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_sgd(*lists, lr=lr, **options)
    else:
        _single_tensor_sgd(*lists, lr=lr, **options)


def _single_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = momentum_buffers[i] = grad.detach().clone()
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        add_(param, grad, -lr)


def _multi_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    lr = scalar(lr)
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffers], with_indices=True
    )
    for (d_params, d_grads, d_bufs), indices in grouped.values():
        has_sparse_grad = any(g.is_sparse for g in d_grads)
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if weight_decay != 0:
            if maximize:  # (d_grads is already a copy)
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        if momentum != 0:
            if all(buf is not None for buf in d_bufs):
                torch._foreach_mul_(d_bufs, momentum)
                torch._foreach_add_(d_bufs, d_grads, alpha=1 - dampening)
            else:  # b_1 = g_1 for the new ones
                for i, buf in enumerate(d_bufs):
                    if buf is None:
                        d_bufs[i] = momentum_buffers[indices[i]] = d_grads[i].detach().clone()
                    else:
                        buf.mul_(momentum).add_(d_grads[i], alpha=1 - dampening)
            if nesterov:
                torch._foreach_add_(d_grads, d_bufs, alpha=momentum)
            else:
                d_grads = d_bufs
        if has_sparse_grad:
            for param, grad in zip(d_params, d_grads, strict=True):
                add_(param, grad, -lr)
        else:
            foreach_add_(d_params, d_grads, -lr)
