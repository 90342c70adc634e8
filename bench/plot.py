"""``python -m bench.plot``: figures and a summary table from a results store's CSV files.

Reads only ``DIR/summary.csv`` and ``DIR/curves.csv`` (so any store can be plotted) and writes, per
task, into ``--out``:

* ``<task>_convergence_<metric>[_time].<fmt>``: metric against step (or wall time), a panel
  per schedule, a line per optimizer (mean over seeds, 95% CI band), diverged runs marked where
  they stopped;
* ``<task>_lr.<fmt>``: the effective lr each optimizer used, a panel per schedule;
* ``<task>_heatmap_<metric>.<fmt>``: optimizer x schedule grid of the final metric (mean over
  seeds);

and ``summary.md`` (mean +- std over seeds of the final and best metrics, diverged counts), which is
also printed. From bench.profiles (issue 6): ``performance_profile.<fmt>`` over every (task,
schedule) cell of the plotted tasks, and ``<task>_lr_sensitivity.<fmt>`` when the store has a
``tuning.csv`` (``bench.run --lr grid``). Bad arguments and unusable stores exit with code 2 and
one line on stderr.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, same output everywhere

import numpy as np
import pandas as pd

from bench import figures, profiles

DEFAULT_RESULTS = Path("results/runs")  # the runner's default --out
CURVE_COLUMNS = ("run_id", "task", "optim", "sched", "seed", "step", "lr", "elapsed_s")
SUMMARY_COLUMNS = ("run_id", "task", "optim", "sched", "seed", "lr0", "steps", "status")
TEXT_COLUMNS = {"run_id": str, "task": str, "optim": str, "sched": str, "status": str}
# Columns that bench.run writes as numbers (checked when present, so a hand-edited table fails
# with one line before any figure is written).
NUMERIC_COLUMNS = {
    "summary.csv": (
        "seed", "lr0", "steps", "final_train_loss", "final_test_loss", "final_test_acc",
        "best_test_acc", "diverged_at_step", "wall_s", "steps_per_s", "batch_size", "warmup",
        "threads", "steps_done", "lr_tuned", "target", "steps_to_target", "time_to_target",
    ),
    "curves.csv": (
        "seed", "step", "lr", "train_loss", "test_loss", "test_acc", "elapsed_s", "x", "y", "lr0",
    ),
}  # fmt: skip


class StoreError(ValueError):
    """The store or a name in it cannot be used; the message is one line for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.plot",
        description="Plot a results store written by `python -m bench.run` (its CSV files only).",
    )
    p.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, metavar="DIR",
        help=f"the store to read: DIR/summary.csv and DIR/curves.csv (default: {DEFAULT_RESULTS})",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="where figures and summary.md go (default: DIR/figures of --results)",
    )  # fmt: skip
    p.add_argument(
        "--task", default="all", metavar="NAMES",
        help="comma-separated tasks to plot, or 'all' (default: every task in the store)",
    )  # fmt: skip
    p.add_argument(
        "--metric", default="train_loss", choices=figures.METRICS,
        help="metric of the convergence grid and the heatmap (default: train_loss)",
    )  # fmt: skip
    p.add_argument(
        "--x", default="step", choices=("step", "time"),
        help="x axis of the convergence grid: logged step or wall time in seconds (default: step)",
    )  # fmt: skip
    p.add_argument(
        "--format", default="png", choices=("png", "svg", "pdf"),
        help="figure file format (default: png)",
    )  # fmt: skip
    return p


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=TEXT_COLUMNS)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(required))
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"cannot read {path}: {reason}") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise StoreError(f"{path} is not a bench.run table: no column(s) {', '.join(missing)}")
    for column in NUMERIC_COLUMNS.get(path.name, ()):
        if column in table.columns:
            table[column] = _numbers(table[column], path, column)
    return table


def _numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    """The column as numbers; StoreError naming the first cell that is not a number."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        text = str(values.iloc[row])
        text = text if len(text) <= 40 else text[:40] + "..."
        raise StoreError(
            f"{path}: column {column} must hold numbers, but line {row + 2} has '{text}'; "
            "restore the file written by bench.run"
        )
    return numbers


def load_store(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``(curves, summary)`` from a store; StoreError when it is missing or empty."""
    hint = f"write one with: python -m bench.run --out {results}"
    if not results.is_dir():
        raise StoreError(f"no results store at {results} (no such folder); {hint}")
    for name in ("summary.csv", "curves.csv"):
        if not (results / name).is_file():
            raise StoreError(f"no results store at {results} ({name} is missing); {hint}")
    summary = _read_csv(results / "summary.csv", SUMMARY_COLUMNS)
    curves = _read_csv(results / "curves.csv", CURVE_COLUMNS)
    if summary.empty or curves.empty:
        raise StoreError(f"the results store {results} is empty (no finished runs); {hint}")
    for metric in figures.METRICS:  # a store of 2-D surfaces may lack the test columns
        if metric not in curves.columns:
            curves[metric] = np.nan
    curves = curves[curves["run_id"].isin(summary["run_id"])]
    return curves, summary


def select_tasks(summary: pd.DataFrame, names: str) -> list[str]:
    """Tasks named by ``--task`` (comma-separated, or 'all'), in the store's sorted order."""
    present = sorted(summary["task"].unique())
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise StoreError("--task needs at least one task name, or 'all'")
    if wanted == ["all"]:
        return present
    for name in wanted:
        if name not in present:
            close = difflib.get_close_matches(name, present, n=1)
            hint = f" did you mean '{close[0]}'?" if close else ""
            raise StoreError(f"unknown task '{name}';{hint} the store has: {', '.join(present)}")
    return [t for t in present if t in wanted]


def _describe(runs: pd.DataFrame) -> str:
    """'3000 steps, 3 seeds' for titles and headings."""
    steps = sorted(runs["steps"].dropna().astype(int).unique())
    steps_text = f"{steps[0]} steps" if len(steps) == 1 else f"{steps[0]}-{steps[-1]} steps"
    n_seeds = runs["seed"].nunique()
    return f"{steps_text}, {n_seeds} seed{'s' if n_seeds != 1 else ''}"


def _has_values(curves: pd.DataFrame, column: str) -> bool:
    return bool(np.isfinite(curves[column].astype(float)).any())


def save_figure(fig, path: Path) -> None:
    """Write a figure to a temporary file and move it into place (never a half-written file);
    the figure is closed."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def plot_task(
    task: str, curves: pd.DataFrame, summary: pd.DataFrame, args: argparse.Namespace
) -> tuple[list[Path], str]:
    """Write the task's three figures; return their paths and the task's summary.md section."""
    runs = figures.label_runs(summary[summary["task"] == task])
    task_curves = curves[curves["run_id"].isin(runs["run_id"])]
    about = _describe(runs)
    metric_name = figures.METRIC_LABELS[args.metric]
    x_name = "step" if args.x == "step" else "wall time"
    out: Path = args.out
    paths = []

    band = "; mean over seeds, 95% CI band" if runs["seed"].nunique() > 1 else ""
    fig = figures.convergence_grid(
        task_curves, runs, args.metric, x=args.x,
        title=f"{task}: {metric_name} vs {x_name} ({about}{band})",
    )  # fmt: skip
    suffix = "_time" if args.x == "time" else ""
    paths.append(out / f"{task}_convergence_{args.metric}{suffix}.{args.format}")
    save_figure(fig, paths[-1])

    fig = figures.lr_grid(task_curves, runs, title=f"{task}: effective learning rate ({about})")
    paths.append(out / f"{task}_lr.{args.format}")
    save_figure(fig, paths[-1])

    metrics = [m for m in figures.METRICS if _has_values(task_curves, m)]
    per_run = figures.run_metrics(task_curves, runs, metrics)
    fig = figures.final_heatmap(
        per_run, args.metric, title=f"{task}: final {metric_name} (mean over seeds; {about})"
    )
    paths.append(out / f"{task}_heatmap_{args.metric}.{args.format}")
    save_figure(fig, paths[-1])

    table = figures.summary_table(per_run, metrics, sort_metric=args.metric)
    section = (
        f"## {task} ({about})\n\n"
        f"Sorted by final {metric_name}; mean ± std over the seeds that finished ok"
        " (diverged and failed runs are counted, not averaged).\n\n"
        f"{figures.to_markdown(table)}\n"
    )
    return paths, section


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = args.results / "figures"
    try:
        curves, summary = load_store(args.results)
        tasks = select_tasks(summary, args.task)
        has_metric = {
            task: _has_values(curves[curves["task"] == task], args.metric) for task in tasks
        }
        runnable = [task for task in tasks if has_metric[task]]
        if not runnable:
            raise StoreError(
                f"no task in {args.results} has {args.metric} values"
                f" (tasks: {', '.join(tasks)}); try --metric train_loss"
            )
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write figures to --out {args.out}: {exc.strerror}") from exc
    except StoreError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")

    for task in tasks:
        if not has_metric[task]:
            print(f"note: skipping task '{task}': it has no {args.metric} values", file=sys.stderr)
    written, sections = [], []
    for task in runnable:
        paths, section = plot_task(task, curves, summary, args)
        written += paths
        sections.append(section)
    written += profiles.write_figures(args.results, args.out, summary, tasks, args.format)
    report = f"# Results: {args.results}\n\n" + "\n".join(sections)
    tmp = args.out / f".summary.md.{os.getpid()}.tmp"
    tmp.write_text(report, encoding="utf-8")
    os.replace(tmp, args.out / "summary.md")
    print(report)
    print(f"wrote {len(written)} figures and summary.md to {args.out}")
    return 0


if __name__ == "__main__":
    from bench.procs import exit_now

    exit_now(main())
