"""bench.profiles: performance profiles on a small synthetic store (fractions computed by hand),
the LR-sensitivity table, and both figures written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench import profiles as P

# (task, sched, optim, seed, steps_to_target); None: the seed never reached the target
ROWS = [
    ("A", "c1", "x", 0, 100), ("A", "c1", "x", 1, 100),
    ("A", "c1", "y", 0, 200), ("A", "c1", "y", 1, 200),
    ("A", "c1", "z", 0, None), ("A", "c1", "z", 1, None),
    ("A", "c2", "x", 0, 300), ("A", "c2", "x", 1, None),  # median of (300, inf) is inf
    ("A", "c2", "y", 0, 150), ("A", "c2", "y", 1, 150),
    ("A", "c2", "z", 0, 300), ("A", "c2", "z", 1, 300),
    ("B", "c1", "x", 0, 50),
    ("B", "c1", "y", 0, None),  # z has no run in (B, c1): counts as not reached
    ("B", "c2", "x", 0, None), ("B", "c2", "y", 0, None), ("B", "c2", "z", 0, None),
]  # fmt: skip
# ratios:  (A,c1) x 1, y 2, z inf | (A,c2) x inf, y 1, z 2 | (B,c1) x 1, y inf, z inf | (B,c2) inf
EXPECTED = {  # rho_o(tau) over the 4 cells
    ("x", 1.0): 2 / 4, ("x", 4.0): 2 / 4,
    ("y", 1.0): 1 / 4, ("y", 1.95): 1 / 4, ("y", 2.0): 2 / 4, ("y", 4.0): 2 / 4,
    ("z", 1.0): 0.0, ("z", 1.95): 0.0, ("z", 2.0): 1 / 4, ("z", 4.0): 1 / 4,
}  # fmt: skip


@pytest.fixture
def summary(tmp_path) -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=["task", "sched", "optim", "seed", "steps_to_target"])
    df["lr0"], df["lr_source"], df["status"] = 0.1, "grid", "ok"
    df["time_to_target"] = df["steps_to_target"] * 0.01
    path = tmp_path / "summary.csv"  # through the CSV file, as bench.plot reads it
    df.to_csv(path, index=False)
    return pd.read_csv(path)


def test_cell_times_take_the_median_over_seeds_with_unreached_as_infinity(summary):
    t = P.cell_times(summary)
    assert list(t.index) == [("A", "c1"), ("A", "c2"), ("B", "c1"), ("B", "c2")]
    assert t.loc[("A", "c1"), "x"] == 100 and math.isinf(t.loc[("A", "c1"), "z"])
    assert math.isinf(t.loc[("A", "c2"), "x"]) and math.isinf(t.loc[("B", "c1"), "z"])
    three = summary[summary["task"] == "A"].copy()
    three.loc[len(summary)] = ["A", "c2", "y", 2, None, 0.1, "grid", "ok", None]
    assert P.cell_times(three).loc[("A", "c2"), "y"] == 150  # median of 150, 150, inf


def test_ratios_are_one_for_the_fastest_and_infinite_when_not_reached(summary):
    r = P.performance_ratios(P.cell_times(summary))
    assert r.loc[("A", "c1")].tolist() == [1.0, 2.0, math.inf]
    assert r.loc[("A", "c2")].tolist() == [math.inf, 1.0, 2.0]
    assert r.loc[("B", "c2")].tolist() == [math.inf] * 3


def test_profile_fractions_match_the_hand_computed_ones(summary):
    taus = sorted({tau for _, tau in EXPECTED} | {1.5, 3.0})
    prof = P.performance_profile(summary, taus=taus)
    got = {(r.competitor, r.tau): r.fraction for r in prof.itertuples()}
    for key, value in EXPECTED.items():
        assert got[key] == pytest.approx(value), key
    assert (prof["n_cells"] == 4).all()
    for _, g in prof.groupby("competitor"):  # a profile never decreases with tau
        assert np.all(np.diff(g.sort_values("tau")["fraction"]) >= 0)
    by_time = P.performance_profile(summary, taus=taus, measure="time_to_target")
    assert by_time["fraction"].tolist() == prof["fraction"].tolist()


def test_a_tie_at_zero_steps_is_ratio_one():
    t = pd.DataFrame({"x": [0.0], "y": [0.0], "z": [5.0]})
    assert P.performance_ratios(t).iloc[0].tolist() == [1.0, 1.0, math.inf]


def test_competitors_split_mixed_lr_sources_and_shared_lrs():
    df = pd.DataFrame(
        {
            "optim": ["adam", "adam", "adam", "sgd", "sgd"],
            "lr_source": ["grid", "shared", "shared", "grid", "grid"],
            "lr0": [0.01, 0.1, 0.01, 0.3, 0.1],
        }
    )
    assert P.competitors(df).tolist() == [
        "adam (grid)", "adam (shared) lr0=0.1", "adam (shared) lr0=0.01", "sgd", "sgd",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="measure must be"):
        P.cell_times(df, "steps")


def tuning_rows() -> pd.DataFrame:
    rows = []
    for lr, acc, loss, status in [
        (0.001, 0.5, 1.0, "ok"),
        (0.01, 0.8, 0.6, "ok"),
        (0.1, 0.8, 0.5, "ok"),  # ties on accuracy, lower test loss: chosen
        (1.0, 0.9, 0.4, "diverged"),  # best accuracy before diverging: never chosen
    ]:
        rows.append(
            dict(
                task="t",
                optim="adam",
                sched="constant",
                steps=10,
                seed=0,
                lr=lr,
                metric="final_test_acc",
                value=acc if status == "ok" else None,
                status=status,
                final_test_loss=loss,
            )
        )
    return pd.DataFrame(rows)


def test_sensitivity_frame_marks_the_grid_choice():
    df = P.sensitivity_frame(tuning_rows())
    assert df.loc[df["best"], "lr"].tolist() == [0.1]
    assert df["ok"].tolist() == [True, True, True, False]


def test_figures_are_written(tmp_path, summary):
    fig = P.profile_figure(P.performance_profile(summary))
    fig.savefig(tmp_path / "profile.png")
    tuning = pd.concat([tuning_rows(), tuning_rows().assign(optim="sgd", sched="staircase")])
    P.sensitivity_figure(tuning, "t").savefig(tmp_path / "sens.png")
    assert (tmp_path / "profile.png").stat().st_size > 10_000
    assert (tmp_path / "sens.png").stat().st_size > 10_000


def test_write_figures_from_a_real_store(tmp_path):
    """bench.plot's hook on a store written by bench.run --lr grid (tiny): both figures."""
    from bench.run import main

    store = tmp_path / "store"
    args = ["--task", "long_valley,saddle", "--optim", "sgd,adam", "--lr", "grid"]
    args += ["--lr-grid", "0.01:1:3", "--steps", "60", "--out", str(store), "--quiet"]
    assert main([*args, "--data-dir", str(tmp_path / "data")]) == 0
    summary = pd.read_csv(store / "summary.csv")
    out = tmp_path / "fig"
    out.mkdir()
    paths = P.write_figures(store, out, summary, ["long_valley", "saddle"])
    names = sorted(p.name for p in paths)
    assert names == [
        "long_valley_lr_sensitivity.png", "performance_profile.png", "saddle_lr_sensitivity.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert P.write_figures(store, out, summary.drop(columns="steps_to_target"), ["nope"]) == []


def test_comparison_frame_means_over_ok_seeds(tmp_path):
    shared = pd.DataFrame(
        {
            "task": "t", "sched": "constant", "optim": ["adam", "adam", "sgd", "sgd"],
            "lr0": 0.01, "status": ["ok", "ok", "ok", "diverged"],
            "final_test_acc": [0.5, 0.7, 0.2, 0.9],
        }
    )  # fmt: skip
    tuned = shared.assign(lr0=[0.001, 0.001, 0.3, 0.3], status="ok", final_test_acc=0.8)
    table = P.comparison_frame({"shared": shared, "tuned": tuned}, "final_test_acc")
    row = table.set_index(["store", "optim"])
    assert row.loc[("shared", "adam"), "mean"] == pytest.approx(0.6)
    assert row.loc[("shared", "adam"), "std"] == pytest.approx(math.sqrt(0.02))
    assert row.loc[("shared", "sgd"), "mean"] == 0.2 and row.loc[("shared", "sgd"), "not_ok"] == 1
    assert row.loc[("tuned", "sgd"), "lr0"] == 0.3
    P.comparison_figure(table, "final test accuracy").savefig(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_bench_plot_adds_the_profile_and_sensitivity_figures(tmp_path):
    from bench import plot
    from bench.run import main

    store = tmp_path / "store"
    args = ["--task", "long_valley", "--optim", "sgd,adam", "--lr", "grid", "--quiet"]
    args += ["--lr-grid", "0.01:1:3", "--steps", "60", "--out", str(store)]
    assert main([*args, "--data-dir", str(tmp_path / "data")]) == 0
    out = tmp_path / "fig"
    assert plot.main(["--results", str(store), "--out", str(out)]) == 0
    for name in ("performance_profile.png", "long_valley_lr_sensitivity.png"):
        assert (out / name).stat().st_size > 10_000, name


@pytest.mark.slow
def test_reference_script_writes_the_fair_comparison(tmp_path):
    """scripts/reference.py --tiny: the shared-lr and grid-tuned stores side by side."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ref"
    cmd = [sys.executable, "scripts/reference.py", "--tiny", "--no-trajectories", "--out", str(out)]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    fair = out / "fair"
    tuning = pd.read_csv(fair / "tuned" / "tuning.csv")
    assert len(tuning) == 8 * 2 * 4  # optimizers x schedules x the tiny grid
    tuned = pd.read_csv(fair / "tuned" / "summary.csv")
    assert tuned["lr_source"].eq("grid").all()
    assert pd.read_csv(fair / "shared" / "summary.csv")["lr0"].eq(0.01).all()
    for path in ("comparison.md", "comparison_test_acc.png",
                 "tuned/figures/mnist1d_mlp_lr_sensitivity.png",
                 "tuned/figures/performance_profile.png"):  # fmt: skip
        assert (fair / path).stat().st_size > 500, path
    assert not (fair / "tuned" / "tuning").exists() and not (fair / "tuned" / "runs").exists()
