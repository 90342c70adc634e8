"""Bring your own optimizer and task: a user's package (an optimizer class and tasks made with the
public helpers) run through the command line, a sweep file and the Python API beside
``torch.optim.AdamW``; a throwaway installed distribution's entry points in ``--list`` and in a
sweep; every bad input (exit 2, one line on stderr, the store byte for byte as it was)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench
from bench import tasks as T
from bench import train
from bench.run import main
from bench.train import RunConfig

ROOT = Path(__file__).resolve().parents[1]

OPTIM = '''
import torch


class SignSGD(torch.optim.Optimizer):
    """theta <- theta - lr * sign(grad)."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


class NoDefaultLr(SignSGD):
    def __init__(self, params, lr):
        super().__init__(params, lr=lr)


def helper():
    return 1
'''

TASKS = """
import torch

import bench


def bowl(x, y):
    return x**2 + 10 * y**2


bowl_task = bench.surface_task("bowl", fn=bowl, start=(2.0, 1.0), steps=12, target=1.0)


def blobs(data_dir):
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 8, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    x = centers[y] + torch.randn(300, 8, generator=g)
    return x[:240], y[:240], x[240:], y[240:]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def tiny_mlp():  # a factory of no arguments
    return bench.classification_task(
        "tiny_mlp", model=mlp, data=blobs, steps=12, batch_size=40, eval_every=4,
        lr={"userpkg.optim:SignSGD": 0.01}, target=0.5,
    )


class QuadraticProblem:
    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(20, 4, generator=g)
        self.b = torch.randn(20, generator=g)
        self.w = torch.zeros(4, requires_grad=True)
        self.params = [self.w]

    def train_loss(self):
        return ((self.a @ self.w - self.b) ** 2).mean()

    def evaluate(self):
        return {"test_loss": self.train_loss().item()}


class Quadratic:  # the Problem protocol, no helper
    steps = 10

    def build(self, seed, device, data_dir):
        return QuadraticProblem(seed)


quadratic = Quadratic()


class NoSteps:
    def build(self, seed, device, data_dir):
        return QuadraticProblem(seed)


no_steps = NoSteps()


def failing_data(data_dir):
    raise FileNotFoundError("blobs.npz is not in " + data_dir)


broken_data = bench.classification_task(
    "broken_data", model=mlp, data=failing_data, steps=5, batch_size=10
)


class Bare:
    steps = 5

    def build(self, seed, device, data_dir):
        return object()


bare = Bare()


def not_a_task():
    return 42
"""

SWEEP = dict(
    optim=["adam", "torch.optim.AdamW", "userpkg.optim:SignSGD"],
    task=["userpkg.tasks:bowl_task", "userpkg.tasks:tiny_mlp"],
    seeds=2,
)
FLAGS = ["--optim", ",".join(SWEEP["optim"]), "--task", ",".join(SWEEP["task"]), "--seeds", "2"]
SWEEP_TOML = """
optim = ["adam", "torch.optim.AdamW", "userpkg.optim:SignSGD"]
task = ["userpkg.tasks:bowl_task", "userpkg.tasks:tiny_mlp"]
seeds = 2
"""


def write_package(root: Path, name: str, files: dict[str, str]) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for filename, text in files.items():
        (pkg / filename).write_text(textwrap.dedent(text))
    return root


def forget_user_code(prefixes: tuple[str, ...]) -> None:
    """Drop what this process resolved or imported of the test packages."""
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]
    for spec in [s for s in T._RESOLVED if s.split(".")[0].split(":")[0] in prefixes]:
        del T._RESOLVED[spec]
    train.optimizer_spec.cache_clear()


@pytest.fixture
def userpkg(tmp_path, monkeypatch):
    """``userpkg`` (optim.py, tasks.py, broken.py) in a folder of its own on sys.path; pytest's
    tmp_path is private to this user (mode 0700), so specs may import from it."""
    folder = write_package(
        tmp_path / "code", "userpkg", {"optim.py": OPTIM, "tasks.py": TASKS, "broken.py": "x = y"}
    )
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    forget_user_code(("userpkg",))
    yield folder
    forget_user_code(("userpkg",))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def records(store: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (store / "runs").glob("*.json")}


def adamw_on_bowl(steps: int) -> list[list[float]]:
    """The bowl's trajectory under torch.optim.AdamW, run by hand: the reference."""
    xy = torch.nn.Parameter(torch.tensor([2.0, 1.0], dtype=torch.float64))
    opt = torch.optim.AdamW([xy])
    points = [xy.detach().tolist()]
    for _ in range(steps):
        loss = xy[0] ** 2 + 10 * xy[1] ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        points.append(xy.detach().tolist())
    return points


# ---------------------------------------------------------------------------- the done-when test


def test_user_optimizer_and_tasks_through_cli_sweep_file_and_api(
    userpkg, tmp_path, data_dir, monkeypatch
):
    # the command line, from the folder that holds the package (the current directory is
    # searched), with two worker processes that import the user's code again
    cli_store = tmp_path / "cli"
    args = [*FLAGS, "--jobs", "2", "--quiet", "--out", str(cli_store), "--data-dir", data_dir]
    p = run_cli(args, cwd=userpkg)
    assert p.returncode == 0, p.stderr
    done = records(cli_store)
    summary = pd.read_csv(cli_store / "summary.csv", dtype={"run_id": str})
    assert len(done) == len(summary) == 12 and set(summary["status"]) == {"ok"}
    assert set(summary["optim"]) == set(SWEEP["optim"])  # the spec strings are the names
    assert set(summary["task"]) == set(SWEEP["task"])
    lrs = summary.groupby(["task", "optim"])[["lr0", "lr_source"]].first()
    bowl, mlp, sign = "userpkg.tasks:bowl_task", "userpkg.tasks:tiny_mlp", "userpkg.optim:SignSGD"
    assert {k: tuple(v.values()) for k, v in lrs.to_dict("index").items()} == {
        (bowl, "adam"): (1e-3, "default"),  # a built-in's documented default
        (bowl, "torch.optim.AdamW"): (1e-3, "class_default"),  # its signature's default
        (bowl, sign): (0.05, "class_default"),
        (mlp, "adam"): (1e-3, "default"),
        (mlp, "torch.optim.AdamW"): (1e-3, "class_default"),
        (mlp, sign): (0.01, "default"),  # the task's lr for it
    }

    # the numbers are torch.optim.AdamW's own, and the identity holds torch's version
    adamw = [r for r in done.values() if r["config"]["optim"] == "torch.optim.AdamW"]
    on_bowl = next(r for r in adamw if r["config"]["task"] == "userpkg.tasks:bowl_task")
    curves = on_bowl["curves"]
    assert [[x, y] for x, y in zip(curves["x"], curves["y"], strict=True)] == adamw_on_bowl(12)
    assert on_bowl["summary"]["steps_done"] == 12
    version = f"torch=={metadata.version('torch')}"
    assert {r["config"]["optim_version"] for r in adamw} == {version}
    config = RunConfig(**on_bowl["config"])
    assert config.run_id == on_bowl["run_id"]
    upgraded = RunConfig(**{**on_bowl["config"], "optim_version": "torch==99.0"})
    assert upgraded.run_id != config.run_id  # upgrading the package reruns
    on_mlp = [r for r in done.values() if r["config"]["task"] == mlp]
    assert all(r["curves"]["step"] == list(range(13)) for r in on_mlp)
    assert all(sum(a is not None for a in r["curves"]["test_acc"]) == 4 for r in on_mlp)

    # the same sweep as a sweep file, in this process, whose sys.path alone holds the package:
    # the workers get it from the driver. The same runs, the same numbers
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(SWEEP_TOML)
    toml_store = tmp_path / "toml"
    argv = ["--config", str(sweep_file), "--jobs", "2", "--quiet", "--out", str(toml_store)]
    assert main([*argv, "--data-dir", data_dir]) == 0
    again = records(toml_store)
    assert again.keys() == done.keys()
    for run_id, r in again.items():
        assert r["curves"] == {**done[run_id]["curves"], "elapsed_s": r["curves"]["elapsed_s"]}

    # and through the Python API on the first store: every row, nothing run again
    before = {p.name: p.stat().st_mtime_ns for p in (cli_store / "runs").iterdir()}
    rows = bench.sweep(**SWEEP, out=cli_store, data_dir=data_dir, quiet=True)
    assert sorted(rows["run_id"]) == sorted(done)
    assert {p.name: p.stat().st_mtime_ns for p in (cli_store / "runs").iterdir()} == before
    pd.testing.assert_frame_equal(
        rows.set_index("run_id").sort_index()[["optim", "task", "lr0", "final_train_loss"]],
        summary.set_index("run_id").sort_index()[["optim", "task", "lr0", "final_train_loss"]],
    )


def test_problem_protocol_task_without_helpers(userpkg, tmp_path, data_dir):
    out = tmp_path / "s"
    argv = ["--task", "userpkg.tasks:quadratic", "--optim", "sgd,userpkg.optim:SignSGD"]
    assert main([*argv, "--quiet", "--out", str(out), "--data-dir", data_dir]) == 0
    done = records(out)
    assert len(done) == 2
    for r in done.values():
        assert r["status"] == "ok" and r["config"]["steps"] == 10
        assert r["curves"]["x"] == [None] * 11  # no position(): no trajectory
        losses = r["curves"]["test_loss"]
        assert losses[0] is not None and losses[-1] < losses[0]  # evaluated at 0 and at the end


def test_a_failing_user_task_is_a_failed_run_with_its_message(userpkg, tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    argv = ["--task", "userpkg.tasks:broken_data,userpkg.tasks:bare", "--optim", "sgd"]
    assert main([*argv, "--quiet", "--out", str(out), "--data-dir", data_dir]) == 1
    errors = sorted(r["error"] for r in records(out).values())
    assert errors == [
        "FileNotFoundError: blobs.npz is not in " + data_dir,
        "TypeError: task 'userpkg.tasks:bare': build() returned a object without params, "
        "train_loss, evaluate (see bench.protocols.Problem)",
    ]


# ---------------------------------------------------------------------------- entry points

ENTRY_POINTS = """\
[optbench.optimizers]
demosign = demo_optbench.optim:SignSGD

[optbench.tasks]
demobowl = demo_optbench.tasks:bowl_task
"""


def install(site: Path, version: str) -> None:
    """A distribution as importlib.metadata finds it on sys.path: a ``*.dist-info`` folder."""
    for old in site.glob("demo_optbench-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"demo_optbench-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: demo-optbench\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("demo_optbench\n")


def test_entry_points_in_list_and_in_a_sweep(tmp_path):
    site = tmp_path / "site"
    write_package(site, "demo_optbench", {"optim.py": OPTIM, "tasks.py": TASKS})
    install(site, "1.2.3")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    p = run_cli(["--list"], cwd=tmp_path, **env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(
        line.split()
        == ["demosign", "demo_optbench.optim:SignSGD", "from", "demo-optbench", "1.2.3"]
        for line in lines
    ), p.stdout
    assert any(line.split()[:2] == ["demobowl", "demo_optbench.tasks:bowl_task"] for line in lines)

    out = tmp_path / "store"
    args = ["--optim", "adam,demosign", "--task", "demobowl,beale", "--steps", "5", "--quiet"]
    p = run_cli([*args, "--out", str(out)], cwd=tmp_path, **env)
    assert p.returncode == 0, p.stderr
    first = records(out)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["optim"].unique()) == ["adam", "demosign"]
    assert sorted(summary["task"].unique()) == ["beale", "demobowl"]
    assert {r["config"]["optim_version"] for r in first.values()} == {None, "demo-optbench==1.2.3"}
    assert {r["config"]["task_version"] for r in first.values()} == {None, "demo-optbench==1.2.3"}

    install(site, "1.3.0")  # an upgrade reruns what came from the package, and only that
    p = run_cli([*args, "--out", str(out)], cwd=tmp_path, **env)
    assert p.returncode == 0, p.stderr
    new = {k: r for k, r in records(out).items() if k not in first}
    assert len(new) == 3  # demosign on beale, and both optimizers on demobowl
    assert all("demo-optbench==1.3.0" in r["config"].values() for r in new.values())


# ---------------------------------------------------------------------------- bad input

BAD = [
    (["--optim", "userpkg.broken:Opt"], "module 'userpkg.broken' does not import: NameError"),
    (["--optim", "nosuchmodule:Opt"], "No module named 'nosuchmodule'"),
    (["--optim", "nosuchmodule.Opt"], "cannot import 'nosuchmodule.Opt'"),
    (["--optim", "userpkg.optim:Missing"], "'userpkg.optim' has no attribute 'Missing'"),
    (["--optim", "userpkg.optim:helper"], "is a function, not a subclass of torch.optim.Optimizer"),
    (["--optim", "torch.nn.Linear"], "not a subclass of torch.optim.Optimizer"),
    (["--optim", "lion"], "unknown optimizer 'lion'"),
    (
        ["--optim", "userpkg.optim:SignSGD", "--opt-arg", "userpkg.optim:SignSGD:momentum=0.9"],
        "optimizer 'userpkg.optim:SignSGD' does not accept 'momentum'; it accepts lr",
    ),
    (
        ["--optim", "torch.optim.AdamW", "--opt-arg", "torch.optim.AdamW:betas=(2.0, 0.9)"],
        "optimizer 'torch.optim.AdamW' rejects its arguments",
    ),
    (["--optim", "userpkg.optim:NoDefaultLr"], "has no default lr"),
    (
        ["--optim", "adam,userpkg.optim:SignSGD", "--opt-arg", "momentum=0.9"],
        "no optimizer of this run accepts 'momentum'",
    ),
    (["--opt-arg", "sgd:momentum=0.9"], "'sgd' is not an optimizer of this run (adam)"),
    (["--opt-arg", "adam:lr=0.1"], "give the learning rate with --lr"),
    (
        ["--sched-arg", "staircase:decay_rate=0.5"],
        "'staircase' is not a schedule of this run (constant)",
    ),
    (["--sched-arg", "decay_rate=0.5"], "no schedule of this run accepts 'decay_rate'"),
    (["--task", "userpkg.tasks:missing"], "'userpkg.tasks' has no attribute 'missing'"),
    (["--task", "userpkg.tasks:not_a_task"], "returned a int, not a task"),
    (["--task", "userpkg.tasks:no_steps"], "has no default number of steps; give --steps"),
    (["--task", "userpkg.tasks:quadratic", "--batch-size", "4"], "makes its own batches"),
    (["--task", "userpkg.broken:task"], "module 'userpkg.broken' does not import"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("kept") / "store"
    argv = [
        "--task",
        "saddle",
        "--steps",
        "3",
        "--quiet",
        "--out",
        str(out),
        "--data-dir",
        data_dir,
    ]
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exit_2_one_line_store_intact(userpkg, store, data_dir, capsys, argv, message):
    files = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    argv = ["--task", "saddle", *argv, "--out", str(store), "--data-dir", data_dir]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench.run: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == files


def test_code_where_other_users_can_write_is_refused(tmp_path, monkeypatch, store, capsys):
    shared = tmp_path / "shared"
    write_package(shared, "wwpkg", {"optim.py": OPTIM})
    shared.chmod(0o777)  # like /tmp: anyone could have put this package here
    monkeypatch.setattr(sys, "path", [str(shared), *sys.path])
    files = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    try:
        assert (
            main(["--task", "saddle", "--optim", "wwpkg.optim:SignSGD", "--out", str(store)]) == 2
        )
    finally:
        forget_user_code(("wwpkg",))
    err = capsys.readouterr().err
    assert "other users can write to that directory" in err and err.count("\n") == 1
    assert "wwpkg" not in sys.modules
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == files
