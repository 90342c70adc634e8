"""`python -m bench.run` end to end: sweeps, resume after kill -9 and Ctrl-C, determinism across
--jobs, divergence, failures, and every bad input (exit 2, one line on stderr, nothing lost)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import store as S
from bench import tasks as T
from bench.run import main

ROOT = Path(__file__).resolve().parents[1]
SURFACES = "rosenbrock,beale,long_valley"  # x all 8 optimizers = 24 short runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def run_cli(args: list[str], data_dir: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.run", "--data-dir", data_dir, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_cli(args: list[str], data_dir: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--data-dir", data_dir, "--quiet", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_runs(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while len(list((folder / "runs").glob("*.json"))) < n:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < end
        time.sleep(0.01)


def check_store(out: Path, expected_runs: int) -> pd.DataFrame:
    """Records, summary and curves agree: each run once, each (run, step) once."""
    records = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    summary = pd.read_csv(out / "summary.csv")
    curves = pd.read_csv(out / "curves.csv")
    assert len(records) == expected_runs
    assert sorted(summary["run_id"]) == sorted(records) and summary["run_id"].is_unique
    assert not curves.duplicated(["run_id", "step"]).any()
    assert set(curves["run_id"]) <= set(records)  # a failed run may have no rows
    for run_id, r in records.items():
        assert r["run_id"] == run_id
        assert (curves["run_id"] == run_id).sum() == len(r["curves"]["step"])
    assert not list(out.rglob("*.tmp"))
    return summary


# ---------------------------------------------------------------------------- sweeps


def test_sweep_end_to_end_and_rerun_skips(tmp_path, data_dir, capsys):
    out = tmp_path / "store"
    args = ["--task", "mnist1d_logreg,long_valley", "--optim", "adam,sgd", "--sched", "constant"]
    args += ["--seeds", "2", "--steps", "30", "--eval-every", "10", "--out", str(out)]
    p = run_cli(args, data_dir, CI="1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 9 and lines[0].startswith("[1/8] mnist1d_logreg adam constant seed=0")
    assert "8 ok, 0 diverged, 0 failed" in lines[-1]
    assert "\r" not in p.stderr and "%|" not in p.stderr  # CI and no terminal: no bars
    summary = check_store(out, 8)
    assert set(summary["status"]) == {"ok"}
    assert (summary["steps"] == 30).all()
    for row in summary.itertuples():  # without --lr, each optimizer's documented default per task
        assert row.lr0 == T.TASKS[row.task].lr[row.optim]
    curves = pd.read_csv(out / "curves.csv")
    real = curves[curves["task"] == "mnist1d_logreg"]
    assert real["test_acc"].notna().groupby(real["run_id"]).sum().eq(4).all()  # steps 0, 10, 20, 30
    surf = curves[curves["task"] == "long_valley"]
    assert surf["x"].notna().all() and surf["test_loss"].isna().all()
    assert real["x"].isna().all()

    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert main([*args, "--data-dir", data_dir, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")} == before

    assert main([*args, "--data-dir", data_dir, "--seeds", "3", "--task", "long_valley"]) == 0
    assert "2 run(s)" in capsys.readouterr().out.splitlines()[-1]  # only seed 2 is new
    assert main([*args, "--data-dir", data_dir, "--seeds", "3", "--force", "--quiet"]) == 0
    check_store(out, 12)  # 8 + seed 2 of both tasks x 2 optimizers; --force rewrote, not duplicated


def test_columns_match_the_interface(tmp_path, data_dir):
    out = tmp_path / "s"
    assert (
        main(
            [
                "--task",
                "saddle",
                "--steps",
                "5",
                "--out",
                str(out),
                "--quiet",
                "--data-dir",
                data_dir,
            ]
        )
        == 0
    )
    summary_cols = [  # INTERFACES.md, in this order
        "run_id", "task", "optim", "sched", "seed", "lr0", "steps", "status", "final_train_loss",
        "final_test_loss", "final_test_acc", "best_test_acc", "diverged_at_step", "wall_s",
        "steps_per_s", "device",
    ]  # fmt: skip
    curve_cols = [
        "run_id", "task", "optim", "sched", "seed", "step", "lr", "train_loss", "test_loss",
        "test_acc", "elapsed_s", "x", "y",
    ]  # fmt: skip
    assert list(pd.read_csv(out / "summary.csv").columns[:16]) == summary_cols
    assert list(pd.read_csv(out / "curves.csv").columns[:13]) == curve_cols


def test_divergence_is_recorded_and_the_sweep_goes_on(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    argv = ["--task", "rosenbrock,long_valley", "--optim", "sgd", "--lr", "0.15", "--steps", "100"]
    code = main([*argv, "--out", str(out), "--quiet", "--data-dir", data_dir])
    assert code == 0
    summary = pd.read_csv(out / "summary.csv").set_index("task")
    assert summary.loc["rosenbrock", "status"] == "diverged"
    assert 0 < summary.loc["rosenbrock", "diverged_at_step"] < 100
    assert summary.loc["long_valley", "status"] == "ok"  # SGD is stable below 2/L = 0.2 there
    curves = pd.read_csv(out / "curves.csv")
    rb = curves[curves["task"] == "rosenbrock"]
    assert rb["step"].max() == summary.loc["rosenbrock", "diverged_at_step"]


def test_failed_run_exit_1_and_retried_on_rerun(tmp_path, data_dir, capsys, monkeypatch):
    def broken_model():
        raise ValueError("the model cannot be built")

    task = T.TASKS["mnist1d_logreg"]
    monkeypatch.setitem(T.TASKS, task.name, dataclasses.replace(task, model=broken_model))
    out = tmp_path / "s"
    argv = ["--task", "mnist1d_logreg,saddle", "--steps", "5",
            "--out", str(out), "--data-dir", data_dir, "--quiet"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "failed: ValueError: the model cannot be built" in err
    summary = pd.read_csv(out / "summary.csv").set_index("task")
    assert summary.loc["mnist1d_logreg", "status"] == "failed"
    assert "cannot be built" in summary.loc["mnist1d_logreg", "error"]
    assert summary.loc["saddle", "status"] == "ok"  # the surface ignores the batch size
    saddle_json = next(p for p in (out / "runs").glob("*.json") if "saddle" in p.read_text())
    mtime = saddle_json.stat().st_mtime_ns
    assert main(argv) == 1  # the failed run is retried (and fails again), the ok one is skipped
    assert saddle_json.stat().st_mtime_ns == mtime
    check_store(out, 2)


# ---------------------------------------------------------------------------- interruption


def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path, data_dir):
    out = tmp_path / "s"
    args = ["--task", SURFACES, "--optim", "all", "--steps", "300", "--out", str(out)]
    proc = start_cli(args, data_dir)
    wait_for_runs(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivors = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert 3 <= len(survivors) < 24
    assert main([*args, "--quiet", "--data-dir", data_dir]) == 0
    check_store(out, 24)
    for name, content in survivors.items():  # finished runs were kept, not rerun
        assert (out / "runs" / name).read_bytes() == content


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_ctrl_c_exits_130_and_keeps_finished_runs(tmp_path, data_dir, jobs):
    out = tmp_path / "s"
    args = [
        "--task",
        SURFACES,
        "--optim",
        "all",
        "--steps",
        "300",
        "--jobs",
        jobs,
        "--out",
        str(out),
    ]
    proc = start_cli(args, data_dir)
    wait_for_runs(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    n = len(list((out / "runs").glob("*.json")))
    assert n < 24
    check_store(out, n)


# ---------------------------------------------------------------------------- determinism


def test_jobs_1_and_2_give_bit_identical_curves(tmp_path, data_dir):
    args = [
        "--task",
        "mnist1d_mlp,beale",
        "--optim",
        "adam,momentum",
        "--seeds",
        "2",
        "--steps",
        "120",
        "--quiet",
    ]
    assert main([*args, "--jobs", "1", "--out", str(tmp_path / "1"), "--data-dir", data_dir]) == 0
    p = run_cli([*args, "--jobs", "2", "--out", str(tmp_path / "2")], data_dir)  # spawned workers
    assert p.returncode == 0, p.stderr
    a, b = (pd.read_csv(tmp_path / j / "curves.csv", dtype=str) for j in ("1", "2"))
    assert len(a) > 100
    pd.testing.assert_frame_equal(a.drop(columns="elapsed_s"), b.drop(columns="elapsed_s"))


# ---------------------------------------------------------------------------- bad input


BAD = [
    (["--optim", "adamm"], "unknown optimizer 'adamm'; did you mean 'adam'?"),
    (["--sched", "staircas"], "unknown schedule 'staircas'; did you mean 'staircase'?"),
    (["--task", "mnist1d_mpl"], "unknown task 'mnist1d_mpl'; did you mean 'mnist1d_mlp'?"),
    (["--optim", "adam,,sgd"], "empty optimizer name"),
    (["--seeds", "0"], "--seeds must be a positive integer"),
    (["--seeds", "-2"], "--seeds must be a positive integer"),
    (["--seeds", "1,x"], "--seeds must be a non-negative integer, got 'x'"),
    (["--steps", "0"], "--steps must be a positive integer, got '0'"),
    (["--steps", "1.5"], "--steps must be a positive integer"),
    (["--batch-size", "-4"], "--batch-size must be a positive integer"),
    (["--lr", "0"], "--lr must be a positive number, got '0'"),
    (["--lr", "fast"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr=-1e-3"], "--lr must be a positive number, got '-1e-3'"),
    (["--warmup", "-1"], "--warmup must be a non-negative integer"),
    (["--warmup", "5", "--steps", "4"], "--warmup 5 must be below the 4 steps of mnist1d_mlp"),
    (["--eval-every", "0"], "--eval-every must be a positive integer"),
    (["--jobs", "0"], "--jobs must be a positive integer"),
    (["--threads", "two"], "--threads must be a positive integer"),
    (
        ["--opt-arg", "momentum"],
        "--opt-arg expects key=value or OPTIMIZER:key=value, got 'momentum'",
    ),
    (["--opt-arg", "=3"], "--opt-arg expects key=value"),
    (["--opt-arg", "betas=(0.9,"], "is not a Python literal"),
    (["--opt-arg", "momentum=0.9"], "momentum"),  # adam does not accept it: the registry says so
    (["--opt-arg", "lr=0.1"], "give the learning rate with --lr"),
    (["--sched-arg", "bogus=1"], "bogus"),
    (["--sched-arg", "decay_rate"], "--sched-arg expects key=value"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["--optimizer", "adam"], "unrecognized arguments: --optimizer adam"),
    (["--steps"], "expected one argument"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "--device cuda: CUDA is not available here"))
    BAD.append((["--device", "cuda:1"], "CUDA is not available here"))


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exit_2_one_line(tmp_path, capsys, argv, message, data_dir):
    out = tmp_path / "s"
    code = main([*argv, "--out", str(out), "--data-dir", data_dir])
    cap = capsys.readouterr()
    assert code == 2
    assert cap.err.count("\n") == 1 and cap.err.startswith("bench.run: error: "), cap.err
    assert message in cap.err
    assert not out.exists() or not list((out / "runs").glob("*.json"))


def test_bad_input_leaves_the_store_untouched(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    assert (
        main(
            [
                "--task",
                "saddle",
                "--steps",
                "5",
                "--out",
                str(out),
                "--quiet",
                "--data-dir",
                data_dir,
            ]
        )
        == 0
    )
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["--task", "saddle", "--optim", "adamm", "--out", str(out)]) == 2
    assert main(["--task", "saddle", "--opt-arg", "x=", "--out", str(out)]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_unwritable_out_exit_2_before_any_work(tmp_path, data_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["--task", "saddle", "--out", str(blocker / "store"), "--data-dir", data_dir])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write to --out" in err


def test_bad_input_from_the_shell_has_no_traceback(tmp_path, data_dir):
    p = run_cli(["--optim", "adamm", "--out", str(tmp_path / "s")], data_dir)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("bench.run: error: unknown optimizer 'adamm'; did you mean 'adam'?")
    assert p.stderr.count("\n") == 1


def test_list_and_help(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "optimizers",
        "schedules",
        "tasks",
        "adam",
        "staircase",
        "mnist1d_mlp",
        "rosenbrock",
        "cifar10_3c3d",
    ):
        assert word in out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--opt-arg" in capsys.readouterr().out


def test_store_lock_is_a_usage_error(tmp_path, data_dir, capsys):
    with S.Store(tmp_path / "s"):
        assert main(["--task", "saddle", "--out", str(tmp_path / "s"), "--data-dir", data_dir]) == 2
    assert "in use by another bench.run" in capsys.readouterr().err


def test_out_inside_reference_results_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import run as R

    target = R.REFERENCE_DIR / "mine"
    code = R.main(["--task", "beale", "--steps", "2", "--out", str(target), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "reference" in err[0]
    assert not target.exists()
