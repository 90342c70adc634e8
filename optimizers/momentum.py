"""Classical momentum (Sutskever et al. 2013 form), optionally Nesterov's accelerated gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Optimizer, ParamsT, check_non_negative, group_by_device_and_dtype


class Momentum(Optimizer):
    r"""Classical momentum: the velocity holds lr-scaled gradients.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        v_t &= \mu v_{t-1} - \eta_t g_t \qquad (v_0 = 0) \\
        \theta_t &= \theta_{t-1} + v_t
        \qquad\text{or, with nesterov:}\qquad \theta_t = \theta_{t-1} + \mu v_t - \eta_t g_t

    (the nesterov line is Sutskever's accelerated gradient in its usual reparametrised form).
    Defaults: ``lr=1e-3, momentum=0.9, weight_decay=0, nesterov=False, maximize=False``.
    State: ``velocity`` (like the parameter); no ``step``.

    Difference from ``torch.optim.SGD(momentum=mu)``: with a constant lr both give the same
    trajectory (``v_t = -lr * b_t``, equal up to rounding). When a schedule changes lr, torch
    multiplies its whole buffer of raw gradients by the *current* lr, so an lr drop slows the
    parameters at once; here each gradient keeps the lr at which it was seen, so after a drop
    the velocity decays geometrically (rate ``mu``) from its old size.
    """

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
        fused: bool | None = None,
    ) -> None:
        check_non_negative("learning rate", lr)
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
            fused=fused,
        )
        super().__init__(params, defaults)

    fused_state = ("velocity",)

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        state = self.state[p]
        if len(state) == 0:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        if path == "fused":
            kernel = self._kernel(_momentum_kernel)
            hyper = (float(group["lr"]), group["momentum"], group["weight_decay"])
            for batch, grads in self._fused_batches(index, group):
                (velocities,) = batch.state
                kernel(
                    batch.params,
                    grads,
                    velocities,
                    self._hyper(index, batch.device, hyper),
                    group["weight_decay"] != 0,
                    group["nesterov"],
                    group["maximize"],
                )
            return
        params, grads, velocities = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            self._init_state(p, group, fused=False)
            params.append(p)
            grads.append(p.grad)
            velocities.append(self.state[p]["velocity"])
        if not params:
            return
        update = _multi_tensor_momentum if path == "foreach" else _single_tensor_momentum
        update(
            params,
            grads,
            velocities,
            lr=float(group["lr"]),
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )


def _single_tensor_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for param, grad, velocity in zip(params, grads, velocities, strict=True):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        velocity.mul_(momentum).add_(grad, alpha=-lr)
        if nesterov:
            param.add_(velocity, alpha=momentum).add_(grad, alpha=-lr)
        else:
            param.add_(velocity)


def _multi_tensor_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for d_params, d_grads, d_vels in group_by_device_and_dtype([params, grads, velocities]):
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if weight_decay != 0:
            if maximize:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        torch._foreach_mul_(d_vels, momentum)
        torch._foreach_add_(d_vels, d_grads, alpha=-lr)
        if nesterov:
            torch._foreach_add_(d_params, d_vels, alpha=momentum)
            torch._foreach_add_(d_params, d_grads, alpha=-lr)
        else:
            torch._foreach_add_(d_params, d_vels)


def _momentum_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    hyper: Tensor,
    weight_decay_on: bool,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel."""
    lr, momentum, weight_decay = hyper.unbind()
    for param, grad, velocity in zip(params, grads, velocities, strict=True):
        if maximize:
            grad = -grad
        if weight_decay_on:
            grad = grad + weight_decay * param
        velocity.mul_(momentum).add_(-lr * grad)
        if nesterov:
            param.add_(momentum * velocity).add_(-lr * grad)
        else:
            param.add_(velocity)
