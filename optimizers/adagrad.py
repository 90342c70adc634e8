"""Adagrad (Duchi, Hazan & Singer 2011) with torch's inverse-time lr decay."""

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
    along_all,
    check_lr,
    check_non_negative,
    default_to_foreach,
    foreach_mul_,
    increment_steps,
    new_step,
    per_tensor,
    run_lr,
    scalar,
    view_as_real,
)


class Adagrad(Optimizer):
    r"""Adagrad, identical to ``torch.optim.Adagrad``.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        \tilde\eta_t = \frac{\eta}{1 + (t-1)\,\text{lr\_decay}} \\
        s_t &= s_{t-1} + g_t^2 \qquad (s_0 = \text{initial\_accumulator\_value}) \\
        \theta_t &= \theta_{t-1} - \tilde\eta_t\, \frac{g_t}{\sqrt{s_t} + \epsilon}

    State: ``step`` and ``sum``, created in the constructor as torch does (for groups added
    later, at their first step); like torch, ``sum`` starts at the constructor's
    ``initial_accumulator_value`` even where a param group sets another. State created on the
    meta device (an optimizer built before ``module.to_empty()``) is created again on the
    parameter's device at its first step. Sparse gradients take torch's sparse update of the
    rows they touch (on the loop and foreach paths).
    """

    state_keys = ("sum", "step")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative("lr_decay value", lr_decay)
        check_non_negative("weight_decay value", weight_decay)
        check_non_negative("initial_accumulator_value value", initial_accumulator_value)
        check_non_negative("epsilon value", eps)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group, self.state[p])

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if not state or (state["sum"].is_meta and not p.is_meta):
            value = self.defaults["initial_accumulator_value"]
            state["step"] = new_step(p, group)
            state["sum"] = torch.full_like(
                p,
                complex(value, value) if torch.is_complex(p) else value,
                memory_format=torch.preserve_format,
            )

    def share_memory(self) -> None:
        """Move the ``sum`` state tensors into shared memory (as torch's Adagrad)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        adagrad(
            params,
            grads,
            *states,
            foreach=group["foreach"],
            fused=group["fused"],
            lr=run_lr(group, params),
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Functional Adagrad: one step on the given lists, by the path the flags pick (both
    None: torch.optim's choice, the for-loop on CPU)."""
    lists = (params, grads, state_sums, state_steps)
    options = dict(lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    if fused:
        _fused.run(_multi_tensor_adagrad, *lists, lr=lr, **options)
    elif foreach or (foreach is None and fused is None and default_to_foreach(params)):
        _multi_tensor_adagrad(*lists, lr=lr, **options)
    else:
        _single_tensor_adagrad(*lists, lr=lr, **options)


def _single_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    for param, grad, state_sum, step_t in zip(params, grads, state_sums, state_steps, strict=True):
        step_t += 1
        step = step_t.item()
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            if grad.is_sparse:
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            grad = grad.add(param, alpha=weight_decay)
        clr = lr / (1 + (step - 1) * lr_decay)
        if grad.is_sparse:  # only the rows the gradient touches
            grad = grad.coalesce()  # the update is not linear: one value per index
            indices, values = grad._indices(), grad._values()
            state_sum.add_(_sparse_like(grad, indices, values.pow(2)))
            std_values = state_sum.sparse_mask(grad)._values().sqrt_().add_(eps)
            add_(param, _sparse_like(grad, indices, values / std_values), -clr)
            continue
        if torch.is_complex(param):
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            state_sum = torch.view_as_real(state_sum)
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(eps)
        addcdiv_(param, grad, std, -clr)


def _sparse_like(grad: Tensor, indices: Tensor, values: Tensor) -> Tensor:
    """A sparse tensor with ``grad``'s (coalesced, hence valid) indices and new values."""
    return torch.sparse_coo_tensor(indices, values, grad.size(), check_invariants=False)


def _multi_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    lr = scalar(lr)
    lists = [params, grads, state_sums, state_steps]
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(lists)
    for (d_params, d_grads, d_sums, d_steps), _ in grouped.values():
        if any(g.is_sparse for g in d_grads):  # torch's sparse update is the loop's
            _single_tensor_adagrad(
                d_params,
                d_grads,
                d_sums,
                d_steps,
                lr=lr,
                lr_decay=lr_decay,
                weight_decay=weight_decay,
                eps=eps,
                maximize=maximize,
            )
            continue
        view_as_real(d_params, d_grads, d_sums)
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        increment_steps(d_steps)
        if weight_decay != 0:
            if maximize:  # (d_grads is already a copy)
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        minus_clr = per_tensor([-lr / (1 + (scalar(s) - 1) * lr_decay) for s in d_steps])
        torch._foreach_addcmul_(d_sums, d_grads, d_grads, value=1)
        std = torch._foreach_sqrt(d_sums)
        torch._foreach_add_(std, eps)
        if weight_decay != 0 or maximize:
            foreach_mul_(d_grads, minus_clr)
            numerator = d_grads
        else:
            numerator = torch._foreach_mul(d_grads, along_all(minus_clr, d_grads))
        torch._foreach_addcdiv_(d_params, numerator, std)
