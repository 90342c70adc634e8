"""Adam (Kingma & Ba 2015, Algorithm 1 with torch's eps placement), optionally AMSGrad/AdamW."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._base import (
    FusedBatch,
    Optimizer,
    ParamsT,
    check_non_negative,
    group_by_device_and_dtype,
    increment_steps,
    new_step,
)


class Adam(Optimizer):
    r"""Adam, identical to ``torch.optim.Adam``.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) \;(+\lambda\theta_{t-1}\text{ if coupled decay}),\qquad
        \theta_{t-1} \leftarrow \theta_{t-1}(1-\eta\lambda)\text{ if decoupled (AdamW)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2
        \qquad(\hat v_t = \max(\hat v_{t-1}, v_t)\text{ if amsgrad}) \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    ``t`` counts this parameter's steps (1 on its first). Defaults: ``lr=1e-3,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
    decoupled_weight_decay=False``. State: ``step`` (0-dim float), ``exp_avg``,
    ``exp_avg_sq`` and ``max_exp_avg_sq`` (amsgrad), as in torch. No difference from torch.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_non_negative("learning rate", lr)
        check_non_negative("epsilon value", eps)
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        check_non_negative("weight_decay value", weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("decoupled_weight_decay", False)

    fused_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_step(p, fused=fused)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])
        options = dict(
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )
        if path == "fused":
            kernel = self._kernel(_adam_kernel)
            hyper = (lr, beta1, beta2, group["eps"], group["weight_decay"])
            for batch, grads in self._fused_batches(index, group):
                _fused_adam(
                    batch,
                    grads,
                    hyper=lambda values, d=batch.device: self._hyper(index, d, values),
                    values=hyper,
                    kernel=kernel,
                    weight_decay_on=group["weight_decay"] != 0,
                    **options,
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
            for target, value in zip(
                lists,
                (
                    p,
                    p.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state.get("max_exp_avg_sq"),
                    state["step"],
                ),
                strict=True,
            ):
                target.append(value)
        if not lists[0]:
            return
        update = _multi_tensor_adam if path == "foreach" else _single_tensor_adam
        update(
            *lists,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            **options,
        )


def _single_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float,
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
        exp_avg, exp_avg_sq, step_t = exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        step_t += 1
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if amsgrad:
            max_sq = max_exp_avg_sqs[i]
            torch.maximum(max_sq, exp_avg_sq, out=max_sq)
            denom = (max_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps]
    for d_params, d_grads, d_avgs, d_sqs, d_max, d_steps in group_by_device_and_dtype(lists):
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        increment_steps(d_steps)
        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(d_params, 1 - lr * weight_decay)
            elif maximize:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        torch._foreach_lerp_(d_avgs, d_grads, 1 - beta1)
        torch._foreach_mul_(d_sqs, beta2)
        torch._foreach_addcmul_(d_sqs, d_grads, d_grads, 1 - beta2)
        del d_grads
        steps = [s.item() for s in d_steps]
        step_sizes = [-lr / (1 - beta1**s) for s in steps]
        bc2_sqrts = [(1 - beta2**s) ** 0.5 for s in steps]
        if amsgrad:
            torch._foreach_maximum_(d_max, d_sqs)
            denom = torch._foreach_sqrt(d_max)
        else:
            denom = torch._foreach_sqrt(d_sqs)
        torch._foreach_div_(denom, bc2_sqrts)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(d_params, d_avgs, denom, step_sizes)


def _adam_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    hyper: Tensor,
    factors: Tensor | None,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    weight_decay_on: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel.

    ``hyper`` is (lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt); ``factors`` holds
    per-parameter (step_size, bc2_sqrt) columns when the parameters' step counts differ."""
    lr, beta1, beta2, eps, weight_decay, shared_step_size, shared_bc2_sqrt = hyper.unbind()
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(
        zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)
    ):
        step_size, bc2_sqrt = (
            (shared_step_size, shared_bc2_sqrt) if factors is None else factors[:, i].unbind()
        )
        if maximize:
            grad = -grad
        if weight_decay_on and decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)
        elif weight_decay_on:
            grad = grad + weight_decay * param
        exp_avg.add_((grad - exp_avg) * (1 - beta1))
        exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
        if amsgrad:
            max_sq = max_exp_avg_sqs[i]
            max_sq.copy_(torch.maximum(max_sq, exp_avg_sq))
            denom = max_sq.sqrt() / bc2_sqrt + eps
        else:
            denom = exp_avg_sq.sqrt() / bc2_sqrt + eps
        param.add_(exp_avg / denom * step_size)


def _fused_adam(
    batch: FusedBatch,
    grads: list[Tensor],
    *,
    hyper: Callable[[tuple[float, ...]], Tensor],
    values: tuple[float, ...],
    kernel: Callable,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    weight_decay_on: bool,
) -> None:
    lr, beta1, beta2 = values[:3]
    batch.increment_steps()
    if batch.step is not None:  # one step count: the bias corrections are two floats
        t = batch.step
        h = hyper((*values, -lr / (1 - beta1**t), (1 - beta2**t) ** 0.5))
        factors = None
    else:
        h = hyper((*values, 0.0, 0.0))
        t = batch.stacked_steps()
        factors = torch.stack([-h[0] / (1 - h[1] ** t), (1 - h[2] ** t).sqrt_()])
    exp_avgs, exp_avg_sqs, max_exp_avg_sqs = batch.state
    kernel(
        batch.params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        h,
        factors,
        amsgrad,
        maximize,
        decoupled_weight_decay,
        weight_decay_on,
    )
