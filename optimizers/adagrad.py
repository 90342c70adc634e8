"""Adagrad (Duchi, Hazan & Singer 2011) with torch's inverse-time lr decay."""

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


class Adagrad(Optimizer):
    r"""Adagrad, identical to ``torch.optim.Adagrad``.

    .. math::
        g_t &= \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        \tilde\eta_t = \frac{\eta}{1 + (t-1)\,\text{lr\_decay}} \\
        s_t &= s_{t-1} + g_t^2 \qquad (s_0 = \text{initial\_accumulator\_value}) \\
        \theta_t &= \theta_{t-1} - \tilde\eta_t\, \frac{g_t}{\sqrt{s_t} + \epsilon}

    Defaults: ``lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, maximize=False``. State: ``step`` and ``sum``, created in the constructor (as
    torch does); like torch, ``sum`` starts at the constructor's
    ``initial_accumulator_value`` even where a param group sets another.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_non_negative("learning rate", lr)
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
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group, bool(group["fused"]))

    fused_state = ("sum",)

    def _init_state(self, p: Tensor, group: dict[str, Any], fused: bool) -> None:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_step(p, fused)
            state["sum"] = torch.full_like(
                p,
                self.defaults["initial_accumulator_value"],
                memory_format=torch.preserve_format,
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "_kernels"):  # groups added after construction get their state now
            for p in param_group["params"]:
                self._init_state(p, param_group, bool(param_group["fused"]))

    def _step_group(self, index: int, group: dict[str, Any], path: str) -> None:
        lr = float(group["lr"])
        options = dict(maximize=group["maximize"])
        if path == "fused":
            kernel = self._kernel(_adagrad_kernel)
            hyper = (lr, group["lr_decay"], group["weight_decay"], group["eps"])
            for batch, grads in self._fused_batches(index, group):
                _fused_adagrad(
                    batch,
                    grads,
                    hyper=lambda values, d=batch.device: self._hyper(index, d, values),
                    values=hyper,
                    kernel=kernel,
                    weight_decay_on=group["weight_decay"] != 0,
                    **options,
                )
            return
        params, grads, sums, steps = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            self._init_state(p, group, fused=False)
            state = self.state[p]
            params.append(p)
            grads.append(p.grad)
            sums.append(state["sum"])
            steps.append(state["step"])
        if not params:
            return
        # sparse gradients take the loop's sparse update on either path, as in torch
        sparse = any(g.is_sparse for g in grads)
        multi = path == "foreach" and not sparse
        update = _multi_tensor_adagrad if multi else _single_tensor_adagrad
        update(
            params,
            grads,
            sums,
            steps,
            lr=lr,
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            **options,
        )


def _single_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
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
        if grad.is_sparse:  # only the rows the gradient touches (torch's sparse update)
            grad = grad.coalesce()  # the update is not linear: one value per index
            indices, values = grad._indices(), grad._values()
            state_sum.add_(_sparse_like(grad, indices, values.pow(2)))
            std_values = state_sum.sparse_mask(grad)._values().sqrt_().add_(eps)
            step_values = _sparse_like(grad, indices, values / std_values)
            param.add_(step_values, alpha=-clr)
            continue
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(eps)
        param.addcdiv_(grad, std, value=-clr)


def _sparse_like(grad: Tensor, indices: Tensor, values: Tensor) -> Tensor:
    """A sparse tensor with ``grad``'s (coalesced, hence valid) indices and new values."""
    return torch.sparse_coo_tensor(indices, values, grad.size(), check_invariants=False)


def _multi_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    lists = [params, grads, state_sums, state_steps]
    for d_params, d_grads, d_sums, d_steps in group_by_device_and_dtype(lists):
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        increment_steps(d_steps)
        if weight_decay != 0:
            if maximize:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = torch._foreach_add(d_grads, d_params, alpha=weight_decay)
        minus_clr = [-lr / (1 + (s.item() - 1) * lr_decay) for s in d_steps]
        torch._foreach_addcmul_(d_sums, d_grads, d_grads, value=1)
        std = torch._foreach_sqrt(d_sums)
        torch._foreach_add_(std, eps)
        if weight_decay != 0 or maximize:
            torch._foreach_mul_(d_grads, minus_clr)
            numerator = d_grads
        else:
            numerator = torch._foreach_mul(d_grads, minus_clr)
        torch._foreach_addcdiv_(d_params, numerator, std)


def _adagrad_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    hyper: Tensor,
    minus_clrs: Tensor | None,
    weight_decay_on: bool,
    maximize: bool,
) -> None:
    """The elementwise update of all tensors, traced once by torch.compile into one kernel.

    ``hyper`` is (lr, lr_decay, weight_decay, eps, -clr); ``minus_clrs`` holds -clr per
    parameter when the parameters' step counts differ."""
    _lr, _lr_decay, weight_decay, eps, shared_minus_clr = hyper.unbind()
    for i, (param, grad, state_sum) in enumerate(zip(params, grads, state_sums, strict=True)):
        minus_clr = shared_minus_clr if minus_clrs is None else minus_clrs[i]
        if maximize:
            grad = -grad
        if weight_decay_on:
            grad = grad + weight_decay * param
        state_sum.add_(grad * grad)
        param.add_(grad / (state_sum.sqrt() + eps) * minus_clr)


def _fused_adagrad(
    batch: FusedBatch,
    grads: list[Tensor],
    *,
    hyper: Callable[[tuple[float, ...]], Tensor],
    values: tuple[float, ...],
    kernel: Callable,
    weight_decay_on: bool,
    maximize: bool,
) -> None:
    lr, lr_decay = values[:2]
    batch.increment_steps()
    if batch.step is not None:  # one step count: the decayed lr is one float
        h = hyper((*values, -lr / (1 + (batch.step - 1) * lr_decay)))
        minus_clrs = None
    else:
        h = hyper((*values, 0.0))
        minus_clrs = -h[0] / (1 + (batch.stacked_steps() - 1) * h[1])
    (sums,) = batch.state
    kernel(batch.params, grads, sums, h, minus_clrs, weight_decay_on, maximize)
