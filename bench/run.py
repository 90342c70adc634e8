"""``python -m bench.run``: sweep optimizers x schedules x tasks x seeds into a result store.

    bench.cli        flags -> Plan (bench.plan: every run resolved and checked before any work)
    bench.tune       --lr search / grid: each cell's lr, on the executor
    bench.executors  where runs happen (serial, local worker processes, Ray tasks)
    bench.driver     the driver's loop: each record to the Store, the only writer

Exit codes: 0 every run ok or diverged; 1 a run failed; 2 bad usage (one line on stderr);
130 interrupted (finished runs are kept).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cli
from bench import data as D
from bench import store as S
from bench import tasks as T
from bench import validate as V
from bench.driver import PROG
from bench.driver import execute as execute_runs
from bench.executors import make_executor
from bench.plan import DEFAULT_GRID, DEFAULT_OUT, REFERENCE_DIR, Plan, UsageError, first_line
from bench.tune import Cell, tune

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_OUT",
    "REFERENCE_DIR",
    "Outcome",
    "UsageError",
    "execute",
    "main",
    "run",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse, run, and turn bad usage into one line on stderr (exit 2)."""
    try:
        plan = cli.parse(argv)
        return 0 if plan is None else run(plan)
    except S.StoreWriteError as e:  # a full disk: the runs reported finished are kept
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except (UsageError, V.ArgumentError, S.StoreError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the sweep started (planning, data preparation)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


@dataclass
class Outcome:
    """What a plan's execution came to: the exit code and the records of its runs (finished
    earlier or now); ``summary`` is their summary table."""

    code: int
    records: list[dict[str, Any]]

    @property
    def summary(self) -> pd.DataFrame:
        return S.summary_frame(self.records)


def run(plan: Plan) -> int:
    """Run a plan into its store; returns the exit code (raises UsageError on bad usage)."""
    return execute(plan).code


def execute(plan: Plan) -> Outcome:
    """Run a plan into its store: the exit code (0 every run ok or diverged, 1 a run failed or a
    cell found no lr, 130 interrupted) and the records of the plan's runs, finished earlier or
    now. Raises UsageError on bad usage."""
    configs, mode, targets = plan.configs, plan.lr_mode, plan.targets
    store = S.Store(plan.out)
    try:
        store.open()
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    interrupted = False
    missing: list[Cell] = []
    tuning_failed = 0
    counts = {"ok": 0, "diverged": 0, "failed": 0}
    pending: list = []
    skipped = 0
    t0 = time.perf_counter()
    try:
        need = [c for c in configs if mode.tuned or plan.force or not store.is_done(c.run_id)]
        for name in dict.fromkeys(c.task for c in need):
            prepare(name, need[0].data_dir, plan.download)
        V.batch_fits(need)
        store.check_writable()  # the store's first write: every usage error is behind us
        choice = {
            c.run_id: {"source": plan.lr_sources.get(c.run_id, mode.source), "lr": c.lr}
            for c in configs
        }
        reuse: dict[str, dict[str, Any]] = {}
        try:
            options = {}
            if plan.executor == "ray":
                options = {"address": plan.address, "cpus_per_run": plan.cpus_per_run,
                           "gpus_per_run": plan.gpus_per_run}  # fmt: skip
            with make_executor(plan.executor, plan.jobs, **options) as executor:
                if mode.tuned:
                    tuned = tune(
                        store, configs, mode, executor, plan.quiet, plan.force,
                        vectorize=plan.vectorize, max_batch=plan.max_batch,
                    )  # fmt: skip
                    configs, choice, reuse = tuned.configs, tuned.lr_choice, tuned.reuse
                    missing, tuning_failed = tuned.missing, tuned.failed
                extra = {
                    c.run_id: {"lr_choice": choice[c.run_id], "target": targets[c.task]}
                    for c in configs
                }
                for c in configs:
                    if c.run_id in reuse and (plan.force or not store.is_done(c.run_id)):
                        store.add({**reuse[c.run_id], **extra[c.run_id]})  # the tuning run itself
                    elif plan.force or not store.is_done(c.run_id):
                        pending.append(c)
                    else:
                        store.annotate(c.run_id, {"target": targets[c.task]})
                skipped = len(configs) - len(pending)
                counts = execute_runs(
                    store, pending, skipped, executor, plan.quiet, extra=extra,
                    vectorize=plan.vectorize, max_batch=plan.max_batch,
                )  # fmt: skip
        except KeyboardInterrupt:
            interrupted = True
        ids = {c.run_id for c in configs}
        records = [r for r in store.records.values() if r["run_id"] in ids]
    finally:
        store.write_tables(force=True)
        store.close()
    if interrupted:
        print(f"{PROG}: interrupted; finished runs are kept in {plan.out}", file=sys.stderr)
        return Outcome(130, records)
    for cell in missing:
        table = "lr_search.csv" if mode.source == "search" else "tuning.csv"
        print(
            f"{PROG}: {' '.join(cell)}: no lr passed the {mode.source} (see "
            f"{Path(plan.out) / table}); its runs were not made",
            file=sys.stderr,
        )
    if not plan.quiet:
        print(
            f"{len(pending)} run(s) in {time.perf_counter() - t0:.1f} s: {counts['ok']} ok, "
            f"{counts['diverged']} diverged, {counts['failed']} failed; {skipped} already done; "
            f"store {plan.out}"
        )
    return Outcome(1 if counts["failed"] or missing or tuning_failed else 0, records)


def prepare(task: str, data_dir: str, download: bool) -> None:
    """Get a task's data ready before any run; a failure is a usage error (one line)."""
    try:
        T.get(task).prepare(data_dir, download=download)
    except D.DataMissingError as e:
        raise UsageError(first_line(e)) from None
    except Exception as e:  # a user task's own prepare()
        raise UsageError(
            f"task '{task}': preparing its data failed: {type(e).__name__}: {first_line(e)}"
        ) from None


if __name__ == "__main__":
    from bench.procs import exit_now

    exit_now(main())
