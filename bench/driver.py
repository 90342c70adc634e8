"""The driver's loop: runs configs on an executor and writes each record to the store as it
arrives (the store is the only writer, and only the driver holds it), with progress lines."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from tqdm import tqdm

from bench import store as S
from bench.executors import Executor
from bench.train import RunConfig

PROG = "bench.run"


def show_bars(quiet: bool) -> bool:
    return not quiet and not (os.environ.get("CI") and not sys.stdout.isatty())


def say(quiet: bool, line: str) -> None:
    """A progress line (through tqdm when bars are shown, so they stay intact)."""
    if quiet:
        return
    if show_bars(quiet):
        tqdm.write(line)
    else:
        print(line, flush=True)


def describe(c: RunConfig) -> str:
    return f"{c.task} {c.optim} {c.sched} seed={c.seed} lr={c.lr:g}"


def outcome(record: dict[str, Any]) -> str:
    s = record.get("summary") or {}
    status = record["status"]
    if status == "failed":
        return f"failed: {record.get('error')}"
    parts = [status]
    if status == "diverged":
        parts.append(f"at step {record.get('diverged_at_step')}")
    if s.get("final_train_loss") is not None:
        parts.append(f"train_loss={s['final_train_loss']:.4g}")
    if s.get("final_test_acc") is not None:
        parts.append(f"test_acc={s['final_test_acc']:.4f}")
    parts.append(f"({s.get('wall_s', 0):.1f} s)")
    return " ".join(parts)


def execute(
    store: S.Store,
    pending: list[RunConfig],
    skipped: int,
    executor: Executor,
    quiet: bool,
    label: str = "",
    extra: Mapping[str, dict[str, Any]] | None = None,
    vectorize: str = "off",
    max_batch: int | None = None,
) -> dict[str, int]:
    """Run the pending configs (grouped into batches by ``bench.batched.make_jobs`` unless
    ``vectorize`` is "off"), adding each record to the store as it finishes (with the fields of
    ``extra[run_id]``: how its lr was chosen, its target). ``label`` prefixes the per-run lines.
    Returns the count of each status (and of the skipped runs)."""
    if pending:
        executor.start()  # its errors (no cluster, too few CPUs) come before any progress bar
    counts = {"ok": 0, "diverged": 0, "failed": 0, "skipped": skipped}
    total = len(pending) + skipped
    bars = show_bars(quiet)
    sweep_bar = tqdm(total=total, initial=skipped, desc="sweep", unit="run", disable=not bars)

    @contextlib.contextmanager
    def run_bar(config: RunConfig) -> Iterator[Any]:
        bar = tqdm(total=config.steps, desc=label + describe(config), leave=False)

        def progress(step, steps, loss, lr):
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", refresh=False)

        try:
            yield progress
        finally:
            bar.close()

    def report(config: RunConfig, record: dict[str, Any]) -> None:
        counts[record["status"]] += 1
        index = sum(counts.values())  # (skipped included)
        line = f"[{index}/{total}] {label}{describe(config)}: {outcome(record)}"
        if record["status"] == "failed":
            tqdm.write(f"{PROG}: {line}", file=sys.stderr)
        elif bars:
            tqdm.write(line)
        elif not quiet:
            print(line, flush=True)
        done = counts["ok"] + counts["diverged"]
        sweep_bar.set_postfix(done=done, failed=counts["failed"], skipped=skipped, refresh=False)
        sweep_bar.update(1)

    try:
        from bench.batched import make_jobs
        from bench.executors import members

        jobs = make_jobs(pending, vectorize, max_batch)
        job_of = {c.run_id: i for i, job in enumerate(jobs) for c in members(job)}
        arrived: dict[int, list] = {}  # job -> its (config, record) pairs so far
        results = executor.map(jobs, run_bar if bars else None)
        with contextlib.closing(results):  # Ctrl-C anywhere here stops the runs at once
            for config, record in results:
                # a job's records, then the tables once (a batch's records arrive together),
                # then its lines: a run reported finished is in the tables
                store.add({**record, **(extra or {}).get(config.run_id, {})}, tables=False)
                i = job_of[config.run_id]
                arrived.setdefault(i, []).append((config, record))
                if len(arrived[i]) == len(members(jobs[i])):
                    store.write_tables()
                    for pair in arrived.pop(i):
                        report(*pair)
    finally:
        sweep_bar.close()
    return counts
