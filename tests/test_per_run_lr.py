"""Per-run learning rates (an optbench extension): a param group's ``lr`` set to a 1-D tensor of
N lrs updates slice i of every parameter as N separate optimizers with lr ``lr[i]`` would."""

from __future__ import annotations

import pytest
import torch

import optimizers

N = 3
SHAPES = [(N, 4, 3), (N, 5)]

#: name -> (class, options): every optimizer, with the options that touch lr switched on
CASES = {
    "sgd": ("sgd", {}),
    "sgd_nesterov_wd": ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    "momentum": ("momentum", dict(momentum=0.9)),
    "nesterov": ("nesterov", dict(weight_decay=0.01)),
    "adagrad": ("adagrad", dict(lr_decay=0.05, weight_decay=0.1)),
    "rmsprop": ("rmsprop", dict(momentum=0.5, centered=True)),
    "rmsprop_plain": ("rmsprop", {}),
    "adam": ("adam", {}),
    "adamw_amsgrad": ("adam", dict(weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    "rprop": ("rprop", {}),
    "adadelta": ("adadelta", dict(weight_decay=0.1)),
}
PATHS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
#: The fused path compiles per optimizer: one case in the default suite, all in the slow one.
FAST_FUSED = {"adam"}


def lr_schedule(step: int) -> list[float]:
    """Run i's lr at ``step``: different initial values and different schedules."""
    return [0.05 * 0.9**step, 0.01 * (1 + step), 0.2 if step < 4 else 0.02]


def run(case: str, path: str, dtype: torch.dtype, steps: int = 8):
    """Return (separate params, stacked params, stacked optimizer) after ``steps`` steps."""
    name, options = CASES[case]
    options = {**options, **PATHS[path]}
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES] for _ in range(steps)]
    stacked = [p.clone().requires_grad_() for p in start]
    opt = optimizers.create(name, stacked, lr=0.1, **options)
    first = lr_schedule(0)
    opt.param_groups[0]["initial_lr"] = torch.tensor(first, dtype=torch.float64)
    separate, opts = [], []
    for i in range(N):
        params = [p[i].clone().requires_grad_() for p in start]
        o = optimizers.create(name, params, lr=first[i], **{**options, **PATHS["loop"]})
        o.param_groups[0]["initial_lr"] = first[i]
        separate.append(params)
        opts.append(o)
    for t in range(steps):
        lrs = lr_schedule(t)
        opt.param_groups[0]["lr"] = torch.tensor(lrs, dtype=torch.float64)
        for p, g in zip(stacked, grads[t], strict=True):
            p.grad = g.clone()
        opt.step()
        for i in range(N):
            opts[i].param_groups[0]["lr"] = lrs[i]
            for p, g in zip(separate[i], grads[t], strict=True):
                p.grad = g[i].clone()
            opts[i].step()
    return separate, stacked, opt


def _cases():
    for case in CASES:
        for path in PATHS:
            marks = [pytest.mark.slow] if path == "fused" and case not in FAST_FUSED else []
            yield pytest.param(case, path, marks=marks, id=f"{case}-{path}")


@pytest.mark.parametrize("case, path", list(_cases()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_run_lr_equals_separate_optimizers(case, path, dtype):
    separate, stacked, _ = run(case, path, dtype)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for k, p in enumerate(stacked):
        expected = torch.stack([separate[i][k] for i in range(N)]).detach()
        torch.testing.assert_close(p.detach(), expected, rtol=rtol, atol=rtol * 1e-2)
    # the runs do differ: a per-run lr is not one lr broadcast
    assert not torch.equal(stacked[0][0], stacked[0][1])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path", ["loop", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_run_lr_is_bitwise_on_cpu(case, path, dtype):
    """The eager paths run on the stack the very roundings each slice's float update runs."""
    separate, stacked, _ = run(case, path, dtype)
    for k, p in enumerate(stacked):
        expected = torch.stack([separate[i][k] for i in range(N)]).detach()
        assert torch.equal(p.detach(), expected), case


def test_rprop_keeps_each_runs_lr0():
    _, _, opt = run("rprop", "loop", torch.float64, steps=2)
    for p in opt.param_groups[0]["params"]:
        assert opt.state[p]["lr0"].tolist() == lr_schedule(0)


@pytest.mark.parametrize("name", ["sgd", "adam", "rprop"])
def test_a_float_lr_after_a_vector_lr_is_torchs_again(name):
    p = torch.randn(N, 2, dtype=torch.float64, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, theirs = optimizers.create(name, [p], lr=0.1), getattr(torch.optim, {
        "sgd": "SGD", "adam": "Adam", "rprop": "Rprop"}[name])([q], lr=0.1)  # fmt: skip
    ours.param_groups[0]["lr"] = torch.full((N,), 0.1, dtype=torch.float64)
    for opt, param in ((ours, p), (theirs, q)):
        param.grad = torch.ones_like(param)
        opt.step()
    ours.param_groups[0]["lr"] = 0.1
    for opt, param in ((ours, p), (theirs, q)):
        param.grad = -torch.ones_like(param)
        opt.step()
    torch.testing.assert_close(p, q, rtol=1e-15, atol=0)


def test_construction_keeps_torchs_one_element_rule():
    p = torch.zeros(N, 2, requires_grad=True)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        optimizers.create("adam", [p], lr=torch.ones(N))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "lr, shapes, message",
    [
        (torch.ones(2), [(N, 2)], r"length 2 needs every parameter's leading dimension.*\(3, 2\)"),
        (torch.ones(N), [(N, 2), (4,)], r"parameter 1 of the group has shape \(4,\)"),
        (torch.ones(N, 1), [(N, 2)], "1-D tensor of per-run lrs, got a tensor of shape"),
        (torch.tensor([0.1, -1.0, 0.1]), [(N, 2)], "Invalid learning rate"),
    ],
)
def test_bad_per_run_lrs_are_refused_at_the_step(lr, shapes, message, path):
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    opt = optimizers.create("sgd", params, lr=0.1, **PATHS[path])
    opt.param_groups[0]["lr"] = lr
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=message):
        opt.step()
    assert all(torch.equal(p, torch.zeros_like(p)) for p in params)  # nothing changed


def test_fused_path_does_not_recompile_when_the_per_run_lrs_change():
    p = torch.randn(N, 4, requires_grad=True)
    opt = optimizers.create("adam", [p], lr=0.1, fused=True)
    for t in range(2):  # compile once for the vector lr
        opt.param_groups[0]["lr"] = torch.tensor(lr_schedule(t), dtype=torch.float64)
        p.grad = torch.randn_like(p)
        opt.step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for t in range(2, 6):
            opt.param_groups[0]["lr"] = torch.tensor(lr_schedule(t), dtype=torch.float64)
            p.grad = torch.randn_like(p)
            opt.step()
