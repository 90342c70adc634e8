"""bench.plot on a synthetic store written with pandas: figures, summary, colours, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import figures
from bench.plot import load_store, main

OPTIMS = ("adam", "momentum", "sgd")
SCHEDS = ("constant", "exponential", "staircase")
SEEDS = (0, 1, 2)
LR0 = {"adam": 0.01, "momentum": 0.05, "sgd": 0.1}
DIVERGED = ("toy_mlp", "sgd", "constant", 2)  # stops at step 60 with an infinite loss
FAILED = ("beale", "momentum", "staircase", 1)  # an exception at step 40


def _lr(sched: str, lr0: float, step: int) -> float:
    if sched == "exponential":
        return lr0 * 0.96 ** (step / 10)
    if sched == "staircase":
        return lr0 * 0.5 ** (step // 50)
    return lr0


def write_store(root: Path) -> Path:
    """A store like bench.run's: two tasks (one with test metrics, one 2-D), a diverged and a failed
    run."""
    curves, summary = [], []
    for task, steps, log_every in (("toy_mlp", 200, 10), ("beale", 100, 5)):
        for optim in OPTIMS:
            for i, sched in enumerate(SCHEDS):
                for seed in SEEDS:
                    rng = np.random.default_rng([seed, i, len(optim), steps])
                    run_id = f"{task}-{optim}-{sched}-{seed}"
                    rate = 0.01 * (1 + OPTIMS.index(optim)) * (1 + 0.3 * i)
                    status, stop, diverged_at = "ok", steps, np.nan
                    if (task, optim, sched, seed) == DIVERGED:
                        status, stop, diverged_at = "diverged", 60, 60
                    if (task, optim, sched, seed) == FAILED:
                        status, stop = "failed", 40
                    rows = []
                    for step in range(0, stop + 1, log_every):
                        loss = 2.0 * np.exp(-rate * step) * (1 + 0.1 * rng.standard_normal()) + 0.01
                        if status == "diverged":
                            loss = 2.0 * 10 ** (step / 12) if step < stop else np.inf
                        row = {
                            "run_id": run_id, "task": task, "optim": optim, "sched": sched,
                            "seed": seed, "step": step, "lr": _lr(sched, LR0[optim], step),
                            "train_loss": loss, "test_loss": np.nan, "test_acc": np.nan,
                            "elapsed_s": 0.002 * step * (1 + 0.05 * seed), "x": np.nan, "y": np.nan,
                        }  # fmt: skip
                        if task == "toy_mlp" and step % 50 == 0:
                            row["test_loss"] = 1.1 * loss
                            row["test_acc"] = min(1.0, 0.1 + 0.9 * (1 - np.exp(-rate * step)))
                        if task == "beale":
                            row["x"], row["y"] = 1.0 + step / 100, 1.0 - step / 400
                        rows.append(row)
                    curves += rows
                    last = rows[-1]
                    accs = [r["test_acc"] for r in rows if not np.isnan(r["test_acc"])]
                    summary.append(
                        {
                            "run_id": run_id, "task": task, "optim": optim, "sched": sched,
                            "seed": seed, "lr0": LR0[optim], "steps": steps, "status": status,
                            "final_train_loss": last["train_loss"],
                            "final_test_loss": last["test_loss"],
                            "final_test_acc": last["test_acc"],
                            "best_test_acc": max(accs) if accs else np.nan,
                            "diverged_at_step": diverged_at, "wall_s": 1.0, "steps_per_s": 100.0,
                            "device": "cpu",
                        }
                    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(curves).to_csv(root / "curves.csv", index=False)
    pd.DataFrame(summary).to_csv(root / "summary.csv", index=False)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def plotted(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the command once with defaults; several tests read what it wrote."""
    out = tmp_path_factory.mktemp("figures")
    assert main(["--results", str(store), "--out", str(out)]) == 0
    return out, (out / "summary.md").read_text()


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 200
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, f"{path} looks blank"


def test_writes_every_figure_per_task(plotted: tuple[Path, str]) -> None:
    out, _ = plotted
    for task in ("toy_mlp", "beale"):
        for name in ("convergence_train_loss", "lr", "heatmap_train_loss"):
            _assert_png(out / f"{task}_{name}.png")


def test_default_out_is_figures_inside_the_store(tmp_path: Path) -> None:
    store = write_store(tmp_path / "store")
    assert main(["--results", str(store), "--task", "beale"]) == 0
    _assert_png(store / "figures" / "beale_convergence_train_loss.png")
    assert not (store / "figures" / "toy_mlp_lr.png").exists()


def test_default_store_is_the_runners() -> None:
    from bench import plot, run

    assert Path(run.DEFAULT_OUT) == plot.DEFAULT_RESULTS


def test_summary_is_mean_std_over_non_diverged_seeds(
    store: Path, plotted: tuple[Path, str], capsys: pytest.CaptureFixture
) -> None:
    _, summary_md = plotted
    summary = pd.read_csv(store / "summary.csv")
    for optim, sched in (("adam", "exponential"), ("sgd", "constant")):
        cell = summary[(summary.task == "toy_mlp") & (summary.optim == optim)]
        cell = cell[(cell.sched == sched) & (cell.status == "ok")]["final_train_loss"]
        expected = f"{cell.mean():.4g} ± {cell.std():.2g}"
        row = next(
            line
            for line in summary_md.splitlines()
            if line.startswith(f"| {optim} | {sched} |") and expected in line
        )
        n_div = 1 if (optim, sched) == ("sgd", "constant") else 0
        # | optimizer | schedule | lr0 | runs | diverged | failed | ...
        assert row.split("|")[4:7] == [" 3 ", f" {n_div} ", " 0 "]
    beale = summary_md.split("## beale")[1].split("## ")[0]
    assert "test accuracy" not in beale  # a 2-D surface has no test metrics
    assert "| momentum | staircase | 0.05 | 3 | 0 | 1 |" in beale  # the failed run is counted


def test_summary_sorted_best_first() -> None:
    per_run = pd.DataFrame(
        {
            "label": ["a", "a", "b", "b", "c"], "sched": ["s"] * 5, "lr0": [1.0] * 5,
            "status": ["ok", "ok", "ok", "ok", "diverged"], "seed": [0, 1, 0, 1, 0],
            "final train_loss": [3.0, 5.0, 1.0, 2.0, np.nan],
            "best train_loss": [1.0, 2.0, 0.5, 0.5, 9.0],
        }
    )  # fmt: skip
    table = figures.summary_table(per_run, ["train_loss"], sort_metric="train_loss")
    assert list(table["optimizer"]) == ["b", "a", "c"]
    assert table.loc[1, "final train loss"] == f"4 ± {np.std([3.0, 5.0], ddof=1):.2g}"
    assert table.loc[2, "final train loss"] == "—"  # every seed diverged: nothing to average
    assert table.loc[2, "diverged"] == 1


def test_summary_is_printed(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--results", str(store), "--out", str(tmp_path), "--task", "beale"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith((tmp_path / "summary.md").read_text().rstrip())
    assert "wrote 3 figures" in printed


def _runs_and_curves(store: Path, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, summary = load_store(store)
    runs = figures.label_runs(summary[summary.task == task])
    return curves[curves.run_id.isin(runs.run_id)], runs


def test_convergence_marks_diverged_runs_and_shows_bands(store: Path) -> None:
    curves, runs = _runs_and_curves(store, "toy_mlp")
    fig = figures.convergence_grid(curves, runs, "train_loss", title="t")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [f"schedule: {s}" for s in SCHEDS]
    assert all(ax.get_yscale() == "log" for ax in axes)
    markers = [line for ax in axes for line in ax.get_lines() if line.get_marker() == "X"]
    assert len(markers) == 1  # the one diverged run, in its optimizer's colour, at step 60
    assert markers[0].get_color() == figures.OPTIMIZER_COLORS["sgd"]
    assert markers[0].get_xdata()[0] == 60
    low, high = axes[0].get_ylim()
    assert low <= markers[0].get_ydata()[0] <= high  # clamped into view, not lost off the axis
    assert high < 100  # and the diverged run does not flatten the converging ones
    assert all(len(ax.collections) == len(OPTIMS) for ax in axes[1:])  # one CI band per optimizer
    legend_text = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_text == [*OPTIMS, "95% CI over seeds", "diverged run"]


def test_time_axis_is_the_seeds_mean_elapsed_time(store: Path) -> None:
    curves, runs = _runs_and_curves(store, "toy_mlp")
    fig = figures.convergence_grid(curves, runs, "train_loss", x="time", title="t")
    adam_color = figures.OPTIMIZER_COLORS["adam"]
    (adam,) = [ln for ln in fig.axes[0].get_lines() if ln.get_color() == adam_color]
    seeds = curves[(curves.optim == "adam") & (curves.sched == "constant")]
    by_step = seeds.groupby("step")
    np.testing.assert_allclose(adam.get_xdata(), by_step.elapsed_s.mean())
    np.testing.assert_allclose(adam.get_ydata(), by_step.train_loss.mean())
    assert fig.axes[0].get_xlabel() == "wall time (s)"


def test_diverged_run_marked_where_it_stopped_for_sparse_metrics(store: Path) -> None:
    """test_acc is logged every 50 steps: the X sits at the stop (60) at the last accuracy (50)."""
    curves, runs = _runs_and_curves(store, "toy_mlp")
    fig = figures.convergence_grid(curves, runs, "test_acc", title="t")
    (marker,) = [line for line in fig.axes[0].get_lines() if line.get_marker() == "X"]
    diverged = curves[(curves.run_id == "toy_mlp-sgd-constant-2") & (curves.step == 50)]
    assert marker.get_xdata()[0] == 60
    assert marker.get_ydata()[0] == pytest.approx(diverged.test_acc.item())
    assert fig.axes[0].get_yscale() == "linear"


def test_lr_figure_plots_the_csv_lr(store: Path) -> None:
    curves, runs = _runs_and_curves(store, "toy_mlp")
    fig = figures.lr_grid(curves, runs, title="t")
    staircase = fig.axes[SCHEDS.index("staircase")]
    adam_color = figures.OPTIMIZER_COLORS["adam"]
    (adam,) = [line for line in staircase.get_lines() if line.get_color() == adam_color]
    expected = [_lr("staircase", LR0["adam"], s) for s in range(0, 201, 10)]
    np.testing.assert_allclose(adam.get_ydata(), expected)
    assert staircase.get_yscale() == "log"


def test_confidence_band_is_seaborns_bootstrap_ci() -> None:
    from seaborn._statistics import EstimateAggregator

    rng = np.random.default_rng(1)
    values = {"a": [1.0, 2.0, 4.0], "b": list(rng.normal(5.0, 2.0, 20)), "c": [3.0]}
    data = pd.DataFrame([(k, v) for k, vs in values.items() for v in vs], columns=["g", "y"])
    stats = figures.mean_and_ci(data, ["g"], "y").set_index("g")
    # 3 seeds: a resample of three copies of the lowest value has chance 1/27 > 2.5%
    assert tuple(stats.loc["a"]) == pytest.approx((7 / 3, 1.0, 4.0))
    assert tuple(stats.loc["c"]) == (3.0, 3.0, 3.0)
    seaborn_ci = EstimateAggregator("mean", ("ci", 95), n_boot=1000, seed=0)
    expected = seaborn_ci(data[data.g == "b"], "y")
    width = expected["ymax"] - expected["ymin"]
    assert stats.loc["b", "mean"] == pytest.approx(expected["y"])
    assert stats.loc["b", "low"] == pytest.approx(expected["ymin"], abs=0.1 * width)
    assert stats.loc["b", "high"] == pytest.approx(expected["ymax"], abs=0.1 * width)


def test_equal_lr_curves_are_drawn_nested() -> None:
    steps = np.arange(5)
    panel = pd.concat(
        pd.DataFrame({"label": label, "step": steps, "lr": lr0 * 0.9**steps})
        for label, lr0 in (("adam", 1e-3), ("rmsprop", 1e-3), ("sgd", 0.1), ("rprop", 1e-3))
    )
    widths = figures._nested_widths(panel, ["adam", "rmsprop", "rprop", "sgd"])
    assert widths == {"adam": 5.6, "rmsprop": 3.6, "rprop": 1.6, "sgd": 1.6}


def test_heatmap_annotates_means_and_divergence(store: Path) -> None:
    curves, runs = _runs_and_curves(store, "toy_mlp")
    per_run = figures.run_metrics(curves, runs, ["train_loss"])
    fig = figures.final_heatmap(per_run, "train_loss", title="t")
    texts = [t.get_text() for t in fig.axes[0].texts]
    ok = runs[(runs.optim == "adam") & (runs.sched == "constant")]
    assert f"{ok.final_train_loss.mean():.3g}" in texts
    assert any(t.endswith("\n1/3 diverged") for t in texts)
    labels = {t.get_text(): t.get_color() for t in fig.axes[0].get_yticklabels()}
    assert labels == {o: figures.OPTIMIZER_COLORS[o] for o in OPTIMS}


def test_colours_fixed_per_optimizer() -> None:
    alone = figures.optimizer_palette(["adam"])["adam"]
    assert alone == figures.optimizer_palette(["sgd", "adam"])["adam"]
    known = figures.optimizer_palette(sorted(figures.OPTIMIZER_COLORS))
    assert len(set(known.values())) == len(known) == 8
    unknown = figures.optimizer_palette(["lion", "adam", "sophia"])
    assert unknown["adam"] == figures.OPTIMIZER_COLORS["adam"]
    assert len(set(unknown.values())) == 3
    assert figures.optimizer_palette(["sophia", "lion"]) == {
        k: v for k, v in unknown.items() if k != "adam"
    }


def test_runs_with_different_lr_are_not_averaged() -> None:
    summary = pd.DataFrame(
        {
            "optim": ["adam", "adam", "sgd", "sgd", "sgd"],
            "lr0": [0.01, 0.1, 0.1, 0.1, 0.1],
            "steps": [100] * 5,
            "opt_args": [np.nan, np.nan, np.nan, "{'momentum': 0.9}", np.nan],
        }
    )
    labelled = figures.label_runs(summary)
    assert list(labelled["label"]) == [
        "adam lr0=0.01",
        "adam lr0=0.1",
        "sgd opt_args=default",
        "sgd opt_args={'momentum': 0.9}",
        "sgd opt_args=default",
    ]
    assert labelled["color"].nunique() == 2


def test_metric_missing_for_a_task_skips_it(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--results", str(store), "--out", str(tmp_path), "--metric", "test_acc"]
    assert main([*args, "--x", "time", "--format", "svg"]) == 0
    assert "note: skipping task 'beale': it has no test_acc values" in capsys.readouterr().err
    assert (tmp_path / "toy_mlp_convergence_test_acc_time.svg").stat().st_size > 1000
    assert (tmp_path / "toy_mlp_heatmap_test_acc.svg").is_file()
    assert not list(tmp_path.glob("beale_*"))


def _exit_code(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return info.value.code, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metric", "accuracy"], "argument --metric: invalid choice: 'accuracy'"),
        (["--x", "epoch"], "argument --x: invalid choice"),
        (["--format", "jpg"], "argument --format: invalid choice"),
        (["--task", "bealx"], "unknown task 'bealx'; did you mean 'beale'? the store has: beale"),
        (["--task", ","], "--task needs at least one task name"),
        (["--task", "beale", "--metric", "test_loss"], "no task in"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2(
    store: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    code, err = _exit_code(["--results", str(store), *argv], capsys)
    assert code == 2
    assert message in err


def test_unwritable_out_exits_2(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = _exit_code(["--results", str(store), "--out", str(blocker / "x")], capsys)
    assert code == 2 and "cannot write figures to --out" in err


@pytest.mark.parametrize("state", ["no folder", "no csv", "zero bytes", "header only", "not csv"])
def test_missing_or_empty_store_exits_2(
    tmp_path: Path, state: str, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "store"
    if state != "no folder":
        root.mkdir()
    if state == "zero bytes":
        (root / "summary.csv").write_text("")
        (root / "curves.csv").write_text("")
    if state == "header only":
        full = write_store(tmp_path / "full")
        for name in ("summary.csv", "curves.csv"):
            header = (full / name).read_text().splitlines()[0]
            (root / name).write_text(header + "\n")
    if state == "not csv":
        (root / "summary.csv").write_text("hello\nworld\n")
        (root / "curves.csv").write_text("hello\nworld\n")
    code, err = _exit_code(["--results", str(root)], capsys)
    assert code == 2
    expected = {
        "no folder": "(no such folder)",
        "no csv": "summary.csv is missing",
        "zero bytes": "is empty",
        "header only": "is empty",
        "not csv": "is not a bench.run table: no column(s) run_id",
    }[state]
    assert expected in err
    assert str(root) in err


def test_command_line_has_no_traceback(tmp_path: Path) -> None:
    """The real entry point: one line on stderr, exit code 2."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.plot", "--results", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 2
    assert done.stderr.startswith("python -m bench.plot: error: no results store at")
    assert done.stderr.count("\n") == 1
