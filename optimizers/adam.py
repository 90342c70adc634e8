"""Adam (Kingma & Ba 2015, Algorithm 1 with torch's eps placement), optionally AMSGrad/AdamW."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _fused
from ._base import (
    Optimizer,
    ParamsT,
    addcdiv_,
    check_lr,
    check_non_negative,
    default_to_foreach,
    foreach_addcdiv_,
    foreach_mul_,
    increment_steps,
    mul_,
    new_step,
    per_tensor,
    run_lr,
    scalar,
    view_as_real,
    zeros_like,
)


class Adam(Optimizer):
    r"""Adam, identical to ``torch.optim.Adam`` (and, with ``decoupled_weight_decay``, AdamW).

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) \;(+\lambda\theta_{t-1}\text{ if coupled decay}),\qquad
        \theta_{t-1} \leftarrow \theta_{t-1}(1-\eta\lambda)\text{ if decoupled (AdamW)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2
        \qquad(\hat v_t = \max(\hat v_{t-1}, v_t)\text{ if amsgrad}) \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    ``t`` counts this parameter's steps (1 on its first). State: ``step`` (0-dim float),
    ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq`` (created when amsgrad
    is first on). Tensor betas are validated as torch does and read as floats.
    """

    state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
    sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_lr(lr)
        check_non_negative("epsilon value", eps)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        check_non_negative("weight_decay value", weight_decay)
        if not (
            all(isinstance(b, float) for b in betas) or all(isinstance(b, Tensor) for b in betas)
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        for i, beta in enumerate(betas):
            if isinstance(beta, Tensor) and beta.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if not state:
            state["step"] = new_step(p, group)
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = zeros_like(p)

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            *states,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """Functional Adam: one step on the given lists, by the path the flags pick (both None:
    torch.optim's choice, the for-loop on CPU)."""
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
    options = dict(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    options.update(amsgrad=amsgrad, maximize=maximize)
    options.update(decoupled_weight_decay=decoupled_weight_decay)
    if fused:
        _fused.run(_multi_tensor_adam, *lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_adam(*lists, lr=lr, **options)
    else:
        _single_tensor_adam(*lists, lr=lr, **options)


def _single_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq, max_exp_avg_sq = exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i]
        state_steps[i] += 1
        if weight_decay != 0:
            if decoupled_weight_decay:
                mul_(param, 1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        if torch.is_complex(param):
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            exp_avg, exp_avg_sq = torch.view_as_real(exp_avg), torch.view_as_real(exp_avg_sq)
            if amsgrad:
                max_exp_avg_sq = torch.view_as_real(max_exp_avg_sq)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = state_steps[i].item()
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if amsgrad:
            torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        addcdiv_(param, exp_avg, denom, -step_size)


def _multi_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    lr = scalar(lr)
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps]
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(lists)
    for (d_params, d_grads, d_avgs, d_sqs, d_max, d_steps), _ in grouped.values():
        view_as_real(d_params, d_grads, d_avgs, d_sqs, d_max)
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        increment_steps(d_steps)
        if weight_decay != 0:
            if decoupled_weight_decay:
                foreach_mul_(d_params, 1 - lr * weight_decay)
            elif maximize:  # (d_grads is already a copy)
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        torch._foreach_lerp_(d_avgs, d_grads, 1 - beta1)
        torch._foreach_mul_(d_sqs, beta2)
        torch._foreach_addcmul_(d_sqs, d_grads, d_grads, 1 - beta2)
        del d_grads
        steps = [scalar(s) for s in d_steps]
        step_sizes = per_tensor([-lr / (1 - beta1**s) for s in steps])
        bias_corrections2_sqrt = per_tensor([(1 - beta2**s) ** 0.5 for s in steps])
        if amsgrad:
            torch._foreach_maximum_(d_max, d_sqs)
            denom = torch._foreach_sqrt(d_max)
        else:
            denom = torch._foreach_sqrt(d_sqs)
        torch._foreach_div_(denom, bias_corrections2_sqrt)
        torch._foreach_add_(denom, eps)
        foreach_addcdiv_(d_params, d_avgs, denom, step_sizes)
