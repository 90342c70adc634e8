"""bench.trajectories on short runs (runs go through bench.run's store, figures drawn) and its
command line scripts/plot_trajectories.py; the guard and pipeline of bench.reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import figures, reference, tuning
from bench import trajectories as traj

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every optimizer on the four surfaces, 10 steps at lr 0.01, figures and GIFs."""
    out, store = tmp_path_factory.mktemp("figures"), tmp_path_factory.mktemp("store")
    code, written = traj.make_figures(out, store, lr=0.01, steps=10)
    assert code == 0 and len(written) == 2 + len(traj.SURFACES)
    return out, store


def test_runs_are_bench_run_runs(short_run: tuple[Path, Path]) -> None:
    import optimizers

    _, store = short_run
    summary = pd.read_csv(store / "summary.csv")
    assert sorted(summary.task.unique()) == sorted(traj.SURFACES)
    assert sorted(summary.optim.unique()) == optimizers.available()
    assert len(summary) == len(traj.SURFACES) * len(optimizers.available())
    assert (summary.lr0 == 0.01).all() and (summary.steps == 10).all()
    assert (summary.sched == "constant").all() and (summary.seed == 0).all()
    assert len(list((store / "runs").glob("*.json"))) == len(summary)


def test_writes_pngs_and_one_gif_per_surface(short_run: tuple[Path, Path]) -> None:
    out, _ = short_run
    for name in ("trajectories_lr0.01.png", "trajectories_lr0.01_loss.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 800
            assert np.asarray(image.convert("L")).std() > 5
    for surface in traj.SURFACES:
        with Image.open(out / f"trajectories_lr0.01_{surface}.gif") as gif:
            assert gif.is_animated and gif.n_frames == 11  # steps 0..10
            first = np.asarray(gif.convert("RGB")).copy()
            gif.seek(gif.n_frames - 1)
            assert (np.asarray(gif.convert("RGB")) != first).any()  # the paths moved


def test_paths_are_the_stores_xy_in_bench_plot_colours(short_run: tuple[Path, Path]) -> None:
    _, store = short_run
    lrs = {s: {"adam": 0.01, "sgd": 0.01} for s in traj.SURFACES}
    paths = traj.paths_for(store, lrs, steps=10)
    fig = traj.trajectory_figure(paths, lrs, title="t")
    beale = fig.axes[0]
    assert beale.get_title() == "beale (10 steps)"
    curves = pd.read_csv(store / "curves.csv")
    adam = curves[(curves.task == "beale") & (curves.optim == "adam")].sort_values("step")
    adam_color = figures.OPTIMIZER_COLORS["adam"]
    (line, end) = [ln for ln in beale.get_lines() if ln.get_color() == adam_color]
    assert end.get_marker() == "o" and end.get_xdata() == adam.x.iloc[-1]
    np.testing.assert_array_equal(line.get_xdata(), adam.x)
    np.testing.assert_array_equal(line.get_ydata(), adam.y)
    assert adam.x.iloc[0] == 1.0 and adam.y.iloc[0] == 1.5  # Beale's start point


def test_tuned_mode_runs_each_optimizer_at_its_table_lr(tmp_path: Path) -> None:
    import optimizers

    lrs = {s: {o: traj.tuned_lr(s, o) for o in optimizers.available()} for s in traj.SURFACES}
    assert traj.run_all(tmp_path, lrs, steps=3) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == len(traj.SURFACES) * len(optimizers.available())
    for row in summary.itertuples():
        assert row.lr0 == traj.TUNED_LR[row.task][row.optim]


def test_tuning_is_bench_run_lr_grid(tmp_path: Path) -> None:
    """The lrs are bench.run --lr grid's: lr 10 makes SGD diverge on the valley (curvature 10),
    so it is never chosen; among the rest the lowest final loss f(x, y) wins (long_valley's
    minimum is 0), and the store holds the chosen runs, marked as grid-tuned."""
    best = traj.select_lrs(tmp_path, ["sgd", "adam"], ["long_valley"], steps=20, grid="1e-3:10:3")
    points = pd.read_csv(tmp_path / "tuning.csv")
    assert len(points) == 6 and sorted(points.lr.unique()) == [1e-3, 0.1, 10.0]
    assert points.set_index(["optim", "lr"]).loc[("sgd", 10.0), "status"] == "diverged"
    for optim in ("sgd", "adam"):
        rows = points[(points.optim == optim) & (points.status == "ok")]
        expected = rows.sort_values(["final_train_loss", "lr"]).lr.iloc[0]
        assert best["long_valley"][optim] == expected
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert (summary.lr_source == "grid").all()
    assert dict(zip(summary.optim, summary.lr0, strict=True)) == best["long_valley"]


def test_tuned_table_covers_every_optimizer_and_surface() -> None:
    import optimizers

    for surface in traj.SURFACES:
        assert sorted(traj.TUNED_LR[surface]) == optimizers.available()
        assert set(traj.TUNED_LR[surface].values()) <= set(tuning.parse_grid(traj.GRID))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "0"], "argument --lr: must be a positive number, got '0'"),
        (["--lr", "fast"], "argument --lr: must be a positive number, got 'fast'"),
        (["--steps", "-3"], "argument --steps: must be a positive integer, got '-3'"),
        (["--steps", "2.5"], "argument --steps: must be a positive integer, got '2.5'"),
        (["--lr", "0.1", "--search"], "argument --search: not allowed with argument --lr"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str) -> None:
    command = [sys.executable, "scripts/plot_trajectories.py", *argv]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.slow
def test_search_reproduces_the_tuned_table(tmp_path: Path) -> None:
    """The documented tuning (bench.run --lr grid, 13 lrs x every optimizer x 4 surfaces, 500
    steps) gives TUNED_LR."""
    import optimizers

    found = traj.select_lrs(tmp_path, optimizers.available(), list(traj.SURFACES), steps=500)
    assert found == traj.TUNED_LR


def test_reference_never_replaces_without_yes(tmp_path: Path) -> None:
    out = tmp_path / "reference"
    out.mkdir()
    (out / "summary.csv").write_text("precious")
    with pytest.raises(FileExistsError, match="exists; pass replace=True to regenerate it"):
        reference.regenerate(out)
    command = [sys.executable, "scripts/reference.py", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert (
        done.stderr == f"scripts/reference.py: error: {out} exists; pass --yes to regenerate it\n"
    )
    assert (out / "summary.csv").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference"]  # no staging either


@pytest.mark.slow
def test_reference_tiny_pipeline(tmp_path: Path) -> None:
    """The whole reference pipeline, a few steps per run (about a minute)."""
    out = reference.regenerate(tmp_path / "reference", tiny=True)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.sched) == {"constant", "exponential", "staircase", "piecewise"}
    assert set(summary.task) == {"mnist1d_mlp", *traj.SURFACES}
    assert (out / "figures" / "mnist1d_mlp_heatmap_test_acc.png").is_file()
    assert (out / "figures" / "trajectories_lr0.01_saddle.gif").is_file()
    assert (out / "figures" / "trajectories_tuned_saddle.gif").is_file()
    assert not (out / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference"]
