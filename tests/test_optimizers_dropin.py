"""optimizers/ as a drop-in for torch.optim, tried as a torch.optim user would: complex params,
checkpoints of older torch versions and of torch.optim itself, torch's argument checks, sparse
gradients, and the fused path's guarantees (devices checked at the first step, version
counters, options switched between steps, duplicate params and shared state refused,
inference-mode state, inductor's cache directory)."""

from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_optimizers import CASES, LR, PATHS, assert_rel_close, loss_fn, make_params, run

import optimizers
from optimizers import SGD, Adadelta, Adagrad, Adam, Momentum, RMSprop, Rprop, _fused

REPO = Path(__file__).resolve().parents[1]
TWINS = {name: case for name, case in CASES.items() if name != "momentum"}
FLAGS = {**PATHS, "fused": {"fused": True}}


def most_options(name: str) -> dict:
    return CASES[name][2][-1]


def sign_of(opts: dict) -> float:
    return -1.0 if opts.get("maximize") else 1.0


def assert_params(ours: list, ref: list, tol: float | None) -> None:
    for p, q in zip(ours, ref, strict=True):
        if p.is_complex():
            p, q = torch.view_as_real(p.detach()), torch.view_as_real(q.detach())
        if tol is None:
            assert torch.equal(p, q)
        else:
            assert_rel_close(p.detach(), q.detach(), tol, what="param")


# ---------------------------------------------------------------- complex parameters
def complex_params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    shapes = [(5, 3), (4,)]
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.complex128)) for s in shapes
    ]


_C = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.complex128)


def complex_loss(params: list[torch.Tensor], step: int, sign: float) -> torch.Tensor:
    w, b = params
    out = torch.sin((w * _C).real).sum() + (w.abs() ** 2).mean() * (1 + step % 2)
    return sign * (out + ((b - 0.5j) * b.conj()).real.sum())


def run_complex(opt, params, steps, sign):
    for k in range(steps):
        opt.zero_grad()
        complex_loss(params, k, sign).backward()
        opt.step()


def check_complex(name: str, flags: dict, tol: float | None) -> None:
    ours_cls, ref_cls, options, _ = CASES[name]
    opts = options[-1]
    ref_opts = {**opts, "momentum": opts.get("momentum", 0.9)} if name == "momentum" else opts
    ours_params, ref_params = complex_params(), complex_params()
    ours = ours_cls(ours_params, lr=LR, **opts, **flags)
    ref_flags = {} if "fused" in flags else flags
    ref = ref_cls(ref_params, lr=LR, **ref_opts, **ref_flags)
    run_complex(ours, ours_params, 20, sign_of(opts))
    run_complex(ref, ref_params, 20, sign_of(opts))
    states = [s for st in ours.state.values() for k, s in st.items() if k not in ("step", "lr0")]
    assert states and all(torch.is_complex(s) for s in states)
    assert not torch.equal(ours_params[0], complex_params()[0])
    assert_params(ours_params, ref_params, 1e-12 if name == "momentum" else tol)


@pytest.mark.parametrize("path", ["default", "foreach"])
@pytest.mark.parametrize("name", list(CASES))
def test_complex_params_match_torch(name, path):
    """Complex params as torch handles them (real views where torch takes them), bitwise;
    Momentum against torch's SGD to rounding."""
    check_complex(name, PATHS[path], None)


def test_complex_params_fused():
    check_complex("adam", {"fused": True}, 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_complex_params_fused_all(name):
    check_complex(name, {"fused": True}, 1e-12)


# ---------------------------------------------------------------- checkpoints
#: param-group options torch added over its versions (absent from older checkpoints)
LATER_OPTIONS = ("maximize", "foreach", "fused", "differentiable", "capturable")
LATER_OPTIONS += ("decoupled_weight_decay",)


def older_checkpoint(state_dict: dict) -> dict:
    """``state_dict`` as torch < 1.12 wrote it: no later options, ``step`` a Python number."""
    old = copy.deepcopy(state_dict)
    for group in old["param_groups"]:
        for key in LATER_OPTIONS:
            group.pop(key, None)
    for state in old["state"].values():
        if "step" in state:
            state["step"] = int(state["step"].item())
    return old


def continue_both(name, flags, load, steps=5, one_group=False):
    """torch runs ``steps`` steps; ours loads ``load(torch's state dict)`` and both run on from
    the same params. Returns (ours, ours params, torch's, torch's params). ``one_group``: one
    param group, every param with a gradient (the fused tests' compiled graph)."""
    ours_cls, ref_cls, options, group_b = TWINS[name]
    opts = options[-1]
    sign = sign_of(opts)

    def groups(params):
        return [{"params": params}] if one_group else [
            {"params": params[:2]}, {"params": params[2:], **group_b}]  # fmt: skip

    ref_params = make_params(torch.float64)
    ref = ref_cls(groups(ref_params), lr=LR, **opts)
    run(ref, ref_params, steps, sign, skip=not one_group)
    ours_params = [p.detach().clone().requires_grad_() for p in ref_params]
    ours = ours_cls(groups(ours_params), lr=LR, **opts, **flags)
    saved = load(copy.deepcopy(ref.state_dict()))  # (a live state dict would share tensors)
    ours.load_state_dict(saved)
    ref.load_state_dict(copy.deepcopy(saved))  # torch reads it as it does (old options off)
    for o in (ours, ref):  # the flags came with the dict (as in torch): set them again
        for group in o.param_groups:
            group.update(flags)
    run(ours, ours_params, steps, sign, skip=not one_group, start=steps)
    run(ref, ref_params, steps, sign, skip=not one_group, start=steps)
    return ours, ours_params, ref, ref_params


@pytest.mark.parametrize("path", ["default", "foreach"])
@pytest.mark.parametrize("name", list(TWINS))
def test_older_torch_checkpoint_loads_and_continues(name, path):
    """Groups without ``maximize``, ``foreach``... and a Python-number ``step`` (torch < 1.12):
    the defaults fill in, ``step`` becomes torch's tensor and keeps counting, and the run
    continues as torch's does, bit for bit."""
    ours, ours_params, ref, ref_params = continue_both(name, PATHS[path], older_checkpoint)
    assert_params(ours_params, ref_params, None)
    for group in ours.param_groups:
        assert group["maximize"] is False  # (absent from the checkpoint: off, as in torch)
        assert group["fused"] is None and group["foreach"] is PATHS[path].get("foreach")
    for p, q in zip(ours_params, ref_params, strict=True):
        if "step" in ref.state[q]:
            assert torch.is_tensor(ours.state[p]["step"])
            assert ours.state[p]["step"].item() == ref.state[q]["step"].item()


def test_older_torch_checkpoint_continues_fused():
    ours, ours_params, _, ref_params = continue_both(
        "adam", {"fused": True}, older_checkpoint, one_group=True
    )
    assert ours.param_groups[0]["fused"] is True
    assert ours.state[ours_params[0]]["step"].item() == 10
    assert_params(ours_params, ref_params, 1e-12)


@pytest.mark.parametrize("name", list(TWINS))
def test_torch_state_dicts_load_into_ours_and_ours_into_torch(name):
    """Both ways, then both continue bit for bit (a torch Rprop checkpoint gets ``lr0``, the
    lr it was saved with)."""
    ours, ours_params, ref, ref_params = continue_both(name, {}, lambda sd: sd)
    assert_params(ours_params, ref_params, None)
    if name == "rprop":
        assert {s["lr0"] for s in ours.state.values()} == {LR, CASES["rprop"][3]["lr"]}
    # and back: torch loads ours and both go on
    ref.load_state_dict(copy.deepcopy(ours.state_dict()))
    run(ours, ours_params, 4, sign_of(most_options(name)), start=10)
    run(ref, ref_params, 4, sign_of(most_options(name)), start=10)
    assert_params(ours_params, ref_params, None)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_loads_a_torch_sgd_checkpoint_as_velocity(nesterov):
    """torch's buffer b becomes velocity -lr * b: at a constant lr the run continues as
    torch's (to rounding), with our state layout."""
    opts = {"momentum": 0.9, "weight_decay": 0.01, "nesterov": nesterov}
    ref_params = make_params(torch.float64)
    ref = torch.optim.SGD([{"params": ref_params[:2]}, {"params": ref_params[2:], "lr": 0.02}],
                          lr=LR, **opts)  # fmt: skip
    run(ref, ref_params, 10, 1.0)
    ours_params = [p.detach().clone().requires_grad_() for p in ref_params]
    ours = Momentum([{"params": ours_params[:2]}, {"params": ours_params[2:]}], **opts)
    ours.load_state_dict(ref.state_dict())
    assert all(set(s) == {"velocity"} for s in ours.state.values())
    assert all("dampening" not in g for g in ours.param_groups)
    assert torch.equal(ours.state[ours_params[2]]["velocity"],
                       -0.02 * ref.state[ref_params[2]]["momentum_buffer"])  # fmt: skip
    run(ours, ours_params, 10, 1.0, start=10)
    run(ref, ref_params, 10, 1.0, start=10)
    assert_params(ours_params, ref_params, 1e-12)


def test_momentum_refuses_a_torch_sgd_checkpoint_with_dampening():
    ref_params = make_params(torch.float64)
    ref = torch.optim.SGD(ref_params, lr=LR, momentum=0.9, dampening=0.1)
    run(ref, ref_params, 2, 1.0)
    ours = Momentum(make_params(torch.float64), lr=0.5)
    before = copy.deepcopy(ours.state_dict())
    with pytest.raises(ValueError, match=r"torch\.optim\.SGD state with dampening=0\.1"):
        ours.load_state_dict(ref.state_dict())
    assert ours.state_dict() == before


# ---------------------------------------------------------------- argument checks
def one_param() -> list[torch.Tensor]:
    return [torch.nn.Parameter(torch.zeros(3))]


BAD = [(name, {"lr": torch.tensor([0.1, 0.2])}) for name in TWINS]
BAD += [
    ("adam", {"betas": (torch.tensor(0.9), 0.999)}),
    ("adam", {"betas": (0, 0.999)}),  # an int is not a float, for torch either
    ("adam", {"betas": (torch.tensor([0.9, 0.8]), torch.tensor(0.999))}),
    ("adam", {"betas": (torch.tensor(0.9), torch.tensor([0.9, 0.99]))}),
    ("adam", {"betas": (torch.tensor(1.0), torch.tensor(0.999))}),
    ("adam", {"lr": torch.tensor(-1.0)}),
]


@pytest.mark.parametrize(("name", "kwargs"), BAD)
def test_bad_arguments_raise_torchs_error(name, kwargs):
    ours_cls, ref_cls = TWINS[name][:2]
    with pytest.raises(Exception) as theirs:  # (whatever torch raises)
        ref_cls(one_param(), **kwargs)
    with pytest.raises(type(theirs.value), match=f"^{re.escape(str(theirs.value))}$"):
        ours_cls(one_param(), **kwargs)


def test_tensor_lr_and_betas_are_accepted_as_torch_accepts_them():
    ours_params, ref_params = make_params(torch.float32), make_params(torch.float32)
    kwargs = dict(lr=torch.tensor(0.01), betas=(torch.tensor(0.8), torch.tensor(0.99)))
    ours, ref = Adam(ours_params, **kwargs), torch.optim.Adam(ref_params, **kwargs)
    run(ours, ours_params, 20, 1.0)
    run(ref, ref_params, 20, 1.0)
    assert_params(ours_params, ref_params, 1e-5)  # (torch rounds lr / bc1 to float32 here)


SWITCHES = [
    (cls, flag)
    for cls in (SGD, Momentum, Adagrad, RMSprop, Adam, Rprop, Adadelta)
    for flag in ("differentiable", "capturable")
    if flag in optimizers._base.signature_defaults(cls)
]


@pytest.mark.parametrize(("cls", "flag"), SWITCHES, ids=lambda v: getattr(v, "__name__", v))
def test_differentiable_and_capturable_false_accepted_true_refused(cls, flag):
    opt = cls(one_param(), **{flag: False})
    assert opt.param_groups[0][flag] is False
    message = f"{cls.__name__} does not support {flag}=True"
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(one_param(), **{flag: True})
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.add_param_group({"params": one_param(), flag: True})
    saved = opt.state_dict()
    saved["param_groups"][0][flag] = True
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.load_state_dict(saved)
    assert opt.param_groups[0][flag] is False


# ---------------------------------------------------------------- state of the wrong shape
@pytest.mark.parametrize("path", list(FLAGS))
def test_loaded_state_of_another_shape_is_refused_at_load(path):
    other = torch.nn.Parameter(torch.ones(2, 5))
    source = Adam([other])
    other.grad = torch.ones(2, 5)
    source.step()
    p = torch.nn.Parameter(torch.ones(10))
    opt = Adam([p], **FLAGS[path])
    with pytest.raises(ValueError, match=r"Adam: state\['exp_avg'\] of parameter 0 is \(2, 5\)"):
        opt.load_state_dict(source.state_dict())
    assert not opt.state and torch.equal(p, torch.ones(10))


@pytest.mark.parametrize("path", list(FLAGS))
def test_state_of_another_dtype_or_shape_set_by_hand_raises(path):
    """torch's eager ops raise on the loop and foreach paths; the fused path checks first
    (a compiled graph would compute with it) and changes nothing."""
    for bad in (lambda t: t.double(), lambda t: torch.zeros(2, 5)):
        p = torch.nn.Parameter(torch.ones(10))
        opt = Adam([p], **FLAGS[path])
        p.grad = torch.ones(10)
        opt.step()
        opt.state[p]["exp_avg"] = bad(opt.state[p]["exp_avg"])
        before = p.detach().clone()
        with pytest.raises((RuntimeError, ValueError)) as error:
            opt.step()
        if path == "fused":
            assert error.type is ValueError and "state['exp_avg'] of parameter 0" in str(
                error.value
            )
            assert torch.equal(p, before) and opt.state[p]["step"].item() == 1


# ---------------------------------------------------------------- duplicates, shared state
def test_duplicate_params_warn_like_torch_and_the_fused_path_refuses_them():
    p, q = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        ours = Adam([p, p], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.optim.Adam([q, q], lr=0.1)
        fused = Adam([r := torch.nn.Parameter(torch.ones(4))] * 2, lr=0.1, fused=True)
    for param in (p, q, r):
        param.grad = torch.arange(4.0)
    ours.step()
    ref.step()
    assert torch.equal(p, q) and ours.state[p]["step"].item() == 2  # updated twice, as torch
    with pytest.raises(ValueError, match="a tensor would be updated twice"):
        fused.step()
    assert torch.equal(r, torch.ones(4)) and not fused.state[r]["step"].item()


def test_params_sharing_a_state_dict_loop_as_torch_fused_refuses():
    results = []
    for cls, flags in ((Adam, {}), (torch.optim.Adam, {}), (Adam, {"fused": True})):
        p, q = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.full((4,), 2.0))
        opt = cls([p, q], lr=0.1, **flags)
        p.grad, q.grad = torch.arange(4.0), -torch.arange(4.0)
        if not flags:
            opt.step()
        opt.state[q] = opt.state[p]
        if flags:
            with pytest.raises(ValueError, match="updated twice"):
                opt.step()
            assert torch.equal(p, torch.ones(4)) and torch.equal(q, torch.full((4,), 2.0))
            continue
        opt.step()
        results.append((p, q))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


# ---------------------------------------------------------------- sparse gradients
def sparse_run(cls, flags, steps=4, **kwargs):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    opt = cls(emb.parameters(), lr=0.1, **kwargs, **flags)
    for k in range(steps):
        opt.zero_grad()
        emb(torch.tensor([k % 10, (3 * k) % 10, 1])).pow(2).sum().backward()
        opt.step()
    return emb.weight.detach()


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # (torch's own)
@pytest.mark.parametrize("path", ["default", "foreach"])
def test_sparse_gradients_as_torch(path):
    flags = PATHS[path]
    assert torch.equal(sparse_run(SGD, flags, momentum=0.9), sparse_run(torch.optim.SGD, flags,
                                                                        momentum=0.9))  # fmt: skip
    assert torch.equal(sparse_run(Adagrad, flags), sparse_run(torch.optim.Adagrad, flags))
    assert_rel_close(sparse_run(Momentum, flags), sparse_run(torch.optim.SGD, {}, momentum=0.9),
                     1e-12)  # fmt: skip
    for name in ("adam", "rmsprop", "rprop", "adadelta"):
        ours_cls, ref_cls = TWINS[name][:2]
        with pytest.raises(RuntimeError) as theirs:
            sparse_run(ref_cls, flags)
        with pytest.raises(RuntimeError, match=re.escape(str(theirs.value))):
            sparse_run(ours_cls, flags)
    with pytest.raises(RuntimeError, match="fused=True does not support sparse gradients"):
        sparse_run(SGD, {"fused": True})


# ---------------------------------------------------------------- the fused path
def mlp(device: str = "cpu") -> torch.nn.Module:
    """The shapes of make_params: (6, 4), (6,), (3, 6), (3,)."""
    layers = [torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)]
    return torch.nn.Sequential(*layers).to(device=device, dtype=torch.float64)


def built_on_meta_then_filled(cls, **kwargs):
    """(optimizer, params): the optimizer built on meta params, then ``module.to_empty()``
    (swapping the tensors in place, so the optimizer's params are the module's) and the
    params filled with make_params' values."""
    model = mlp("meta")
    opt = cls(model.parameters(), **kwargs)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.to_empty(device="cpu")
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    params = list(model.parameters())
    assert all(p is q for p, q in zip(params, opt.param_groups[0]["params"], strict=True))
    with torch.no_grad():
        for p, value in zip(params, make_params(torch.float64), strict=True):
            p.copy_(value)
    return opt, params


def test_fused_on_meta_params_then_to_empty_works_as_in_torch():
    """Devices are checked at the first step: an optimizer built on meta params works once
    ``module.to_empty()`` has given them memory (ours against torch's fused Adam)."""
    opts = most_options("adam")
    results = []
    for cls in (Adam, torch.optim.Adam):
        opt, params = built_on_meta_then_filled(cls, lr=LR, **opts, fused=True)
        run(opt, params, 5, sign_of(opts), skip=False)
        assert not torch.equal(params[0], make_params(torch.float64)[0])
        results.append(params)
    assert_params(*results, 1e-12)


def test_adagrad_state_made_on_meta_is_made_again_at_the_first_step():
    """Adagrad creates its state in the constructor, on the meta device here; the first step
    creates it again on the params' device (torch would keep meta tensors)."""
    opt, params = built_on_meta_then_filled(Adagrad, lr=0.1, initial_accumulator_value=0.5)
    ref_params = make_params(torch.float64)
    ref = Adagrad(ref_params, lr=0.1, initial_accumulator_value=0.5)
    for o, ps in ((opt, params), (ref, ref_params)):
        run(o, ps, 5, 1.0, skip=False)
    assert all(not s["sum"].is_meta for s in opt.state.values())
    assert_params(params, ref_params, None)


@pytest.mark.parametrize("path", list(FLAGS))
def test_step_bumps_version_counters_so_autograd_sees_the_change(path):
    """As with torch's own fused kernels: a graph that saved a param before the step refuses
    to run backward after it."""
    params = make_params(torch.float64)
    opt = Adam(params, lr=LR, **most_options("adam"), **FLAGS[path])
    loss = loss_fn(params, 1, sign_of(most_options("adam")), skip=False)
    loss.backward(retain_graph=True)
    versions = [p._version for p in params]
    opt.step()
    assert all(p._version > v for p, v in zip(params, versions, strict=True))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def switch_amsgrad_on(opt, ref=None):
    for o in filter(None, (opt, ref)):
        for group in o.param_groups:
            group["amsgrad"] = True
    if ref is not None:  # torch raises KeyError: its reference gets the same zeros by hand
        for state in ref.state.values():
            state["max_exp_avg_sq"] = torch.zeros_like(state["exp_avg"])


@pytest.mark.parametrize("path", list(FLAGS))
def test_amsgrad_switched_on_between_steps(path):
    """The new state entry is created when the option is first on (zeros, as at a first
    step), on every path: bitwise as torch given the same entry, to rounding when fused."""
    opts = {**most_options("adam"), "amsgrad": False}
    ours_params, ref_params = make_params(torch.float64), make_params(torch.float64)
    ours = Adam(ours_params, lr=LR, **opts, **FLAGS[path])
    ref = torch.optim.Adam(ref_params, lr=LR, **opts, **({} if path == "fused" else FLAGS[path]))
    for opt, params in ((ours, ours_params), (ref, ref_params)):
        run(opt, params, 4, -1.0, skip=False)
    switch_amsgrad_on(ours, ref)
    for opt, params in ((ours, ours_params), (ref, ref_params)):
        run(opt, params, 4, -1.0, skip=False, start=4)
    assert all("max_exp_avg_sq" in s for s in ours.state.values())
    assert_params(ours_params, ref_params, 1e-12 if path == "fused" else None)


@pytest.mark.parametrize(
    "path", ["default", "foreach", pytest.param("fused", marks=pytest.mark.slow)]
)
def test_momentum_and_centering_switched_on_between_steps(path):
    """SGD's buffer starts from the gradient (torch does the same), RMSprop's accumulators
    from zeros (torch raises KeyError: its reference gets the zeros by hand)."""
    switched = {"sgd": {"momentum": 0.9}, "rmsprop": {"momentum": 0.5, "centered": True}}
    for name, switches in switched.items():
        ours_cls, ref_cls = TWINS[name][:2]
        ours_params, ref_params = make_params(torch.float64), make_params(torch.float64)
        ours = ours_cls(ours_params, lr=LR, **FLAGS[path])
        ref = ref_cls(ref_params, lr=LR, **({} if path == "fused" else FLAGS[path]))
        for opt, params in ((ours, ours_params), (ref, ref_params)):
            run(opt, params, 4, 1.0)
            opt.param_groups[0].update(switches)
        if name == "rmsprop":
            for state in ref.state.values():
                state["momentum_buffer"] = torch.zeros_like(state["square_avg"])
                state["grad_avg"] = torch.zeros_like(state["square_avg"])
        for opt, params in ((ours, ours_params), (ref, ref_params)):
            run(opt, params, 4, 1.0, start=4)
        assert_params(ours_params, ref_params, 1e-12 if path == "fused" else None)


@pytest.mark.parametrize("path", list(FLAGS))
def test_state_made_in_inference_mode_cannot_be_stepped_outside_it(path):
    """As in torch: inference tensors cannot be updated in place outside inference mode. The
    fused path raises before its compiled graph could write them, with nothing changed."""
    for cls, flags in ((torch.optim.Adam, {}), (Adam, FLAGS[path])):
        params = make_params(torch.float64)
        opt = cls(params, lr=LR, foreach=False)  # the first step: on the for-loop
        loss_fn(params, 1, skip=False).backward()
        with torch.inference_mode():
            opt.step()
        opt.param_groups[0].update({"foreach": None, **flags})
        before = [p.detach().clone() for p in params]
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside"):
            opt.step()
        if flags.get("fused"):
            assert_params(params, before, None)


def test_fused_takes_zero_tensor_and_negated_gradients():
    """Gradients without memory (zero tensors) or lazily negated: materialised first, since
    inductor's kernels read neither right."""
    opts = most_options("adam")
    results = []
    for flags in ({"fused": True}, {}):
        params = make_params(torch.float64)
        opt = Adam(params, lr=LR, **opts, **flags)
        for k in range(4):
            opt.zero_grad()
            loss_fn(params, k, -1.0, skip=False).backward()
            params[0].grad = torch._neg_view(-params[0].grad)
            params[1].grad = torch._efficientzerotensor(params[1].shape, dtype=torch.float64)
            opt.step()
        results.append(params)
    assert_params(*results, 1e-12)


# ---------------------------------------------------------------- inductor's cache directory
@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """A private default cache dir and home for ``private_cache_dir`` (restored after)."""
    import torch._inductor.config
    from torch._inductor.runtime import cache_dir_utils

    default = tmp_path / "default"
    monkeypatch.setattr(cache_dir_utils, "default_cache_dir", lambda: str(default))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setattr(_fused, "_cache_checked", False)
    monkeypatch.setattr(torch._inductor.config, "cpp_cache_precompile_headers", True)
    return tmp_path


def private(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def test_inductor_cache_is_made_private_when_absent(cache_env):
    chosen = _fused.private_cache_dir()
    assert chosen == str(cache_env / "default") == os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert private(cache_env / "default")
    assert stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700


@pytest.mark.parametrize("kind", ["world-writable", "symlink", "other owner"])
def test_planted_inductor_cache_is_never_used(cache_env, monkeypatch, kind):
    """A directory another user could have filled is not used: neither as the configured
    cache nor as the default one (whose precompiled headers inductor reads regardless)."""
    planted = cache_env / "planted"
    if kind == "symlink":
        (cache_env / "elsewhere").mkdir()
        planted.symlink_to(cache_env / "elsewhere")
    else:
        planted.mkdir()
        planted.chmod(0o777 if kind == "world-writable" else 0o755)
    if kind == "other owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a directory to another user")
        os.chown(planted, 65534, 65534)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(planted))
    with pytest.warns(UserWarning, match="is not a private directory of this user"):
        chosen = _fused.private_cache_dir()
    assert chosen == str(cache_env / "home" / "optbench" / "torchinductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == chosen and private(Path(chosen))
    assert torch._inductor.config.cpp_cache_precompile_headers  # (the default dir is fine)
    from torch._inductor.runtime import cache_dir_utils

    monkeypatch.setattr(cache_dir_utils, "default_cache_dir", lambda: str(planted))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    with pytest.warns(UserWarning, match="is not a private directory"):
        _fused.private_cache_dir()
    assert not torch._inductor.config.cpp_cache_precompile_headers


def test_inductor_cache_is_checked_before_the_first_compile(cache_env, monkeypatch):
    planted = cache_env / "planted"
    planted.mkdir()
    planted.chmod(0o777)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(planted))
    seen = []

    def compiled(fn):
        return lambda *args, **kwargs: seen.append(os.environ["TORCHINDUCTOR_CACHE_DIR"])

    monkeypatch.setattr(_fused, "compiled", compiled)
    params = make_params(torch.float64)
    opt = Adam(params, fused=True)
    loss_fn(params, 1).backward()
    with pytest.warns(UserWarning, match="not a private directory"):
        opt.step()
    assert seen == [str(cache_env / "home" / "optbench" / "torchinductor")]


@pytest.mark.slow
def test_fused_step_never_writes_or_reads_a_planted_cache(tmp_path):
    """End to end, in a fresh process: a world-writable TORCHINDUCTOR_CACHE_DIR stays empty,
    and the step's code is compiled into (and loaded from) the private fallback."""
    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)
    code = (
        "import torch, optimizers\n"
        "p = torch.nn.Parameter(torch.ones(5))\n"
        "opt = optimizers.SGD([p], lr=0.1, fused=True)\n"
        "p.grad = torch.ones(5)\n"
        "opt.step()\n"
        "assert torch.allclose(p, torch.full((5,), 0.9))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(planted)}
    env["XDG_CACHE_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(planted.iterdir()) == []
    assert any((tmp_path / "home" / "optbench" / "torchinductor").iterdir())


# ---------------------------------------------------------------- the default path is plain
def test_import_and_default_steps_compile_nothing_and_start_no_thread():
    """Nor do they import torch._dynamo (torch.optim's zero_grad, state_dict, ... would, through
    their _disable_dynamo wrapper: seconds of every worker's start and exit)."""
    code = (
        "import sys, threading, torch, optimizers\n"
        "for name in optimizers.available():\n"
        "    p = torch.nn.Parameter(torch.ones(5))\n"
        "    opt = optimizers.create(name, [p], lr=0.1)\n"
        "    for _ in range(3):\n"
        "        p.grad = torch.ones(5)\n"
        "        opt.step()\n"
        "        opt.zero_grad()\n"
        "    opt.load_state_dict(opt.state_dict())\n"
        "    opt.add_param_group({'params': [torch.nn.Parameter(torch.ones(2))]})\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "assert not optimizers._fused._cache_checked\n"
        "assert 'torch._inductor.codecache' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr


class _SubclassOfTorchSGD(torch.optim.SGD):
    """How any torch.optim subclass calls torch's methods: through super()."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)

    def state_dict(self):
        return super().state_dict()

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)


@pytest.mark.parametrize("method", ["zero_grad", "state_dict", "add_param_group"])
def test_torch_methods_keep_their_graph_break_under_torch_compile(method):
    """Outside a trace our classes call torch's methods without the _disable_dynamo wrapper;
    inside one the wrapper is kept: the same graph break (torch's method not traced) and the
    same results as a subclass of torch.optim.SGD calling super()."""
    from torch._dynamo.utils import counters

    outcomes = []
    for cls in (_SubclassOfTorchSGD, SGD):
        torch._dynamo.reset()
        counters.clear()
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3)
        opt = cls([p], lr=0.1)
        extra = torch.nn.Parameter(torch.ones(2))

        def f(x, opt=opt, extra=extra):
            if method == "add_param_group":
                opt.add_param_group({"params": [extra]})
            else:
                getattr(opt, method)()
            return x * 2

        out = torch.compile(f, backend="eager")(torch.ones(2))
        reasons = {r.split("\n")[0] + r.split("qualname: ")[1].split(",")[0]
                   for r in counters["graph_break"]}  # fmt: skip
        outcomes.append((out.tolist(), p.grad is None, len(opt.param_groups), reasons))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][3] == {f"Attempted to call function marked as skippedOptimizer.{method}"}


def test_beyond_the_recompile_limit_a_step_runs_uncompiled(monkeypatch):
    """Past RECOMPILE_LIMIT graphs (dynamo would fail the step under fullgraph) the update
    runs eagerly, with a warning: the same math."""
    monkeypatch.setattr(_fused, "RECOMPILE_LIMIT", 1)
    results = []
    for flags in ({"fused": True}, {"foreach": True}):
        params = [torch.nn.Parameter(torch.ones(n, dtype=torch.float64)) for n in (7, 5)]
        opts = [SGD([p], lr=0.1, momentum=0.9, **flags) for p in params]  # two graphs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                for p, opt in zip(params, opts, strict=True):
                    p.grad = torch.arange(p.numel(), dtype=torch.float64)
                    opt.step()
        if flags.get("fused"):
            assert any("runs uncompiled" in str(w.message) for w in caught)
        results.append(params)
    assert_params(*results, 1e-12)
