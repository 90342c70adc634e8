"""What the optimizers share: argument checks, the per-group gather of (param, grad, state)
lists, the step loop and compatibility with torch.optim's checkpoints.

Each optimizer module holds its class (constructor, ``_init_state``, ``_update``), a for-loop
update ``_single_tensor_<name>``, a multi-tensor update ``_multi_tensor_<name>`` and the
functional entry ``<name>(...)`` that picks one of them, or runs the multi-tensor update
compiled (``_fused``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from itertools import chain
from operator import attrgetter
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _default_to_fused_or_foreach, _get_scalar_dtype

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]

_SHAPE, _DTYPE = attrgetter("shape"), attrgetter("dtype")

#: implementation switches: constructor arguments and group keys, but not hyperparameters
FLAGS = ("foreach", "fused", "capturable", "differentiable")


# torch.optim wraps add_param_group, zero_grad, state_dict and load_state_dict in
# torch._disable_dynamo, whose first call imports torch._dynamo: seconds of a process's start and
# of its exit, in every worker of a sweep. Outside a torch.compile trace the wrapper only
# calls the function it wraps, so these call that function directly and keep the wrapper (the
# graph break it exists for) while compiling.
_DISABLE_DYNAMO_WRAPPER = torch._disable_dynamo(lambda: None).__code__


def _torch_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``Optimizer.<method>`` as torch defines it, without the lazy ``_disable_dynamo`` wrapper
    unless a torch.compile trace is running."""
    if getattr(method, "__code__", None) is _DISABLE_DYNAMO_WRAPPER and not (
        torch.compiler.is_compiling()
    ):
        return method.__wrapped__
    return method


def check_non_negative(label: str, value: float | Tensor) -> None:
    """torch's ``Invalid <label>: <value>`` ValueError unless ``value >= 0``."""
    if not value >= 0.0:
        raise ValueError(f"Invalid {label}: {value}")


def check_lr(lr: float | Tensor) -> None:
    """torch's checks of a learning rate: a tensor has one element, and none is negative."""
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    check_non_negative("learning rate", lr)


def check_flags(name: str, options: dict[str, Any]) -> None:
    """Refuse the torch.optim switches that have no implementation here (as constructor
    arguments, in an added param group or in a loaded checkpoint's groups)."""
    if options.get("fused") and options.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    for flag in ("differentiable", "capturable"):
        if options.get(flag):
            raise ValueError(
                f"{name} does not support {flag}=True (only the default {flag}=False); "
                "use torch.optim for it"
            )


def default_to_foreach(params: list[Tensor]) -> bool:
    """torch.optim's choice for ``foreach=None, fused=None``: foreach where every param is a
    plain tensor on a device with foreach kernels (CUDA...), the for-loop elsewhere (CPU)."""
    if torch.compiler.is_compiling():
        return False
    return _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1]


def new_step(param: Tensor, group: dict[str, Any]) -> Tensor:
    """torch's ``step`` state: a 0-dim float tensor on the CPU (float64 under a float64
    default dtype), or float32 on the parameter's device for ``fused=True``."""
    if group["fused"]:
        return torch.zeros((), dtype=torch.float32, device=param.device)
    return torch.tensor(0.0, dtype=_get_scalar_dtype())


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def scalar(value: Any) -> Any:
    """A step count or hyperparameter as the multi-tensor updates use it: a Python float in
    eager mode (torch's numbers), a float64 tensor while being compiled (no graph break, and
    factors such as ``1 - beta ** step`` computed in double as in eager mode). A per-run lr
    (a 1-D tensor, see ``run_lr``) stays a float64 tensor."""
    if not isinstance(value, Tensor):
        return value
    if value.dim() == 1:
        return value.to(torch.float64)
    return value.to(torch.float64) if torch.compiler.is_compiling() else value.item()


def per_tensor(values: list) -> list:
    """Per-tensor factors (bias corrections, decayed lrs) as the multi-tensor ops take them.
    While compiling they are stacked into one tensor and read back from it: inductor then
    computes them once, in a kernel of their own, instead of inside every element's loop."""
    if torch.compiler.is_compiling() and isinstance(values[0], Tensor):
        return list(torch.stack(values).unbind())
    return values


def increment_steps(steps: list[Tensor]) -> None:
    """``step += 1`` on a list of step tensors, as torch's foreach paths do it."""
    if not torch.compiler.is_compiling() and steps[0].is_cpu:
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


def view_as_real(*lists: list[Tensor | None]) -> None:
    """Replace every complex tensor of the lists by its real view (in place in each list)."""
    for tensors in lists:
        for i, t in enumerate(tensors):
            if t is not None and torch.is_complex(t):
                tensors[i] = torch.view_as_real(t)


def run_lr(group: dict[str, Any], params: list[Tensor]) -> float | Tensor:
    """The group's lr as the updates take it: a float, or a per-run lr.

    Per-run lr (an optbench extension, for N runs stacked along the leading dimension of every
    parameter): ``group["lr"]`` set to a 1-D tensor of N >= 2 lrs after construction (the
    constructor keeps torch's rule that a tensor lr has one element). Run i's slice ``p[i]`` of
    every parameter is then updated with ``lr[i]``, as if by its own optimizer. Returned as an
    (N,) float64 tensor; ValueError unless every parameter's leading dimension is N and every
    lr is non-negative."""
    lr = group["lr"]
    if not isinstance(lr, Tensor) or lr.numel() == 1:
        return float(lr)
    if lr.dim() != 1:
        raise ValueError(
            f"group['lr'] must be a float, a 1-element tensor or a 1-D tensor of per-run lrs, "
            f"got a tensor of shape {tuple(lr.shape)}"
        )
    n = lr.shape[0]
    for i, p in enumerate(params):
        if p.dim() == 0 or p.shape[0] != n:
            raise ValueError(
                f"a per-run lr of length {n} needs every parameter's leading dimension to be "
                f"{n} (one slice per run), but parameter {i} of the group has shape "
                f"{tuple(p.shape)}"
            )
    lr = lr.detach().to(torch.float64)
    if not torch.compiler.is_compiling() and not bool((lr >= 0).all()):  # (NaN >= 0 is false)
        raise ValueError(f"Invalid learning rate: {lr.tolist()} (per-run lrs must be >= 0)")
    return lr


def along(value: Any, p: Tensor) -> Any:
    """``value`` as it multiplies ``p``: a 1-D tensor (one value per run) as an
    ``(N, 1, ..., 1)`` tensor of p's dtype and device; anything else as is."""
    if isinstance(value, Tensor) and value.dim() == 1:
        dtype = p.real.dtype if p.is_complex() else p.dtype
        return value.to(device=p.device, dtype=dtype).view(-1, *[1] * (p.dim() - 1))
    return value


def along_all(value: Any, tensors: list[Tensor]) -> Any:
    """``along`` for foreach ops: a per-run value (or a list of them, one per tensor) becomes a
    list with one ``(N, 1, ..., 1)`` tensor per tensor; anything else as is."""
    if isinstance(value, Tensor) and value.dim() == 1:
        return [along(value, t) for t in tensors]
    if isinstance(value, list) and isinstance(value[0], Tensor) and value[0].dim() == 1:
        return [along(v, t) for v, t in zip(value, tensors, strict=True)]
    return value


def _per_run(value: Any) -> bool:
    return isinstance(value, Tensor) and value.dim() == 1


def add_(param: Tensor, other: Tensor, alpha: float | Tensor) -> Tensor:
    """``param += alpha * other`` where ``alpha`` may be per run (a 1-D tensor)."""
    if _per_run(alpha):  # (addcmul rounds as add with alpha does: one multiply-add)
        return param.addcmul_(other, along(alpha, param))
    return param.add_(other, alpha=alpha)


def addcmul_(param: Tensor, a: Tensor, b: Tensor, value: float | Tensor) -> Tensor:
    """``param += value * a * b`` where ``value`` may be per run."""
    if _per_run(value):  # (rounded as addcmul_ with a number: (value * a) * b + param)
        return param.addcmul_(a * along(value, param), b)
    return param.addcmul_(a, b, value=value)


def addcdiv_(param: Tensor, a: Tensor, b: Tensor, value: float | Tensor) -> Tensor:
    """``param += value * a / b`` where ``value`` may be per run."""
    if _per_run(value):  # (rounded as addcdiv_ with a number: (value * a) / b + param)
        return param.addcdiv_(along(value, param) * a, b)
    return param.addcdiv_(a, b, value=value)


def mul_(param: Tensor, value: float | Tensor) -> Tensor:
    """``param *= value`` where ``value`` may be per run."""
    return param.mul_(along(value, param))


def foreach_mul_(tensors: list[Tensor], value: Any) -> None:
    """``tensors *= value`` where ``value`` may be per run, or a list with one per tensor."""
    torch._foreach_mul_(tensors, along_all(value, tensors))


def _tensor_scalars(value: Any) -> bool:
    return isinstance(value, Tensor) or (isinstance(value, list) and isinstance(value[0], Tensor))


def foreach_add_(tensors: list[Tensor], others: list[Tensor], alpha: float | Tensor) -> None:
    """``tensors += alpha * others``; a tensor ``alpha`` (the compiled path's lr) is multiplied
    in, since torch.compile would round an ``alpha=`` tensor to float32. A per-run ``alpha``
    takes ``add_``'s one multiply-add per tensor: the loop path's roundings, and no list of
    products to allocate."""
    if _per_run(alpha):
        for tensor, other in zip(tensors, others, strict=True):
            add_(tensor, other, alpha)
    elif isinstance(alpha, Tensor):
        torch._foreach_add_(tensors, torch._foreach_mul(others, along_all(alpha, others)))
    else:
        torch._foreach_add_(tensors, others, alpha=alpha)


def foreach_addcmul_(tensors: list[Tensor], a: list[Tensor], b: list[Tensor], value: Any) -> None:
    """``tensors += value * a * b`` where ``value`` may also be a tensor, or a list with a
    tensor per entry (torch's op takes only numbers: the compiled path's scalars are tensors)."""
    if _tensor_scalars(value):  # (rounded as addcmul_ with a number: (value * a) * b + param)
        torch._foreach_addcmul_(tensors, torch._foreach_mul(a, along_all(value, tensors)), b)
    else:
        torch._foreach_addcmul_(tensors, a, b, value)


def foreach_addcdiv_(tensors: list[Tensor], a: list[Tensor], b: list[Tensor], value: Any) -> None:
    """``tensors += value * a / b``, with ``value`` as in ``foreach_addcmul_``."""
    if _tensor_scalars(value):  # (rounded as addcdiv_ with a number: (value * a) / b + param)
        torch._foreach_addcdiv_(tensors, torch._foreach_mul(a, along_all(value, tensors)), b)
    else:
        torch._foreach_addcdiv_(tensors, a, b, value)


@functools.cache
def signature_defaults(cls: type) -> dict[str, Any]:
    """The constructor's keyword defaults of ``cls`` (hyperparameters and flags)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in parameters.items() if k not in ("self", "params")}


class Optimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer plus the gather and step loop that every optimizer here shares.

    A subclass lists its per-parameter state in ``state_keys`` (the order its update takes
    them in, after params and grads), creates missing entries in ``_init_state`` and calls its
    functional update in ``_update``.
    """

    #: per-parameter state the update takes, in its argument order
    state_keys: tuple[str, ...] = ()
    #: the RuntimeError message for a sparse gradient (None: sparse gradients are supported)
    sparse_error: str | None = None

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_flags(type(self).__name__, defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check_flags(type(self).__name__, param_group)
        _torch_method(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``: each gradient set to None (or zeroed, ``set_to_none=False``)."""
        _torch_method(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``: ``{"state": {index: {...}}, "param_groups": [...]}``."""
        return _torch_method(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, refusing first (before anything changes) switches that
        have no implementation here and state tensors whose shape is not their param's."""
        for group in state_dict["param_groups"]:
            check_flags(type(self).__name__, group)
        saved = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        # (torch's own checks of the group counts and sizes follow)
        for index, (key, p) in enumerate(zip(saved, params, strict=False)):
            for name, value in state_dict["state"].get(key, {}).items():
                if name != "step" and isinstance(value, Tensor) and value.shape != p.shape:
                    raise ValueError(self._mismatch(index, name, value, p))
        _torch_method(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill in what older checkpoints lack, as torch's ``__setstate__`` does: options added
        later (``maximize``, ``foreach``...) take their defaults, and a ``step`` saved as a
        Python number becomes torch's step tensor."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in signature_defaults(type(self)).items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = new_step(p, group).fill_(float(p_state["step"]))

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """Create the entries of ``state`` that ``group``'s options need and it lacks."""

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[list]]:
        """The group's params that have a gradient, their gradients, and one list per key of
        ``state_keys`` (``None`` where a param lacks that entry), creating missing state.

        On the fused path every state tensor is checked against its param, every step: a
        compiled graph would compute with a state of another shape or dtype (put there by
        hand) where torch's eager ops raise."""
        params, grads, rows = [], [], []
        keys = self.state_keys
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse and self.sparse_error is not None:
                raise RuntimeError(self.sparse_error)
            state = self.state.get(p)
            if state is None:  # (no entry for a param without state, as in torch's SGD)
                state = {}
                self._init_state(p, group, state)
                if state:
                    self.state[p] = state
            else:
                self._init_state(p, group, state)
            params.append(p)
            grads.append(grad)
            rows.append([state.get(key) for key in keys])
        states = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in keys]
        if group["fused"]:
            self._check_state(params, states)
        return params, grads, states

    def _check_state(self, params: list[Tensor], states: list[list]) -> None:
        """ValueError unless every state tensor (``step`` aside) has its param's shape and
        dtype (a pass over attributes: cheap enough for every step)."""
        shapes, dtypes = list(map(_SHAPE, params)), list(map(_DTYPE, params))
        for key, values in zip(self.state_keys, states, strict=True):
            if key in ("step", "lr0"):  # (not shaped like the param)
                continue
            try:
                ok = list(map(_SHAPE, values)) == shapes and list(map(_DTYPE, values)) == dtypes
            except AttributeError:  # None (an option off, a buffer not yet created) or floats
                ok = False
            if ok:
                continue
            for p, value in zip(params, values, strict=True):
                if isinstance(value, Tensor) and (value.shape, value.dtype) != (p.shape, p.dtype):
                    every = chain.from_iterable(g["params"] for g in self.param_groups)
                    index = next(i for i, q in enumerate(every) if q is p)
                    raise ValueError(self._mismatch(index, key, value, p))

    def _mismatch(self, index: int, key: str, value: Tensor, p: Tensor) -> str:
        return (
            f"{type(self).__name__}: state[{key!r}] of parameter {index} is "
            f"{tuple(value.shape)} {value.dtype}, but the parameter is {tuple(p.shape)} "
            f"{p.dtype}; the state does not belong to this parameter (another model's?)"
        )

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        """Run the functional update on the gathered lists."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step (``closure`` re-evaluates the model, optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = self._gather(group)
            if params:
                self._update(group, params, grads, states)
        return loss
