"""Stochastic gradient descent with torch's momentum form (the buffer starts at the gradient)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Optimizer, ParamsT, check_non_negative, group_with_indices


class SGD(Optimizer):
    r"""SGD, identical to ``torch.optim.SGD`` (including its momentum form).

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        b_1 &= g_1,\qquad b_t = \mu b_{t-1} + (1-\tau) g_t \quad(\text{only if } \mu \ne 0) \\
        \theta_t &= \theta_{t-1} - \eta_t\,(g_t + \mu b_t \text{ if nesterov, else } b_t)

    (``g_t`` itself when ``momentum=0``). Defaults: ``lr=1e-3, momentum=0, dampening=0,
    weight_decay=0, nesterov=False, maximize=False``. State: ``momentum_buffer`` only when
    ``momentum != 0``; no ``step``. The buffer accumulates raw gradients and the *current*
    lr scales it, so a schedule rescales the whole velocity; see :class:`Momentum` for the
    classical form that keeps each gradient's rate.
    """

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
        fused: bool | None = None,
    ) -> None:
        check_non_negative("learning rate", lr)
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
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)

    fused_state = ("momentum_buffer",)

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        # fused: a fresh buffer is zeros, and its first update uses a dampening factor of 1
        if fused and group["momentum"] != 0 and "momentum_buffer" not in self.state[p]:
            self.state[p]["momentum_buffer"] = torch.zeros_like(
                p, memory_format=torch.preserve_format
            )

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        momentum_on = group["momentum"] != 0
        if path == "fused":
            lr = float(group["lr"])
            kernel = self._kernel(_sgd_kernel)
            damped = 1.0 - group["dampening"]
            for batch, grads in self._fused_batches(index, group):
                device = batch.device
                # b_1 = g_1 is mu * 0 + 1 * g_1: a fresh buffer takes the gradient undamped
                damping, factors = damped, None
                if batch.fresh is not None:  # the batch's first step
                    per_param = [1.0 if f else damped for f in batch.fresh]
                    if len(set(per_param)) == 1:
                        damping = per_param[0]
                    else:
                        factors = self._hyper((index, "damp"), device, per_param)
                    batch.fresh = None
                hyper = (lr, group["momentum"], group["weight_decay"], damping)
                kernel(
                    batch.params,
                    grads,
                    *batch.state,
                    self._hyper(index, device, hyper),
                    factors,
                    momentum_on,
                    group["weight_decay"] != 0,
                    group["nesterov"],
                    group["maximize"],
                )
            return
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            if momentum_on:
                bufs.append(self.state[p].get("momentum_buffer"))
        if not params:
            return
        update = _multi_tensor_sgd if path == "foreach" else _single_tensor_sgd
        update(
            params,
            grads,
            bufs if momentum_on else [None] * len(params),
            lr=float(group["lr"]),
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if momentum_on:
            for p, buf in zip(params, bufs, strict=True):
                self.state[p]["momentum_buffer"] = buf


def _single_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
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
                buf = torch.clone(grad).detach()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)


def _multi_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for (d_params, d_grads, d_bufs), indices in group_with_indices(
        [params, grads, momentum_buffers]
    ):
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if weight_decay != 0:
            if maximize:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        if momentum != 0:
            if any(b is None for b in d_bufs):
                bufs = []
                for i, buf in enumerate(d_bufs):
                    if buf is None:
                        buf = torch.clone(d_grads[i]).detach()
                        momentum_buffers[indices[i]] = buf
                    else:
                        buf.mul_(momentum).add_(d_grads[i], alpha=1 - dampening)
                    bufs.append(buf)
            else:
                bufs = list(d_bufs)
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, d_grads, alpha=1 - dampening)
            if nesterov:
                torch._foreach_add_(d_grads, bufs, alpha=momentum)
            else:
                d_grads = bufs
        torch._foreach_add_(d_params, d_grads, alpha=-lr)


def _sgd_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    hyper: Tensor,
    factors: Tensor | None,
    momentum_on: bool,
    weight_decay_on: bool,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel.

    ``hyper`` is (lr, momentum, weight_decay, 1 - dampening); ``factors`` replaces the last
    per parameter on the step that creates buffers (1 for a fresh one)."""
    lr, momentum, weight_decay, damped = hyper.unbind()
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        if maximize:
            grad = -grad
        if weight_decay_on:
            grad = grad + weight_decay * param
        if momentum_on:
            buf = momentum_buffers[i]
            buf.mul_(momentum).add_((damped if factors is None else factors[i]) * grad)
            grad = grad + momentum * buf if nesterov else buf
        param.add_(-lr * grad)
