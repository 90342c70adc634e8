"""Resilient backpropagation, torch's iRprop- variant, with lr schedules applied as a multiplier."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    Optimizer,
    ParamsT,
    check_non_negative,
    group_with_indices,
    increment_steps,
    new_step,
)


class Rprop(Optimizer):
    r"""Rprop (iRprop-, as ``torch.optim.Rprop``), with the lr schedule as a step multiplier.

    .. math::
        s &= \operatorname{sign}(g_t\, g_{t-1}),\qquad
        \Delta_t = \operatorname{clamp}\big(\Delta_{t-1}\cdot
        \{\eta_+ \text{ if } s>0;\ \eta_- \text{ if } s<0;\ 1\},\ \Delta_{\min}, \Delta_{\max}\big)
        \\
        g_t &\leftarrow 0 \text{ where } s < 0,\qquad
        \theta_t = \theta_{t-1} - \operatorname{sign}(g_t)\,\Delta_t\,\frac{\eta_t}{\eta_0},
        \qquad g_{t-1} \leftarrow g_t

    with ``Delta_0 = eta_0`` (``g`` negated first if ``maximize``). Defaults: ``lr=1e-2,
    etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False``. State: ``step``, ``prev``,
    ``step_size`` as in torch, plus ``lr0`` (a float).

    Difference from torch: torch uses lr only to initialise ``step_size`` and ignores every
    later lr change, so an LR schedule has no effect. Here the step is multiplied by
    ``eta_t / eta_0``, where ``eta_0`` is fixed at the parameter's first step: the group's
    ``initial_lr`` when a scheduler has set one, else its lr then (a ratio of 1 if ``eta_0`` is
    0). ``step_size`` adapts exactly as in torch, so with a constant lr this is
    ``torch.optim.Rprop`` exactly.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_non_negative("learning rate", lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(
            lr=lr,
            etas=etas,
            step_sizes=step_sizes,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    fused_state = ("prev", "step_size")
    sparse_error = "Rprop does not support sparse gradients"

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        state = self.state[p]
        if len(state) == 0:
            lr0 = float(group.get("initial_lr", group["lr"]))
            state["step"] = new_step(p, fused=fused)
            state["prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step_size"] = torch.full_like(p.grad, lr0)
            state["lr0"] = lr0

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        lr = float(group["lr"])
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        if path == "fused":
            kernel = self._kernel(_rprop_kernel)
            for batch, grads in self._fused_batches(index, group):
                batch.increment_steps()
                lr0s = {s["lr0"] for s in batch.states}
                hyper = (etaminus, etaplus, step_size_min, step_size_max)
                ratios = None
                if len(lr0s) == 1:  # one lr_0: the schedule's multiplier is one float
                    hyper += (_ratio(lr, *lr0s),)
                else:
                    hyper += (0.0,)
                    per_param = [_ratio(lr, s["lr0"]) for s in batch.states]
                    ratios = self._hyper((index, "ratio"), batch.device, per_param)
                kernel(
                    batch.params,
                    grads,
                    *batch.state,
                    self._hyper(index, batch.device, hyper),
                    ratios,
                    group["maximize"],
                )
            return
        params, grads, prevs, step_sizes, steps, ratios = [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(self.sparse_error)
            self._init_state(p, group, fused=False)
            state = self.state[p]
            params.append(p)
            grads.append(p.grad)
            prevs.append(state["prev"])
            step_sizes.append(state["step_size"])
            steps.append(state["step"])
            ratios.append(_ratio(lr, state["lr0"]))
        if not params:
            return
        update = _multi_tensor_rprop if path == "foreach" else _single_tensor_rprop
        update(
            params,
            grads,
            prevs,
            step_sizes,
            steps,
            ratios,
            etaminus=etaminus,
            etaplus=etaplus,
            step_size_min=step_size_min,
            step_size_max=step_size_max,
            maximize=group["maximize"],
        )


def _ratio(lr: float, lr0: float) -> float:
    """The schedule's multiplier lr_t / lr_0 (1 when lr_0 is 0)."""
    return lr / lr0 if lr0 != 0 else 1.0


def _single_tensor_rprop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    state_steps: list[Tensor],
    ratios: list[float],
    *,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        prev, step_size = prevs[i], step_sizes[i]
        state_steps[i] += 1
        sign = grad.mul(prev).sign()
        sign[sign.gt(0)] = etaplus
        sign[sign.lt(0)] = etaminus
        sign[sign.eq(0)] = 1
        step_size.mul_(sign).clamp_(step_size_min, step_size_max)
        grad = grad.clone(memory_format=torch.preserve_format)
        grad[sign.eq(etaminus)] = 0
        param.addcmul_(grad.sign(), step_size, value=-ratios[i])
        prev.copy_(grad)


def _multi_tensor_rprop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    state_steps: list[Tensor],
    ratios: list[float],
    *,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    maximize: bool,
) -> None:
    for (d_params, d_grads, d_prevs, d_sizes, d_steps), indices in group_with_indices(
        [params, grads, prevs, step_sizes, state_steps]
    ):
        increment_steps(d_steps)
        signs = torch._foreach_mul(d_grads, d_prevs)
        if maximize:
            torch._foreach_neg_(signs)
        # prev takes the (negated) gradient now; it is zeroed below where the sign flipped
        torch._foreach_copy_(d_prevs, d_grads)
        if maximize:
            torch._foreach_neg_(d_prevs)
        torch._foreach_sign_(signs)
        for sign in signs:
            sign[sign.gt(0)] = etaplus
            sign[sign.lt(0)] = etaminus
            sign[sign.eq(0)] = 1
        torch._foreach_mul_(d_sizes, signs)
        for size in d_sizes:
            size.clamp_(step_size_min, step_size_max)
        for prev, sign in zip(d_prevs, signs, strict=True):
            prev.copy_(torch.where(sign.eq(etaminus), 0, prev))
        del signs
        grad_signs = [prev.sign() for prev in d_prevs]
        minus_ratios = [-ratios[i] for i in indices]
        torch._foreach_addcmul_(d_params, grad_signs, d_sizes, minus_ratios)


def _rprop_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    hyper: Tensor,
    ratios: Tensor | None,
    maximize: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel.

    ``hyper`` is (etaminus, etaplus, step_size_min, step_size_max, lr_t / lr_0); ``ratios``
    holds lr_t / lr_0 per parameter when their lr_0 differ."""
    for i, (param, grad, prev, step_size) in enumerate(
        zip(params, grads, prevs, step_sizes, strict=True)
    ):
        # eta and the clamp bounds in the parameter's dtype, as torch's kernels round them
        etaminus, etaplus, size_min, size_max = hyper[:4].to(param.dtype).unbind()
        ratio = hyper[4] if ratios is None else ratios[i]
        if maximize:
            grad = -grad
        sign = (grad * prev).sign()
        factor = torch.where(sign > 0, etaplus, torch.where(sign < 0, etaminus, 1.0))
        step_size.copy_((step_size * factor).clamp(size_min, size_max))
        grad = torch.where(sign < 0, 0.0, grad)
        param.add_(grad.sign() * step_size * -ratio)
        prev.copy_(grad)
