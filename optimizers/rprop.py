"""Resilient backpropagation, torch's iRprop- variant, with lr schedules applied as a multiplier."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _fused
from ._base import (
    Optimizer,
    ParamsT,
    addcmul_,
    along,
    check_lr,
    default_to_foreach,
    foreach_addcmul_,
    increment_steps,
    new_step,
    run_lr,
    scalar,
    view_as_real,
    zeros_like,
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

    with ``Delta_0 = eta_0`` (``g`` negated first if ``maximize``). State: ``step``, ``prev``,
    ``step_size`` as in torch, plus ``lr0`` (a float). torch uses lr only to initialise
    ``step_size`` and ignores every later change, so a schedule has no effect on it. Here the
    step is multiplied by ``eta_t / eta_0``, where ``eta_0`` is fixed at the parameter's first
    step: the group's ``initial_lr`` when a scheduler has set one, else its lr then (a ratio of
    1 if ``eta_0`` is 0). With a constant lr this is ``torch.optim.Rprop`` exactly. A torch
    checkpoint (no ``lr0``) gets ``lr0`` by the same rule at its first step here, so it
    continues as torch would while the lr stays as saved.
    """

    state_keys = ("prev", "step_size", "step", "lr0")
    sparse_error = "Rprop does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(
            lr=lr,
            etas=etas,
            step_sizes=step_sizes,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        initial = group.get("initial_lr", group["lr"])
        if isinstance(initial, Tensor) and initial.numel() > 1:  # per-run lrs (see run_lr)
            lr0: float | Tensor = initial.detach().to(torch.float64).clone()
        else:
            lr0 = float(initial)
        if not state:
            state["step"] = new_step(p, group)
            state["prev"] = zeros_like(p)
            if isinstance(lr0, Tensor):
                step_size = zeros_like(p)
                real = torch.view_as_real(step_size) if torch.is_complex(p) else step_size
                real.add_(along(lr0, real))
                state["step_size"] = step_size
            else:
                value = complex(lr0, lr0) if torch.is_complex(p) else lr0
                state["step_size"] = torch.full_like(p, value, memory_format=torch.preserve_format)
        state.setdefault("lr0", lr0)

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        rprop(
            params,
            grads,
            *states,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            etaminus=etaminus,
            etaplus=etaplus,
            step_size_min=step_size_min,
            step_size_max=step_size_max,
            maximize=group["maximize"],
        )


def rprop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    state_steps: list[Tensor],
    lr0s: list[float],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    maximize: bool,
) -> None:
    """Functional Rprop: one step on the given lists (``lr0s``: each param's ``eta_0``), by
    the path the flags pick (both None: torch.optim's choice, the for-loop on CPU)."""
    lists = (params, grads, prevs, step_sizes, state_steps, lr0s)
    options = dict(etaminus=etaminus, etaplus=etaplus, maximize=maximize)
    options.update(step_size_min=step_size_min, step_size_max=step_size_max)
    if fused:
        _fused.run(_multi_tensor_rprop, *lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_rprop(*lists, lr=lr, **options)
    else:
        _single_tensor_rprop(*lists, lr=lr, **options)


def _ratio(lr: float | Tensor, lr0: float | Tensor) -> float | Tensor:
    """The schedule's multiplier lr_t / lr_0 (1 when lr_0 is 0); per run when either is a
    1-D tensor."""
    if isinstance(lr0, Tensor):
        return torch.where(lr0 != 0, lr / lr0, 1.0)
    if isinstance(lr, Tensor) and lr.dim() == 1:
        return lr / lr0 if lr0 != 0 else torch.ones_like(lr)
    return lr / lr0 if lr0 != 0 else 1.0


def _single_tensor_rprop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    state_steps: list[Tensor],
    lr0s: list[float],
    *,
    lr: float | Tensor,
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
        if torch.is_complex(param):
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            prev, step_size = torch.view_as_real(prev), torch.view_as_real(step_size)
        sign = grad.mul(prev).sign()
        sign[sign.gt(0)] = etaplus
        sign[sign.lt(0)] = etaminus
        sign[sign.eq(0)] = 1
        step_size.mul_(sign).clamp_(step_size_min, step_size_max)
        grad = grad.clone(memory_format=torch.preserve_format)
        grad[sign.eq(etaminus)] = 0
        addcmul_(param, grad.sign(), step_size, -_ratio(lr, lr0s[i]))
        prev.copy_(grad)


def _multi_tensor_rprop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    state_steps: list[Tensor],
    lr0s: list[float],
    *,
    lr: float | Tensor,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    maximize: bool,
) -> None:
    lr = scalar(lr)
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, prevs, step_sizes, state_steps], with_indices=True
    )
    for (d_params, d_grads, d_prevs, d_sizes, d_steps), indices in grouped.values():
        increment_steps(d_steps)
        view_as_real(d_params, d_grads, d_prevs, d_sizes)
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
        minus_ratios = [-_ratio(lr, lr0s[i]) for i in indices]
        foreach_addcmul_(d_params, grad_signs, d_sizes, minus_ratios)
