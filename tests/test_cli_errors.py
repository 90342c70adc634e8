"""Bad input is one line and exit 2 with the store untouched, sizes have stated maxima, and
nothing a run builds grows with --steps: bench.run end to end (in process, and a few from the
shell), bench.validate's checks one by one, and bench.plot on a hand-edited table."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
import torch
from _cli import copy_store, one_error_line, run_bench, snapshot

import optimizers
import schedulers
from bench import data as D
from bench import plot
from bench import tasks as T
from bench import validate as V
from bench.run import main
from bench.train import RunConfig, row_steps, train_one_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir) -> Path:
    """A store of two finished runs (and the mnist1d data generated in data_dir)."""
    out = tmp_path_factory.mktemp("finished") / "s"
    argv = ["--task", "saddle,mnist1d_logreg", "--steps", "10", "--eval-every", "5", "--quiet"]
    assert main([*argv, "--out", str(out), "--data-dir", data_dir]) == 0
    (out / ".lock").unlink(missing_ok=True)  # made by older versions; no part of the contents
    return out


a_file = Path(__file__)  # a --data-dir that is a file
BAD = [
    (["--opt-arg", "betas=(0.9,)"], "adam's betas must be a tuple of 2 finite numbers"),
    (["--opt-arg", "foreach=True", "--opt-arg", "fused=True"], "cannot be `True` together"),
    (["--opt-arg", "eps=0x" + "f" * 5000], "--opt-arg eps: the value has 5002 characters; at most"),
    (["--opt-arg", "eps=0x" + "f" * 900], "an integer beyond 64 bits"),
    (["--opt-arg", "amsgrad='yes'"], "--opt-arg amsgrad='yes': adam's amsgrad must be True or"),
    (["--opt-arg", "eps=True"], "--opt-arg eps=True: adam's eps must be a finite number"),
    (["--opt-arg", "eps=1e999"], "--opt-arg eps=1e999: not finite"),
    (["--opt-arg", "betas={0.9}"], "--opt-arg betas={0.9}: a set"),
    (["--optim", "sgd", "--opt-arg", "momentum='0.9'"], "sgd's momentum must be a finite number"),
    (["--sched", "staircase", "--sched-arg", "staircase=1"], "staircase must be True or False"),
    (["--seeds", "99999999999999999999999,1"], f"--seeds must be at most {V.MAX_SEED}"),
    (["--seeds", "99999999999999999999999"], f"--seeds must be at most {V.MAX_SEED_COUNT}"),
    (["--steps", "99999999999999999999999"], f"--steps must be at most {V.MAX_STEPS}"),
    (["--eval-every", "99999999999999999999999"], f"--eval-every must be at most {V.MAX_STEPS}"),
    (["--eval-every", "1", "--steps", "100000"], "at most 10000: use --eval-every 10 or more"),
    (["--lr", "grid", "--lr-grid", "1e-3:1:1000000"], "--lr-grid LO:HI:N: N must be at most 200"),
    (["--threads", "5000"], f"--threads must be at most {V.MAX_THREADS}"),
    (["--optim", "all", "--sched", "all", "--seeds", "700"], "at most 100000 per command"),
    (["--task", "mnist1d_logreg", "--batch-size", "5000"], "exceeds the 4000 training samples"),
    (["--task", "mnist1d_cnn", "--data-dir", "/proc/optbench"], "cannot write mnist1d to /proc"),
    (["--task", "mnist1d_cnn", "--data-dir", str(a_file)], "(Not a directory); choose a writable"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a)[:50] for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_the_store_untouched(
    tmp_path, finished, data_dir, capsys, argv, message
):
    out = copy_store(finished, tmp_path / "s")
    before = snapshot(out)
    code = main(
        ["--task", "saddle", "--steps", "5", "--data-dir", data_dir, *argv, "--out", str(out)]
    )
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert message in line
    assert snapshot(out) == before


def test_empty_out_is_a_usage_error(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # '' would otherwise mean the current folder
    assert main(["--task", "saddle", "--steps", "5", "--out", "", "--data-dir", data_dir]) == 2
    assert "--out must name a folder, got ''" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_read_only_data_dir_is_a_usage_error(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]
        ).returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        folder.chmod(0o555)
    try:
        argv = ["--task", "mnist1d_logreg", "--steps", "5", "--data-dir", str(folder)]
        assert main([*argv, "--out", str(tmp_path / "s")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write mnist1d to {folder / 'mnist1d'}" in line
        assert "choose a writable folder with --data-dir" in line
        assert not (tmp_path / "s").exists()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_from_the_shell_no_traceback(tmp_path, data_dir):
    p = run_bench("--task", "saddle", "--out", str(tmp_path / "s"),
                  "--opt-arg", "foreach=True", "--opt-arg", "fused=True")  # fmt: skip
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert "--opt-arg foreach=True fused=True: " in one_error_line(p.stderr)


def test_threads_beyond_the_cores_warn(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setattr(V, "cores", lambda: 2)
    argv = ["--task", "saddle", "--steps", "3", "--threads", "3", "--quiet", "--data-dir", data_dir]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert err == (
        "bench.run: warning: --threads 3 is more than the 2 cores here; each run gets slower, "
        "not faster\n"
    )


# ---------------------------------------------------------------------------- bounded resources


def test_nothing_a_run_builds_grows_with_its_steps(monkeypatch):
    rows, evals = row_steps(10**9, 10**9)
    assert len(rows) == 501 and evals == {0, 10**9}

    def stop(x, y):  # the first update fails: what is measured is the run's set-up
        raise RuntimeError("stopped after the set-up")

    task = T.TASKS["rosenbrock"]
    monkeypatch.setitem(T.TASKS, task.name, dataclasses.replace(task, surface=stop))
    config = RunConfig("rosenbrock", "sgd", "constant", 0, 10, None, 0.1, eval_every=10)
    train_one_run(config)  # imports and first-use caches before measuring
    tracemalloc.start()
    try:
        record = train_one_run(dataclasses.replace(config, steps=10**7, eval_every=10**7))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert record["error"] == "RuntimeError: stopped after the set-up"
    assert peak < 5_000_000, peak  # a table per step would be 80 MB


def test_eval_period_is_bounded():
    assert V.eval_period(None, 200, 4000) == 200
    assert V.eval_period(None, 500, 5) == 5
    assert V.eval_period(None, 200, 10**9) == 10**9 // V.MAX_EVALS  # stretched
    assert V.eval_period(7, 200, 1000) == 7
    assert V.eval_period(10**6, 200, 1000) == 10**6  # beyond the run: the last step only
    with pytest.raises(V.ArgumentError, match="--eval-every 1 evaluates 100000 times"):
        V.eval_period(1, 200, 100_000, "saddle")


def test_sweep_size():
    V.sweep_size(1000, 100)
    with pytest.raises(V.ArgumentError, match=r"makes 101000 runs .* \+ 1 grid points"):
        V.sweep_size(1000, 100, 1)


# ---------------------------------------------------------------------------- validators


@pytest.mark.parametrize(
    "text, kwargs, value",
    [("5", {}, 5), (" 7 ", {}, 7), ("+3", {}, 3), ("0", {"minimum": 0}, 0), ("007", {}, 7),
     (str(V.MAX_INT), {}, V.MAX_INT)],
)  # fmt: skip
def test_integer_accepts(text, kwargs, value):
    assert V.integer("--n", text, **kwargs) == value


@pytest.mark.parametrize(
    "text, kwargs, message",
    [("0", {}, "--n must be a positive integer, got '0'"),
     ("-2", {"minimum": 0}, "--n must be a non-negative integer, got '-2'"),
     ("1.5", {}, "positive integer"), ("x", {}, "positive integer"), ("", {}, "positive integer"),
     ("\u0663", {}, "positive integer"), ("11", {"maximum": 10}, "--n must be at most 10"),
     ("9" * 5000, {}, "--n must be at most 9223372036854775807, got '9999"),
     ("9" * 5000, {}, "(5000 characters)")],
)  # fmt: skip
def test_integer_refuses(text, kwargs, message):
    with pytest.raises(V.ArgumentError) as e:
        V.integer("--n", text, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_seeds():
    assert V.seeds("3") == [0, 1, 2]
    assert V.seeds("0,5,5,7") == [0, 5, 7]
    assert V.seeds(f"{V.MAX_SEED},1") == [V.MAX_SEED, 1]
    for text, message in [
        ("0", "--seeds must be a positive integer"),
        (",", "--seeds must be N or a comma list"),
        ("1,x", "--seeds must be a non-negative integer, got 'x'"),
        (f"{V.MAX_SEED + 1},1", f"--seeds must be at most {V.MAX_SEED}"),
        (str(V.MAX_SEED_COUNT + 1), f"--seeds must be at most {V.MAX_SEED_COUNT}"),
    ]:
        with pytest.raises(V.ArgumentError, match=message):
            V.seeds(text)


def test_lr_grid():
    assert len(V.lr_grid("1e-3:1:4")) == 4 and len(V.lr_grid(f"1e-3:1:{V.MAX_GRID_POINTS}")) > 100
    for spec in (f"1e-3:1:{V.MAX_GRID_POINTS + 1}", "1e-3:1:" + "9" * 40):
        with pytest.raises(V.ArgumentError, match="N must be at most 200"):
            V.lr_grid(spec)
    with pytest.raises(V.ArgumentError, match="--lr-grid must be LO:HI:N"):
        V.lr_grid("a:b:c")


def test_parse_kv():
    items = ["betas=(0.9, 0.99)", "amsgrad=True", "name='x'", "n=3", "v=[1, 2.5]", "w=None"]
    assert V.parse_kv("--opt-arg", items) == {
        "betas": (0.9, 0.99), "amsgrad": True, "name": "x", "n": 3, "v": [1, 2.5], "w": None,
    }  # fmt: skip
    for item, message in [
        ("x", "--opt-arg expects key=value, got 'x'"),
        ("=3", "expects key=value"),
        ("x=(0.9,", "is not a Python literal"),
        ("x=" + "1" * 1001, "the value has 1001 characters; at most 1000"),
        ("x=1e999", "x=1e999: not finite"),
        ("x=(1, float('nan'))", "not a Python literal"),
        ("x=(1, (2, -1e400))", "not finite"),
        ("x=2**70", "not a Python literal"),
        ("x=" + str(2**64), "an integer beyond 64 bits"),
        ("x={'a': 1}", "a dict"),
        ("x=b'1'", "a bytes"),
        ("x=1j", "a complex"),
        ("x=" + "(" * 500 + ")" * 500, "is not a Python literal"),
    ]:
        with pytest.raises(V.ArgumentError) as e:
            V.parse_kv("--opt-arg", [item])
        assert message in str(e.value), (item, str(e.value))


def test_every_default_value_passes_the_checks():
    """The checks accept what the constructors take by default (each keyword on its own)."""
    p = [torch.zeros(1, requires_grad=True)]
    for name in optimizers.available():
        for key, value in V.optimizer_defaults(name).items():
            if key == "lr":
                continue
            try:
                optimizers.create(name, p, lr=1e-3, **{key: value})
            except ValueError:  # a keyword the name fixes (nesterov's nesterov)
                continue
            V.check_optimizer(name, {key: value})
    for name in schedulers.available():
        for key, value in schedulers.defaults(name, 1000, 1.0).items():
            V.check_schedule(name, [1000], 0, {key: value})


@pytest.mark.parametrize(
    "name, kwargs, message",
    [("adam", {"amsgrad": "yes"}, "--opt-arg amsgrad='yes': adam's amsgrad must be True or False"),
     ("adam", {"amsgrad": 1}, "amsgrad must be True or False"),
     ("adam", {"eps": True}, "adam's eps must be a finite number"),
     ("adam", {"eps": "1e-8"}, "adam's eps must be a finite number"),
     ("adam", {"betas": (0.9,)}, "betas must be a tuple of 2 finite numbers such as (0.9, 0.999)"),
     ("adam", {"betas": (0.9, "a")}, "betas must be a tuple of 2 finite numbers"),
     ("adam", {"betas": 0.9}, "betas must be a tuple of 2 finite numbers"),
     ("adam", {"foreach": "yes"}, "foreach must be True, False or None"),
     ("sgd", {"fused": 1}, "fused must be True, False or None"),
     ("rprop", {"etas": (0.5, 1.2, 3)}, "etas must be a tuple of 2 finite numbers"),
     ("adam", {"foreach": True, "fused": True}, "--opt-arg foreach=True fused=True: "),
     ("adam", {"weight_decay": -1}, "--opt-arg weight_decay=-1: Invalid weight_decay value: -1"),
     ("adam", {"momentum": 0.9}, "optimizer 'adam' does not accept 'momentum'")],
)  # fmt: skip
def test_check_optimizer_refuses(name, kwargs, message):
    with pytest.raises(V.ArgumentError) as e:
        V.check_optimizer(name, kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_check_schedule_refuses():
    for name, kwargs, message in [
        ("staircase", {"staircase": 1}, "staircase's staircase must be True or False"),
        ("piecewise", {"boundaries": [1, "a"]}, "boundaries must be a list of finite numbers"),
        ("exponential", {"decay_rate": "x"}, "decay_rate must be a finite number"),
        ("constant", {"bogus": 1}, "--sched-arg bogus=1: "),
    ]:
        with pytest.raises(V.ArgumentError, match=message.replace("(", r"\(")):
            V.check_schedule(name, [100, 1000], 0, kwargs)


def test_out_dir():
    assert V.out_dir("results/x") == "results/x"
    for text in ("", "  "):
        with pytest.raises(V.ArgumentError, match="--out must name a folder"):
            V.out_dir(text)


def test_batch_fits(finished, data_dir):
    def config(task: str, batch: int | None) -> RunConfig:
        return RunConfig(task, "sgd", "constant", 0, 5, batch, 0.1, data_dir=data_dir)

    V.batch_fits([config("mnist1d_logreg", 4000), config("saddle", None)])
    with pytest.raises(V.ArgumentError, match="--batch-size 4001 exceeds the 4000 training"):
        V.batch_fits([config("mnist1d_logreg", 4001)])
    assert D.train_size("mnist1d", data_dir) == 4000 and D.train_size("CIFAR10", data_dir) == 50000


# ---------------------------------------------------------------------------- bench.plot


@pytest.mark.parametrize("column", ["lr0", "final_train_loss", "steps", "seed"])
def test_plot_of_a_non_numeric_summary_is_one_line_and_writes_nothing(
    tmp_path, finished, capsys, column
):
    results = tmp_path / "store"
    results.mkdir()
    shutil.copy(finished / "curves.csv", results)
    summary = pd.read_csv(finished / "summary.csv")
    summary[column] = summary[column].astype(object)
    summary.loc[1, column] = "fast"
    summary.to_csv(results / "summary.csv", index=False)
    figures = tmp_path / "figures"
    with pytest.raises(SystemExit) as e:
        plot.main(["--results", str(results), "--out", str(figures)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert f"summary.csv: column {column} must hold numbers, but line 3 has 'fast'" in err[0]
    assert not figures.exists()
