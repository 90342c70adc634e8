"""bench.run --lr search / --lr grid and time to target, on tasks whose answers are known.

long_valley is f = 0.05 x^2 + 5 y^2 from (-4, 1): gradient descent multiplies y by (1 - 10 lr)
each step, so SGD is stable iff lr < 2/L = 0.2 (L = 10), and lr = 0.2 exactly keeps |y| = 1
(marginally stable: the loss stays at 5 + 0.05 x^2, below its start 5.8, so it passes).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import tuning as U
from bench.run import main

ROOT = Path(__file__).resolve().parents[1]
SGD_VALLEY = ["--task", "long_valley", "--optim", "sgd", "--sched", "constant"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def files(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.json")}


def valley_loss(lr: float, k: int) -> float:
    """f after k SGD steps on long_valley, closed form."""
    return 0.05 * 16 * (1 - 0.1 * lr) ** (2 * k) + 5 * (1 - 10 * lr) ** (2 * k)


# ---------------------------------------------------------------------------- halving search


@pytest.mark.parametrize(
    "lr_max, expected, verdicts",
    [
        (10.0, 0.15625, ["diverged"] * 6 + ["passed"]),  # 10, 5, ..., 0.3125 diverge
        (6.72, 0.105, ["diverged"] * 6 + ["passed"]),  # 0.21 = 6.72 / 32 diverges
        (0.401, 0.10025, ["diverged", "above_start", "passed"]),  # 0.2005: unstable, slow
        (6.4, 0.2, ["diverged"] * 5 + ["passed"]),  # 6.4 / 32 = 2/L: marginal, passes
    ],
)
def test_halving_stops_at_the_first_lr_that_passes(tmp_path, data_dir, lr_max, expected, verdicts):
    out = tmp_path / "s"
    args = [*SGD_VALLEY, "--lr", "search", "--lr-max", str(lr_max), "--seeds", "2"]
    assert main([*args, "--out", str(out), "--data-dir", data_dir, "--quiet"]) == 0
    probes = pd.read_csv(out / "lr_search.csv")
    assert probes["lr"].tolist() == [lr_max / 2**k for k in range(len(verdicts))]
    assert probes["verdict"].tolist() == verdicts
    assert probes["initial_loss"].eq(5.8).all()
    summary = pd.read_csv(out / "summary.csv")
    assert summary["lr0"].tolist() == [expected, expected]
    assert summary["lr_tuned"].tolist() == [expected, expected]
    assert summary["lr_source"].eq("search").all()
    # the accepted probe is seed 0's run itself (same config): copied, not run twice
    assert probes["run_id"].iloc[-1] == summary["run_id"].iloc[0]


def test_search_is_reused_on_rerun_and_extends_without_new_probes(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    args = [*SGD_VALLEY, "--lr", "search", "--out", str(out), "--data-dir", data_dir]
    assert main([*args, "--seeds", "1"]) == 0
    first = capsys.readouterr().out
    assert "lr search long_valley sgd constant: lr 0.15625 after 7 probe(s)" in first
    assert "0 run(s)" in first.splitlines()[-1]  # the seed-0 run is the accepted probe
    before, table = files(out), (out / "lr_search.csv").read_bytes()
    assert main([*args, "--seeds", "1"]) == 0
    again = capsys.readouterr().out
    assert "[1/" not in again and files(out) == before  # no probe and no run again
    assert (out / "lr_search.csv").read_bytes() == table
    assert main([*args, "--seeds", "2", "--quiet"]) == 0  # one more seed: only its run
    assert len(files(out / "runs")) == 2 and len(files(out / "lr_search")) == 7


def test_search_probe_steps_and_no_lr_passing(tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "s"
    base = [*SGD_VALLEY, "--out", str(out), "--data-dir", data_dir, "--quiet"]
    assert main([*base, "--lr", "search", "--probe-steps", "50"]) == 0
    probes = pd.read_csv(out / "lr_search.csv")
    assert probes["steps"].eq(50).all() and probes["verdict"].iloc[-1] == "passed"
    assert pd.read_csv(out / "summary.csv")["steps"].tolist() == [500]  # the runs are full length

    monkeypatch.setattr(U, "MAX_HALVINGS", 2)  # 10, 5, 2.5: all diverge
    out2 = tmp_path / "none"
    code = main([*SGD_VALLEY, "--lr", "search", "--out", str(out2), "--data-dir", data_dir])
    cap = capsys.readouterr()
    assert code == 1
    assert "long_valley sgd constant: no lr passed the search" in cap.err
    assert "no lr (diverged at 2.5) after 3 probe(s)" in cap.out
    assert len(pd.read_csv(out2 / "lr_search.csv")) == 3
    assert pd.read_csv(out2 / "summary.csv").empty  # no runs at a guessed lr


def test_search_resumes_after_kill_9_without_redoing_probes(tmp_path, data_dir):
    out = tmp_path / "s"
    args = ["--task", "mnist1d_logreg", "--optim", "sgd,adam", "--lr", "search", "--lr-max", "100"]
    args += ["--steps", "300", "--out", str(out), "--data-dir", data_dir, "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=ROOT)
    end = time.monotonic() + 120
    while len(list((out / "lr_search" / "runs").glob("*.json"))) < 6:
        assert proc.poll() is None and time.monotonic() < end, "the search ended too early"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = files(out / "lr_search")
    assert main(args) == 0
    probes = pd.read_csv(out / "lr_search.csv")
    assert not probes.duplicated(["optim", "lr"]).any()
    assert {p: t for p, t in files(out / "lr_search").items() if p in kept} == kept  # not redone
    assert len(files(out / "lr_search")) == len(probes)
    chosen = probes[probes["verdict"] == "passed"].set_index("optim")["lr"]
    summary = pd.read_csv(out / "summary.csv").set_index("optim")
    assert summary["lr0"].to_dict() == chosen.to_dict()


def test_search_with_jobs_2_matches_jobs_1(tmp_path, data_dir):
    """Parallel rounds (one worker pool for the whole search) choose and record the same."""
    args = ["--task", "long_valley,beale", "--optim", "sgd,adam", "--lr", "search", "--quiet"]
    args += ["--steps", "200", "--data-dir", data_dir]
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        assert main([*args, "--jobs", jobs, "--out", str(out)]) == 0
        probes = pd.read_csv(out / "lr_search.csv")
        summary = pd.read_csv(out / "summary.csv")[["run_id", "lr0", "final_train_loss"]]
        tables.append((probes, summary))
    pd.testing.assert_frame_equal(tables[0][0], tables[1][0])
    pd.testing.assert_frame_equal(tables[0][1], tables[1][1])
    assert len(tables[0][0]) > 8  # several rounds


def test_halving_lrs_are_exact():
    assert U.halving_lrs(10.0, 6)[-1] == 0.15625
    assert len(U.halving_lrs(1.0)) == U.MAX_HALVINGS + 1


# ---------------------------------------------------------------------------- grid


def test_grid_picks_the_closed_form_best_and_reuses_it(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    args = [*SGD_VALLEY, "--lr", "grid", "--lr-grid", "0.01:0.32:6", "--steps", "100"]
    args += ["--seeds", "2", "--out", str(out), "--data-dir", data_dir, "--quiet"]
    assert main(args) == 0
    tuning = pd.read_csv(out / "tuning.csv")
    assert tuning["lr"].tolist() == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
    assert tuning["status"].tolist() == ["ok"] * 5 + ["diverged"]
    assert math.isnan(tuning["value"].iloc[-1]) and tuning["metric"].eq("final_train_loss").all()
    # row 100's train loss is f at theta_99 (the loss computed by update 100)
    for row in tuning.iloc[:5].itertuples():
        assert row.value == pytest.approx(valley_loss(row.lr, 99), rel=1e-9)
    expected = min([0.01, 0.02, 0.04, 0.08, 0.16], key=lambda lr: valley_loss(lr, 99))
    assert expected == 0.16
    summary = pd.read_csv(out / "summary.csv")
    assert summary["lr0"].tolist() == [0.16, 0.16] and summary["lr_source"].eq("grid").all()
    assert summary["run_id"].iloc[0] in set(tuning["run_id"])  # seed 0: the grid's own run
    before = files(out)
    assert main(args) == 0 and files(out) == before  # rerun: no grid point, no run again


def test_grid_classifier_selects_on_test_accuracy(tmp_path, data_dir):
    out = tmp_path / "s"
    args = ["--task", "mnist1d_logreg", "--optim", "sgd", "--lr", "grid", "--lr-grid", "1e-3:1:4"]
    args += ["--steps", "60", "--eval-every", "30", "--out", str(out), "--data-dir", data_dir]
    assert main([*args, "--quiet"]) == 0
    tuning = pd.read_csv(out / "tuning.csv")
    assert tuning["metric"].eq("final_test_acc").all()
    ok = tuning[tuning["status"] == "ok"]
    best = ok.sort_values(["value", "final_test_loss"], ascending=[False, True]).iloc[0]
    assert pd.read_csv(out / "summary.csv")["lr0"].tolist() == [best["lr"]]


def test_select_best_ties_and_exclusions():
    rows = [
        dict(lr=0.1, status="ok", final_test_acc=0.8, final_test_loss=0.5),
        dict(lr=0.01, status="ok", final_test_acc=0.8, final_test_loss=0.5),  # full tie: smaller lr
        dict(lr=0.3, status="ok", final_test_acc=0.8, final_test_loss=0.7),
        dict(lr=1.0, status="diverged", final_test_acc=0.9, final_test_loss=0.1),
        dict(lr=3.0, status="failed", final_test_acc=None, final_test_loss=None),
    ]
    assert U.select_best("mnist1d_mlp", rows)["lr"] == 0.01
    surf = [dict(lr=0.1, status="ok", final_train_loss=-0.5), dict(lr=1, status="ok",
            final_train_loss=-0.9)]  # fmt: skip
    assert U.select_best("saddle", surf)["lr"] == 1
    assert U.select_best("saddle", [dict(lr=1, status="diverged", final_train_loss=1.0)]) is None


def test_parse_grid():
    assert U.parse_grid("1e-5:1e1:13")[:3] == [1e-5, 3.162e-5, 1e-4]
    assert U.parse_grid("1e-5:1e1:13")[-1] == 10.0 and len(U.parse_grid("1e-5:1e1:13")) == 13
    assert U.parse_grid("0.5:0.5:1") == [0.5]


# ---------------------------------------------------------------------------- targets


def test_steps_and_time_to_target_and_retargeting(tmp_path, data_dir):
    out = tmp_path / "s"
    args = [*SGD_VALLEY, "--lr", "0.1", "--steps", "500", "--out", str(out)]
    args += ["--data-dir", data_dir, "--quiet"]
    assert main([*args, "--target", "0.5"]) == 0
    # one row per step (500 steps); row s logs f(theta_{s-1}): the first s with f <= 0.5
    first = next(k for k in range(300) if valley_loss(0.1, k) <= 0.5) + 1
    s = pd.read_csv(out / "summary.csv").iloc[0]
    assert (s["target_metric"], s["target"], s["steps_to_target"]) == ("train_loss", 0.5, first)
    assert s["lr_source"] == "shared" and math.isnan(s["lr_tuned"])
    curves = pd.read_csv(out / "curves.csv")
    assert s["time_to_target"] == curves.loc[curves["step"] == first, "elapsed_s"].item()

    before = files(out)
    assert main([*args, "--target", "long_valley=1e-9"]) == 0  # unreachable in 500 steps
    s = pd.read_csv(out / "summary.csv").iloc[0]
    assert s["target"] == 1e-9 and math.isnan(s["steps_to_target"])
    assert math.isnan(s["time_to_target"])
    assert main(args) == 0  # the task's default target again; the run itself never reran
    s = pd.read_csv(out / "summary.csv").iloc[0]
    assert s["target"] == 1e-3 and s["steps_to_target"] > first
    record = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert record["target"] == {"metric": "train_loss", "value": 1e-3}
    assert set(files(out)) == set(before)


def test_list_shows_the_targets(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "target: test_acc >= 0.65" in out and "target: train_loss <= 0.001" in out


def test_time_to_target_on_accuracy_skips_unmeasured_rows():
    curves = {
        "step": [0, 1, 2, 3, 4],
        "test_acc": [0.1, None, 0.5, None, 0.7],
        "elapsed_s": [0.0, 0.1, 0.2, 0.3, 0.4],
    }
    assert U.time_to_target(curves, "test_acc", 0.5) == (2, 0.2)
    assert U.time_to_target(curves, "test_acc", 0.8) == (None, None)
    assert U.time_to_target({"step": [0, 1], "train_loss": [None, 1.0], "elapsed_s": [0, 1]},
                            "train_loss", 2.0) == (1, 1)  # fmt: skip


# ---------------------------------------------------------------------------- bad input


BAD = [
    (["--lr", "fast"], "--lr must be a positive number, got 'fast'; or 'search'"),
    (["--lr", "-1"], "--lr must be a positive number, got '-1'; or 'search'"),
    (["--lr", "search", "--lr-max", "0"], "--lr-max must be a positive number, got '0'"),
    (["--lr", "search", "--lr-max", "big"], "--lr-max must be a positive number, got 'big'"),
    (["--lr", "search", "--lr-max", "inf"], "--lr-max must be a positive number"),
    (["--lr", "search", "--probe-steps", "0"], "--probe-steps must be a positive integer"),
    (["--lr", "search", "--probe-steps", "2.5"], "--probe-steps must be a positive integer"),
    (["--lr", "grid", "--lr-grid", "1e-5:1e1"], "--lr-grid must be LO:HI:N"),
    (["--lr", "grid", "--lr-grid", "0:1:3"], "--lr-grid must be LO:HI:N"),
    (["--lr", "grid", "--lr-grid", "1:0.1:3"], "--lr-grid must be LO:HI:N"),
    (["--lr", "grid", "--lr-grid", "1e-3:1:0"], "--lr-grid must be LO:HI:N"),
    (["--lr", "grid", "--lr-grid", "a:b:c"], "got 'a:b:c'"),
    (["--lr", "grid", "--lr-grid", "1e-3:1:2.5"], "--lr-grid must be LO:HI:N"),
    (["--lr-max", "1"], "--lr-max is only used with --lr search"),
    (["--lr", "grid", "--probe-steps", "5"], "--probe-steps is only used with --lr search"),
    (["--lr", "0.1", "--lr-grid", "1:2:2"], "--lr-grid is only used with --lr grid"),
    (["--target", "high"], "--target must be a number or TASK=NUMBER"),
    (["--target", "nan"], "--target must be a number"),
    (["--target", "mnist1d_mlp=x"], "--target must be a number"),
    (["--target", "0.5,0.6"], "--target must be a number"),
    (["--target", "beale=0.1"], "task 'beale' is not in this command's --task"),
    (["--lr", "search", "--warmup", "5", "--probe-steps", "5"], "below --probe-steps 5"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exit_2_one_line(tmp_path, capsys, argv, message, data_dir):
    out = tmp_path / "s"
    code = main([*argv, "--out", str(out), "--data-dir", data_dir])
    cap = capsys.readouterr()
    assert code == 2
    assert cap.err.count("\n") == 1 and cap.err.startswith("bench.run: error: "), cap.err
    assert message in cap.err
    assert not out.exists()
