"""Tuning orchestration: choose each (task, optimizer, schedule) cell's lr by ``--lr search`` or
``--lr grid`` on any executor, in a sub-store of the command's store (``lr_search/``, ``tuning/``).

The protocols themselves (halving lrs, verdicts, the grid's selection, tables) are the pure
functions of ``bench.tuning``; this module only decides which runs to make and reads their
records. Runs already in the sub-store are reused, so an interrupted tuning resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bench import store as S
from bench import tuning as U
from bench.driver import execute, say
from bench.executors import Executor
from bench.plan import LrMode
from bench.train import RunConfig

Cell = tuple[str, str, str]  # (task, optim, sched); the other settings are the command's


@dataclass
class TuningResult:
    """What tuning decided for a command's runs."""

    configs: list[RunConfig]  # the runs to make, each at its cell's chosen lr
    lr_choice: dict[str, dict[str, Any]]  # run_id -> {"source": search|grid, "lr": lr}
    missing: list[Cell]  # cells where no lr passed: their runs are not made
    reuse: dict[str, dict[str, Any]]  # run_id -> record of a tuning run that is this very run
    failed: int  # tuning runs that failed


def cells_of(configs: list[RunConfig]) -> dict[Cell, RunConfig]:
    """Each cell's config on the tuning seed (the first of --seeds)."""
    cells: dict[Cell, RunConfig] = {}
    for c in configs:
        cells.setdefault((c.task, c.optim, c.sched), c)
    return cells


class _Tuner:
    """The sub-store, the executor and the runs made by this command (``fresh``: with --force,
    each tuning run is redone once per command, not once per round)."""

    def __init__(
        self,
        sub: S.Store,
        executor: Executor,
        quiet: bool,
        force: bool,
        vectorize: str = "off",
        max_batch: int | None = None,
    ) -> None:
        self.sub, self.executor, self.quiet, self.force = sub, executor, quiet, force
        self.vectorize, self.max_batch = vectorize, max_batch
        self.fresh: set[str] = set()

    def run_missing(self, configs: list[RunConfig], label: str) -> None:
        """Run the configs that the sub-store lacks (all of them with --force, once)."""
        todo = [
            c for c in dict((c.run_id, c) for c in configs).values()
            if not self.sub.is_done(c.run_id) or (self.force and c.run_id not in self.fresh)
        ]  # fmt: skip
        self.fresh.update(c.run_id for c in todo)
        execute(
            self.sub, todo, len(configs) - len(todo), self.executor, self.quiet, label,
            vectorize=self.vectorize, max_batch=self.max_batch,
        )  # fmt: skip

    def search(self, cells: dict[Cell, RunConfig], mode: LrMode) -> dict[Cell, float | None]:
        """The halving search, in rounds: each round runs the next probe of every unresolved cell
        (in parallel on the executor); a cell stops at its first passing probe, or with None
        after MAX_HALVINGS halvings or a failed probe."""
        lrs = U.halving_lrs(mode.lr_max, U.MAX_HALVINGS)
        k = dict.fromkeys(cells, 0)
        chosen: dict[Cell, float | None] = {}
        while k:
            probes = {}
            for cell, i in k.items():
                c = cells[cell]
                steps = mode.probe_steps or c.steps
                probes[cell] = replace(
                    c, lr=lrs[i], steps=steps, eval_every=min(c.eval_every, steps)
                )
            self.run_missing(list(probes.values()), "probe ")
            for cell, probe in probes.items():
                verdict = U.probe_verdict(self.sub.records[probe.run_id])
                if verdict == U.PASSED:
                    chosen[cell] = probe.lr
                elif verdict == U.FAILED or k[cell] == U.MAX_HALVINGS:
                    chosen[cell] = None
                else:
                    k[cell] += 1
                    continue
                n = k.pop(cell) + 1
                what = f"lr {probe.lr:g}"
                if verdict != U.PASSED:
                    what = f"no lr ({verdict} at {probe.lr:g})"
                say(self.quiet, f"lr search {' '.join(cell)}: {what} after {n} probe(s)")
        return chosen

    def grid(self, cells: dict[Cell, RunConfig], mode: LrMode) -> dict[Cell, float | None]:
        """Every grid lr on the tuning seed, then each cell's best (None: every point diverged)."""
        runs = {cell: [replace(c, lr=lr) for lr in mode.grid] for cell, c in cells.items()}
        self.run_missing([r for rs in runs.values() for r in rs], "grid ")
        chosen: dict[Cell, float | None] = {}
        for cell, rs in runs.items():
            rows = [S.summary_row(self.sub.records[r.run_id]) for r in rs]
            best = U.select_best(cell[0], [{**row, "lr": row["lr0"]} for row in rows])
            chosen[cell] = None if best is None else best["lr"]
            metric, _ = U.tuning_metric(cell[0])
            what = "no lr (every point diverged or failed)"
            if best is not None:
                what = f"lr {best['lr']:g} ({metric} {best[metric]:.4g})"
            say(self.quiet, f"lr grid {' '.join(cell)}: {what} of {len(rs)}")
        return chosen


def tune(
    store: S.Store,
    configs: list[RunConfig],
    mode: LrMode,
    executor: Executor,
    quiet: bool = False,
    force: bool = False,
    vectorize: str = "off",
    max_batch: int | None = None,
) -> TuningResult:
    """Choose each cell's lr (search or grid, in a sub-store), then return the final configs at
    it, each run's lr_choice, the cells without an lr, the records that a tuning run already
    made (the tuning seed's run at the chosen lr, when the probe or grid run is that very run)
    and the number of tuning runs that failed. Tuning runs are batched as the command's runs
    are (``vectorize``, ``max_batch``): a cell's grid points, or probes of one optimizer under
    several schedules, train as one batched model."""
    sub = store.sub("lr_search" if mode.source == "search" else "tuning")
    tuner = _Tuner(sub, executor, quiet, force, vectorize, max_batch)
    try:
        cells = cells_of(configs)
        chosen = tuner.search(cells, mode) if mode.source == "search" else tuner.grid(cells, mode)
    finally:
        sub.write_tables(force=True)
        sub.close()
    finals, choice, reuse = [], {}, {}
    for c in configs:
        lr = chosen[(c.task, c.optim, c.sched)]
        if lr is None:
            continue
        final = replace(c, lr=lr)
        finals.append(final)
        choice[final.run_id] = {"source": mode.source, "lr": lr}
        done = sub.records.get(final.run_id)
        if done and done["status"] in S.DONE and (not force or final.run_id in tuner.fresh):
            reuse[final.run_id] = done
    missing = [cell for cell, lr in chosen.items() if lr is None]
    failed = sum(sub.records[r]["status"] == "failed" for r in tuner.fresh if r in sub.records)
    return TuningResult(finals, choice, missing, reuse, failed)
