"""Regenerate the committed reference results in results/reference/ (fixed seeds, CPU).

    python scripts/reference.py --yes              # the full sweep, then every figure
    python scripts/reference.py --tiny --out DIR   # the same pipeline in ~1 minute (a smoke test)

The sweep, through bench.run --config with the sweep files in scripts/sweeps/ (constant,
exponential, staircase and piecewise schedules, every optimizer at its documented per-task lr):
  * reference_mnist1d_mlp.toml: mnist1d_mlp with seeds 0, 1, 2;
  * reference_surfaces.toml: the 2-D surfaces beale, long_valley, saddle, rosenbrock with seed 0
    (they have no randomness: every seed gives the same run).
Then bench.plot's figures for train loss, test loss and test accuracy, and the trajectory figures
of scripts/plot_trajectories.py (tuned lrs, and every optimizer at lr 0.01), into DIR/figures;
DIR/README.md records the command, versions, machine and how long each stage took.

The fair comparison, on mnist1d_mlp with the constant and staircase schedules, 3 seeds: every
optimizer at one shared lr (0.01; reference_fair_shared.toml) in DIR/fair/shared, and at its own
grid-tuned lr (reference_fair_tuned.toml, bench.run --lr grid: 13 lrs from 1e-5 to 10 on seed 0,
best final test accuracy) in DIR/fair/tuned (with tuning.csv: every grid point); each with
bench.plot's figures (test accuracy; the tuned one adds the LR-sensitivity figure and the
performance profile), and side by side in DIR/fair/comparison.md and comparison_test_acc.png.

Nothing is written into DIR until everything has finished: the work happens in a staging store
next to it (DIR's parent/.DIR-staging, kept if interrupted, so a rerun resumes there), which then
replaces DIR. Replacing an existing DIR needs --yes; bench.run's own default store is results/runs,
so this script is the only thing that writes here. The run JSONs (runs/) are left out of DIR (they
repeat the CSV files) unless --keep-runs is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from bench import plot as bench_plot
from bench import run as bench_run
from bench import sweepfile

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILES = REPO / "scripts" / "sweeps"

SWEEPS = ("reference_mnist1d_mlp.toml", "reference_surfaces.toml")  # into DIR
FAIR = {"shared": "reference_fair_shared.toml", "tuned": "reference_fair_tuned.toml"}  # DIR/fair/
TINY = {  # flags over each file: the same pipeline in about a minute, for testing the script
    "reference_mnist1d_mlp.toml": ("--seeds", "2", "--steps", "40", "--eval-every", "20"),
    "reference_surfaces.toml": ("--steps", "20"),
    "reference_fair_shared.toml": ("--seeds", "2", "--steps", "40", "--eval-every", "20"),
    "reference_fair_tuned.toml": ("--seeds", "2", "--steps", "40", "--eval-every", "20",
                                  "--lr-grid", "1e-3:1:4"),
}  # fmt: skip
_SHARED = sweepfile.read(SWEEP_FILES / FAIR["shared"])
FAIR_TASK = _SHARED["task"]
SHARED_LR = f"{_SHARED['lr']:g}"  # also the trajectories' "similar hyperparameters" figure's lr
METRICS = ("test_acc", "test_loss", "train_loss")  # the last one's summary.md is kept


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scripts/reference.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "results" / "reference", metavar="DIR",
                   help="the reference folder (default: results/reference)")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="replace DIR when it exists")
    p.add_argument("--jobs", default="2", help="bench.run worker processes (default: 2)")
    p.add_argument("--tiny", action="store_true", help="a few steps per run, to test the script")
    p.add_argument("--keep-runs", action="store_true", help="keep the run JSONs in DIR/runs")
    p.add_argument("--no-trajectories", action="store_true",
                   help="skip scripts/plot_trajectories.py")  # fmt: skip
    p.add_argument("--no-fair", action="store_true",
                   help="skip the shared-lr vs grid-tuned comparison on mnist1d_mlp")  # fmt: skip
    return p


def _trajectories_module():
    path = REPO / "scripts" / "plot_trajectories.py"
    spec = importlib.util.spec_from_file_location("plot_trajectories", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stage(name: str, timings: list[tuple[str, float]], fn) -> None:
    start = time.perf_counter()
    print(f"== {name}", flush=True)
    code = fn()
    timings.append((name, time.perf_counter() - start))
    if code not in (0, None):
        raise SystemExit(f"reference.py: {name} exited with {code}; the staging store is kept")


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


def provenance(args: argparse.Namespace, timings: list[tuple[str, float]]) -> str:
    import torch

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def files(names) -> list[str]:
        return [
            f"  * scripts/sweeps/{name} {' '.join(TINY[name]) if args.tiny else ''}".rstrip()
            for name in names
        ]

    lines = [
        "# Reference results",
        "",
        "Generated by `python scripts/reference.py"
        + (" --tiny" if args.tiny else "")
        + "`; do not write here with `bench.run` (its default store is results/runs).",
        "",
        f"* date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {commit}",
        f"* machine: {cpu}, {os.cpu_count()} CPU cores, bench.run --jobs {args.jobs}",
        f"* torch {torch.__version__}, Python {platform.python_version()}",
        "* sweeps (bench.run --config FILE [flags]):",
        *files(SWEEPS),
        *([] if args.no_fair else ["* fair comparison (fair/shared, fair/tuned):"]),
        *([] if args.no_fair else files(FAIR.values())),
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if out.exists() and not args.yes:
        parser.exit(2, f"{parser.prog}: error: {out} exists; pass --yes to regenerate it\n")
    staging = out.parent / f".{out.name}-staging"
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write next to {out}: {exc.strerror}\n")
    if any(staging.iterdir()):
        print(f"resuming in {staging} (finished runs are skipped)")

    timings: list[tuple[str, float]] = []

    def sweep(name: str, store: Path) -> list[str]:  # bench.run's arguments
        config = ["--config", str(SWEEP_FILES / name), *(TINY[name] if args.tiny else ())]
        return [*config, "--jobs", args.jobs, "--out", str(store)]

    for name in SWEEPS:
        argv_run = sweep(name, staging)
        _stage(f"bench.run {name}", timings, lambda a=argv_run: bench_run.main(a))
    figures_dir = staging / "figures"
    for metric in METRICS:
        argv_plot = ["--results", str(staging), "--out", str(figures_dir), "--metric", metric]
        _stage(f"bench.plot --metric {metric}", timings, lambda a=argv_plot: bench_plot.main(a))
    if not args.no_trajectories:
        traj = ["--out", str(figures_dir), "--store", str(staging / "trajectories")]
        traj += ["--steps", "20"] if args.tiny else []
        for mode in ([], ["--lr", SHARED_LR]):  # tuned lrs, then one lr for all (the article's)
            name = f"trajectories {' '.join(mode) or 'tuned'}"
            _stage(name, timings, lambda a=traj + mode: _trajectories_module().main(a))

    fair = staging / "fair"
    if not args.no_fair:
        for name, file in FAIR.items():
            store = fair / name
            stage = f"bench.run {file}"
            argv_run = sweep(file, store)
            _stage(stage, timings, lambda a=argv_run: bench_run.main(a))
            argv_plot = ["--results", str(store), "--out", str(store / "figures")]
            argv_plot += ["--metric", "test_acc"]
            _stage(f"bench.plot {name}", timings, lambda a=argv_plot: bench_plot.main(a))
        _stage("fair comparison", timings, lambda: write_comparison(fair))

    stores = [staging, staging / "trajectories", fair / "shared", fair / "tuned"]
    for store in (s for s in stores if s.is_dir()):
        (store / ".lock").unlink(missing_ok=True)
        if not args.keep_runs:
            shutil.rmtree(store / "runs", ignore_errors=True)
            shutil.rmtree(store / "tuning", ignore_errors=True)  # tuning.csv has every grid point
    (staging / "README.md").write_text(provenance(args, timings), encoding="utf-8")
    old = out.parent / f".{out.name}-old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"reference results in {out} ({sum(s for _, s in timings) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
