"""bench.verify: every built-in optimizer against its torch twin, broken optimizers caught, CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench import verify as V
from bench.specs import class_spec
from bench.verify import main, verify

STEPS = 12  # resume after step 6; b2 lacks a gradient on steps 1, 4, 7, 10
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- reference formulas
class ClassicalMomentum(torch.optim.Optimizer):
    """v <- mu v - lr g; theta <- theta + v (nesterov: theta + mu v - lr g): our Momentum's rule."""

    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))  # fmt: skip

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = p.grad + g["weight_decay"] * p
                v = self.state[p].setdefault("velocity", torch.zeros_like(p))
                v.copy_(g["momentum"] * v - g["lr"] * grad)
                p += g["momentum"] * v - g["lr"] * grad if g["nesterov"] else v


class ScaledRprop(torch.optim.Optimizer):
    """iRprop- with theta <- theta - sign(g) * step_size * lr_t / lr_0 (lr_0: initial_lr)."""

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50)):
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            eta_minus, eta_plus = g["etas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    lr0 = g.get("initial_lr", g["lr"])
                    st.update(prev=torch.zeros_like(p), size=torch.full_like(p, lr0), lr0=lr0)
                grad = p.grad.clone()
                s = torch.sign(grad * st["prev"])
                factor = torch.ones_like(s)
                factor[s > 0], factor[s < 0] = eta_plus, eta_minus
                st["size"] = (st["size"] * factor).clamp(*g["step_sizes"])
                grad = torch.where(s < 0, 0.0, grad)
                p -= torch.sign(grad) * st["size"] * (g["lr"] / st["lr0"])
                st["prev"] = grad


# ---------------------------------------------------------------- broken optimizers
BROKEN = '''
import torch


class AdamNoBiasCorrection(torch.optim.Optimizer):
    """Adam without the 1 / (1 - beta^t) corrections: wrong from the first step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["exp_avg"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(st["exp_avg"], st["exp_avg_sq"].sqrt().add_(g["eps"]), value=-g["lr"])
'''
namespace: dict = {}
exec(compile(BROKEN, "<broken>", "exec"), namespace)
AdamNoBiasCorrection = namespace["AdamNoBiasCorrection"]


class SGDDroppingMomentum(torch.optim.SGD):
    """Steps as torch's SGD, but its state_dict loses the momentum buffers."""

    def state_dict(self):
        sd = super().state_dict()
        sd["state"] = {
            k: {n: v for n, v in s.items() if n != "momentum_buffer"}
            for k, s in sd["state"].items()
        }
        return sd


class AdamCachingLr(torch.optim.Adam):
    """Reads each group's lr once, at its first step: deaf to a schedule."""

    @torch.no_grad()
    def step(self, closure=None):
        now = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g.setdefault("first_lr", g["lr"])
        super().step()
        for g, lr in zip(self.param_groups, now, strict=True):
            g["lr"] = lr


class RaisesAtStep3(torch.optim.SGD):
    def step(self, closure=None):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            raise RuntimeError("bad state")
        return super().step()


# ---------------------------------------------------------------- built-ins vs torch
# name -> (reference, opt_args, checks whose documented semantics differ from the reference's)
TWINS = {
    "adam": ("torch.optim.Adam", {}, ()),
    "adam-amsgrad": ("torch.optim.Adam", {"amsgrad": True, "weight_decay": 0.01}, ()),
    "sgd": ("torch.optim.SGD", {}, ()),
    "sgd-momentum": (
        "torch.optim.SGD",
        {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        (),
    ),
    "adagrad": ("torch.optim.Adagrad", {"lr_decay": 0.01}, ()),
    "rmsprop": ("torch.optim.RMSprop", {"centered": True, "momentum": 0.5}, ()),
    "adadelta": ("torch.optim.Adadelta", {}, ()),
    # Momentum keeps lr-scaled velocity: equal to SGD(momentum) at a constant lr, not under a
    # schedule; Rprop multiplies its step by lr_t / lr_0 where torch ignores later lr changes.
    "momentum": ("torch.optim.SGD", {"torch.optim.SGD:momentum": 0.9}, ("schedule",)),
    "nesterov": (
        "torch.optim.SGD",
        {"torch.optim.SGD:momentum": 0.9, "torch.optim.SGD:nesterov": True},
        ("schedule",),
    ),
    "rprop": ("torch.optim.Rprop", {}, ("schedule",)),
}


@pytest.mark.parametrize("case", list(TWINS))
def test_builtin_matches_its_torch_twin(case):
    against, opt_args, differs = TWINS[case]
    report = verify(case.split("-")[0], against, opt_args=opt_args, steps=STEPS, skip=differs)
    assert report.ok, str(report)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["params"] == statuses["resume"] == "pass"
    assert report.check("params").max_rel <= 1e-12
    assert report.check("resume").max_abs == 0


def test_the_twins_cover_every_builtin():
    import optimizers

    assert {case.split("-")[0] for case in TWINS} == set(optimizers.available())


@pytest.mark.parametrize("name", ["momentum", "nesterov", "rprop"])
def test_documented_schedule_differences_are_caught(name):
    against, opt_args, _ = TWINS[name]
    report = verify(name, against, opt_args=opt_args, steps=STEPS)
    assert not report.ok and report.check("schedule").status == "FAIL"
    assert report.check("params").status == "pass"


@pytest.mark.parametrize(
    ("name", "reference", "opt_args"),
    [
        ("momentum", ClassicalMomentum, {"weight_decay": 0.01}),
        ("nesterov", ClassicalMomentum, {"ClassicalMomentum:nesterov": True}),
        ("rprop", ScaledRprop, {}),
    ],
)
def test_momentum_and_rprop_match_their_formulas_under_a_schedule(name, reference, opt_args):
    spec = class_spec(reference)  # a class passed in is named by its import path
    opt_args = {k.replace("ClassicalMomentum:", f"{spec}:"): v for k, v in opt_args.items()}
    report = verify(name, reference, opt_args=opt_args, steps=STEPS)
    assert report.ok, str(report)
    assert report.check("schedule").status == "pass"


def test_float32_default_tolerance():
    report = verify("adam", "torch.optim.Adam", steps=STEPS, dtype="float32")
    assert report.ok and report.rtol == 1e-5 and report.dtype == "float32"


def test_shared_and_private_state_keys_are_reported():
    report = verify("rprop", "torch.optim.Rprop", steps=STEPS, skip=["schedule"])
    assert report.check("state").status == "pass"
    text = str(report)
    assert "only rprop keeps lr0" in text and "shared keys prev, step, step_size" in text
    report = verify("momentum", "torch.optim.SGD", opt_args={"torch.optim.SGD:momentum": 0.9},
                    steps=STEPS, skip=["schedule"])  # fmt: skip
    assert report.check("state").status == "n/a"
    assert "no shared key, so only the params were compared" in str(report)


# ---------------------------------------------------------------- failures are caught
def test_adam_without_bias_correction_fails_at_step_1():
    report = verify(AdamNoBiasCorrection, "torch.optim.Adam", steps=STEPS)
    params = report.check("params")
    assert not report.ok
    assert (params.status, params.first_step, params.tensor) == ("FAIL", 1, "w1")
    assert params.max_rel > 1e-3
    assert report.check("state").first_step == 2  # step 1's moments are right, its update is not
    assert "FAIL params: they part at step 1 in w1" in str(report)


def test_state_dict_that_drops_a_key_fails_the_resume_check():
    args = {"momentum": 0.9}
    report = verify(SGDDroppingMomentum, "torch.optim.SGD", opt_args=args, steps=STEPS)
    assert report.check("params").status == report.check("state").status == "pass"
    resume = report.check("resume")
    assert resume.status == "FAIL" and resume.first_step == STEPS // 2
    assert resume.tensor == "state[w1]['momentum_buffer']"
    assert resume.detail == "state[w1]['momentum_buffer'] is missing after the round trip at step 6"
    assert not report.ok
    # the honest SGD resumes bitwise, the check is not failing for everyone
    assert verify("torch.optim.SGD", "sgd", opt_args=args, steps=STEPS).ok


def test_optimizer_deaf_to_the_schedule_fails_the_schedule_check():
    report = verify(AdamCachingLr, "torch.optim.Adam", steps=STEPS)
    assert report.check("params").status == "pass"
    assert report.check("schedule").status == "FAIL"


def test_schedule_that_changes_neither_trajectory_is_not_a_pass():
    report = verify(AdamCachingLr, AdamCachingLr, steps=STEPS)
    assert report.check("schedule").status == "n/a"
    assert "the schedule changed neither trajectory" in str(report)


class SignDescent(torch.optim.Optimizer):
    """theta <- theta - 0.001 sign(g): no lr at all."""

    def __init__(self, params, scale=0.001):
        super().__init__(params, {"scale": scale})

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.sub_(g["scale"] * p.grad.sign())


def test_optimizers_without_an_lr_have_no_schedule_check():
    report = verify(SignDescent, SignDescent, steps=4)
    assert report.ok and report.check("schedule").status == "n/a"
    assert report.check("params").status == "pass"


def test_an_exception_in_step_is_a_failed_check():
    report = verify(RaisesAtStep3, "torch.optim.SGD", steps=STEPS)
    params = report.check("params")
    assert (params.status, params.first_step) == ("FAIL", 3)
    assert "raised at step 3: RuntimeError: bad state" in params.detail
    assert report.check("schedule").status == "FAIL"


def test_difference():
    t = torch.tensor
    assert V.difference(t([1.0, 2.0]), t([1.0, 2.0])) == (0.0, 0.0)
    assert V.difference(t([1.0, 4.0]), t([1.0, 2.0])) == (2.0, 0.5)
    assert V.difference(t([math.nan, 1.0]), t([math.nan, 1.0])) == (0.0, 0.0)
    assert V.difference(t([math.nan, 1.0]), t([0.0, 1.0])) == (math.inf, math.inf)
    assert V.difference(t([1.0]), t([1.0, 1.0])) == (math.inf, math.inf)
    assert V.difference(3, t(3.0)) == (0.0, 0.0)
    assert V.difference((0.9, 0.99), (0.9, 0.99)) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 1}, "steps must be an integer >= 2"),
        ({"dtype": "float16"}, "dtype must be one of float64, float32"),
        ({"rtol": -1.0}, "rtol must be a number >= 0"),
        ({"skip": ["params"]}, "cannot skip 'params'"),
        ({"opt_args": {"nope": 1}}, "no optimizer of this run accepts 'nope'"),
        ({"opt_args": {"betas": (2.0, 0.9)}}, "rejects its arguments"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        verify("adam", "torch.optim.Adam", **kwargs)


def test_no_lr_anywhere_is_a_value_error():
    class NoLr(torch.optim.SGD):
        def __init__(self, params, lr):
            super().__init__(params, lr=lr)

    with pytest.raises(ValueError, match="has a default lr; give --opt-arg lr="):
        verify(NoLr, NoLr, steps=2)
    assert verify(NoLr, "torch.optim.SGD", opt_args={"lr": 0.1}, steps=4).ok


# ---------------------------------------------------------------- command line
def test_cli_pass_prints_the_table(capsys):
    assert main(["adam", "--against", "torch.optim.Adam", "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "check     result  max abs diff  max rel diff  first step apart  tensor" in out
    assert out.rstrip().endswith("pass: adam matches torch.optim.Adam")


def test_cli_opt_args_and_skip(capsys):
    argv = ["momentum", "--against", "torch.optim.SGD", "--steps", "6", "--opt-arg",
            "torch.optim.SGD:momentum=0.9", "--opt-arg", "weight_decay=0.01"]  # fmt: skip
    assert main(argv) == 1
    assert "FAIL schedule: they part at step 2" in capsys.readouterr().out
    assert main([*argv, "--skip", "schedule"]) == 0
    assert "schedule  skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["adam"], "the following arguments are required: --against"),
        (["adm", "--against", "torch.optim.Adam"], "did you mean 'adam'"),
        (["adam", "--against", "torch.optim.Adamx"], "has no attribute 'Adamx'"),
        (["adam", "--against", "torch.optim.Adam", "--steps", "x"], "invalid int value"),
        (["adam", "--against", "torch.optim.Adam", "--dtype", "half"], "invalid choice"),
        (["adam", "--against", "torch.optim.Adam", "--opt-arg", "eps"], "expects key=value"),
        (["adam", "--against", "torch.optim.Adam", "--opt-arg", "eps=1e-"], "not a Python literal"),
        (["adam", "--against", "torch.optim.Adam", "--skip", "resume,params"], "cannot skip"),
        (["adam", "--against", "torch.nn.Linear"], "not a subclass of torch.optim.Optimizer"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(capsys, argv, match):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("bench.verify: error: ")
    assert match in captured.err


def test_cli_subprocess_exit_code_with_a_user_module(tmp_path):
    """The command as a user runs it, from the directory that holds their module."""
    (tmp_path / "my_adam.py").write_text(textwrap.dedent(BROKEN))
    cmd = [sys.executable, "-m", "bench.verify", "my_adam:AdamNoBiasCorrection",
           "--against", "torch.optim.Adam", "--steps", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "FAIL params: they part at step 1 in w1" in done.stdout


def test_cli_user_module_in_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_adam2.py").write_text(textwrap.dedent(BROKEN))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.delitem(sys.modules, "my_adam2", raising=False)
    assert main(["my_adam2:Missing", "--against", "adam"]) == 2
    assert capsys.readouterr().err == "bench.verify: error: 'my_adam2' has no attribute 'Missing'\n"
    assert main(["my_adam2:AdamNoBiasCorrection", "--against", "adam", "--steps", "3"]) == 1
    sys.modules.pop("my_adam2", None)
