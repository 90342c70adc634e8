"""Regenerate the committed reference results (results/reference/; fixed seeds, CPU).

:func:`regenerate` runs, through ``bench.run --config`` with the sweep files in
``scripts/sweeps/`` (constant, exponential, staircase and piecewise schedules, every optimizer
at its documented per-task lr):

* ``reference_mnist1d_mlp.toml``: mnist1d_mlp with seeds 0, 1, 2;
* ``reference_surfaces.toml``: the 2-D surfaces beale, long_valley, saddle, rosenbrock with seed
  0 (they have no randomness: every seed gives the same run).

Then ``bench.plot``'s figures for train loss, test loss and test accuracy, and the trajectory
figures of ``bench.trajectories`` (tuned lrs, and every optimizer at the shared lr 0.01), into
DIR/figures; DIR/README.md records the command, versions, machine and how long each stage took.

The fair comparison, on mnist1d_mlp with the constant and staircase schedules, 3 seeds: every
optimizer at one shared lr (0.01; ``reference_fair_shared.toml``) in DIR/fair/shared, and at its
own grid-tuned lr (``reference_fair_tuned.toml``, ``bench.run --lr grid``: 13 lrs from 1e-5 to 10
on seed 0, best final test accuracy) in DIR/fair/tuned (with tuning.csv: every grid point); each
with ``bench.plot``'s figures (test accuracy; the tuned one adds the LR-sensitivity figure and
the performance profile), and side by side in DIR/fair/comparison.md and comparison_test_acc.png.

Nothing is written into DIR until everything has finished: the work happens in a staging store
next to it (DIR's parent/.DIR-staging, kept if interrupted, so a rerun resumes there), which then
replaces DIR. Replacing an existing DIR must be asked for (``replace``); bench.run's own default
store is results/runs, so this is the only thing that writes here. The run JSONs (runs/) are
left out of DIR (they repeat the CSV files) unless ``keep_runs``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench import plot as bench_plot
from bench import provenance as P
from bench import run as bench_run
from bench import sweepfile, trajectories

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILES = REPO / "scripts" / "sweeps"
DEFAULT_OUT = REPO / "results" / "reference"

SWEEPS = ("reference_mnist1d_mlp.toml", "reference_surfaces.toml")  # into DIR
FAIR = {"shared": "reference_fair_shared.toml", "tuned": "reference_fair_tuned.toml"}  # DIR/fair/
TINY = {  # flags over each file: the same pipeline in about a minute, for testing it
    "reference_mnist1d_mlp.toml": ("--seeds", "2", "--steps", "40", "--eval-every", "20"),
    "reference_surfaces.toml": ("--steps", "20"),
    "reference_fair_shared.toml": ("--seeds", "2", "--steps", "40", "--eval-every", "20"),
    "reference_fair_tuned.toml": ("--seeds", "2", "--steps", "40", "--eval-every", "20",
                                  "--lr-grid", "1e-3:1:4"),
}  # fmt: skip
TINY_TRAJECTORY_STEPS = 20
_SHARED = sweepfile.read(SWEEP_FILES / FAIR["shared"])
FAIR_TASK = _SHARED["task"]
SHARED_LR = f"{_SHARED['lr']:g}"  # also the trajectories' "similar hyperparameters" figure's lr
METRICS = ("test_acc", "test_loss", "train_loss")  # the last one's summary.md is kept


class StageError(RuntimeError):
    """A stage of the regeneration exited with an error; the staging store is kept."""


def _stage(name: str, timings: list[tuple[str, float]], fn: Callable[[], int | None]) -> None:
    start = time.perf_counter()
    print(f"== {name}", flush=True)
    code = fn()
    timings.append((name, time.perf_counter() - start))
    if code not in (0, None):
        raise StageError(f"{name} exited with {code}; the staging store is kept")


def write_comparison(fair: Path) -> None:
    """DIR/fair/comparison.md and comparison_test_acc.png: shared lr vs grid-tuned lr."""
    import pandas as pd

    from bench import profiles

    stores = {
        f"shared lr {SHARED_LR}": pd.read_csv(fair / "shared" / "summary.csv"),
        "tuned (grid)": pd.read_csv(fair / "tuned" / "summary.csv"),
    }
    table = profiles.comparison_frame(stores, "final_test_acc")
    fig = profiles.comparison_figure(
        table, "final test accuracy", title=f"{FAIR_TASK}: final test accuracy, every optimizer "
        f"at lr {SHARED_LR} (open) and at its grid-tuned lr (filled); mean ± std over seeds",
    )  # fmt: skip
    fig.savefig(fair / "comparison_test_acc.png", dpi=120)
    wide = table.pivot_table(index=["sched", "optim"], columns="store", values=["lr0", "mean"],
                             aggfunc="first", dropna=False)  # fmt: skip
    lines = [
        f"# {FAIR_TASK}: shared lr vs grid-tuned lr (final test accuracy, mean over seeds)",
        "",
        "| schedule | optimizer | " + " | ".join(f"{s}: lr | {s}: test acc" for s in stores) + " |",
        "|---|---|" + "---:|---:|" * len(stores),
    ]
    for (sched, optim), row in wide.iterrows():
        cells = [f"{row[('lr0', s)]:g} | {row[('mean', s)]:.3f}" for s in stores]
        lines.append(f"| {sched} | {optim} | " + " | ".join(cells) + " |")
    (fair / "comparison.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def provenance(timings: list[tuple[str, float]], *, tiny: bool, jobs: str, fair: bool) -> str:
    """DIR/README.md: the command, date, commit, machine, versions and each stage's wall time."""

    def files(names) -> list[str]:
        return [
            f"  * scripts/sweeps/{name} {' '.join(TINY[name]) if tiny else ''}".rstrip()
            for name in names
        ]

    lines = [
        "# Reference results",
        "",
        "Generated by `python scripts/reference.py"
        + (" --tiny" if tiny else "")
        + "`; do not write here with `bench.run` (its default store is results/runs).",
        "",
        f"* date: {P.now()}; commit {P.git_commit()}",
        f"* machine: {P.machine()}, bench.run --jobs {jobs}",
        f"* {P.format_versions(P.versions('torch'))}",
        "* sweeps (bench.run --config FILE [flags]):",
        *files(SWEEPS),
        *([] if not fair else ["* fair comparison (fair/shared, fair/tuned):"]),
        *([] if not fair else files(FAIR.values())),
        "",
        "| stage | wall time |",
        "|---|---:|",
        *[f"| {name} | {seconds / 60:.1f} min |" for name, seconds in timings],
        f"| total | {sum(s for _, s in timings) / 60:.1f} min |",
        "",
        "Figures: `figures/` (bench.plot for each metric, then the trajectories); "
        "tables: `summary.csv`, `curves.csv`, `figures/summary.md`.",
        "",
    ]
    return "\n".join(lines)


def regenerate(
    out: Path = DEFAULT_OUT,
    *,
    replace: bool = False,
    jobs: str = "2",
    tiny: bool = False,
    keep_runs: bool = False,
    with_trajectories: bool = True,
    fair: bool = True,
) -> Path:
    """Run every stage into the staging store next to ``out``, then move it to ``out``.

    ``jobs``: bench.run worker processes; ``tiny``: a few steps per run (TINY), to test the
    pipeline; ``with_trajectories`` / ``fair``: the trajectory figures / the shared-lr vs
    grid-tuned comparison. Returns the resolved ``out``.

    Raises FileExistsError when ``out`` exists without ``replace``, ValueError when the staging
    store cannot be made (nothing written in either case), StageError when a stage fails (the
    staging store is kept; a rerun resumes there)."""
    out = Path(out).resolve()
    if out.exists() and not replace:
        raise FileExistsError(f"{out} exists; pass replace=True to regenerate it")
    staging = out.parent / f".{out.name}-staging"
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot write next to {out}: {exc.strerror}") from None
    if any(staging.iterdir()):
        print(f"resuming in {staging} (finished runs are skipped)")

    timings: list[tuple[str, float]] = []

    def sweep(name: str, store: Path) -> list[str]:  # bench.run's arguments
        config = ["--config", str(SWEEP_FILES / name), *(TINY[name] if tiny else ())]
        return [*config, "--jobs", jobs, "--out", str(store)]

    for name in SWEEPS:
        argv_run = sweep(name, staging)
        _stage(f"bench.run {name}", timings, lambda a=argv_run: bench_run.main(a))
    figures_dir = staging / "figures"
    for metric in METRICS:
        argv_plot = ["--results", str(staging), "--out", str(figures_dir), "--metric", metric]
        _stage(f"bench.plot --metric {metric}", timings, lambda a=argv_plot: bench_plot.main(a))
    if with_trajectories:
        steps = TINY_TRAJECTORY_STEPS if tiny else None
        for lr in (None, float(SHARED_LR)):  # tuned lrs, then one lr for all (the article's)
            name = "trajectories " + ("tuned" if lr is None else f"--lr {SHARED_LR}")
            _stage(name, timings, lambda lr=lr: _trajectories(figures_dir, staging, lr, steps))

    fair_dir = staging / "fair"
    if fair:
        for name, file in FAIR.items():
            store = fair_dir / name
            argv_run = sweep(file, store)
            _stage(f"bench.run {file}", timings, lambda a=argv_run: bench_run.main(a))
            argv_plot = ["--results", str(store), "--out", str(store / "figures")]
            argv_plot += ["--metric", "test_acc"]
            _stage(f"bench.plot {name}", timings, lambda a=argv_plot: bench_plot.main(a))
        _stage("fair comparison", timings, lambda: write_comparison(fair_dir))

    stores = [staging, staging / "trajectories", fair_dir / "shared", fair_dir / "tuned"]
    for store in (s for s in stores if s.is_dir()):
        (store / ".lock").unlink(missing_ok=True)
        if not keep_runs:
            shutil.rmtree(store / "runs", ignore_errors=True)
            shutil.rmtree(store / "tuning", ignore_errors=True)  # tuning.csv has every grid point
    readme = provenance(timings, tiny=tiny, jobs=jobs, fair=fair)
    (staging / "README.md").write_text(readme, encoding="utf-8")
    old = out.parent / f".{out.name}-old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"reference results in {out} ({sum(s for _, s in timings) / 60:.1f} min)")
    return out


def _trajectories(figures_dir: Path, staging: Path, lr: float | None, steps: int | None) -> int:
    code, _ = trajectories.make_figures(figures_dir, staging / "trajectories", lr=lr, steps=steps)
    return code
