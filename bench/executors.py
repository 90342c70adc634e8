"""Executors: where runs happen. ``Executor.map(configs)`` yields ``(config, record)`` pairs in
completion order; a run is the pure function ``train_one_run(config) -> record`` and executors
never touch the store (the driver writes every record).

    serial   in this process, one run after another (with a per-run progress bar)
    local    worker processes on this machine (``--jobs N``)
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from bench.train import Progress, RunConfig, train_one_run

Record = dict[str, Any]
#: Given a config, a context manager that yields the run's progress callback (or None).
ProgressFactory = Callable[[RunConfig], AbstractContextManager[Progress | None]]


class WorkerDied(RuntimeError):
    """A worker process ended without returning its run (killed, out of memory)."""


class Executor:
    """Runs configs somewhere and hands back their records, in completion order."""

    name = "executor"

    def map(
        self, configs: Sequence[RunConfig], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[RunConfig, Record]]:
        """Yield (config, record) for each config as its run finishes. ``progress`` is used by
        executors that run in this process (a per-run progress bar)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers; safe to call more than once."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Every run in this process, one after another."""

    name = "serial"

    def map(self, configs, progress=None):
        for config in configs:
            with progress(config) if progress else nullcontext() as callback:
                record = train_one_run(config, callback)
            yield config, record


def _worker(tasks, results) -> None:
    """Worker process: run configs until the None sentinel. Ctrl-C is the driver's business, and a
    worker dies with the driver (Linux), so a kill -9'd sweep leaves no orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    for k, config in iter(tasks.get, None):
        results.put((k, train_one_run(config)))


class LocalExecutor(Executor):
    """Spawned worker processes that run configs and send back records, started at the first map
    with more than one config and kept for later maps (the rounds of --lr search).

    Hand-rolled rather than a ProcessPoolExecutor so that Ctrl-C can terminate the workers at once
    and a dead worker is noticed instead of waited for."""

    name = "local"

    def __init__(self, jobs: int) -> None:
        self.jobs, self.procs, self.batch = jobs, [], 0
        ctx = mp.get_context("spawn")  # fork is unsafe with torch threads and CUDA
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.broken = False

    def _start(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs = [
            ctx.Process(target=_worker, args=(self.tasks, self.results), daemon=True)
            for _ in range(n)
        ]
        for p in self.procs:
            p.start()

    def map(self, configs, progress=None):
        if not self.procs and (self.jobs == 1 or len(configs) <= 1):
            yield from SerialExecutor().map(configs, progress)
            return
        if not self.procs:
            self._start(min(self.jobs, len(configs)))
        self.batch += 1
        done = False
        try:
            for k, config in enumerate(configs):
                self.tasks.put(((self.batch, k), config))
            for _ in configs:
                while True:
                    try:
                        (batch, k), record = self.results.get(timeout=0.5)
                        if batch == self.batch:
                            break
                    except queue.Empty:
                        if any(p.exitcode not in (None, 0) for p in self.procs):
                            raise WorkerDied from None
                yield configs[k], record
            done = True
        finally:
            if not done:  # interrupted or a worker died: the workers cannot be trusted any more
                self.close()

    def close(self, wait: bool = False) -> None:
        """Stop the workers: let them finish (wait) or terminate them at once."""
        if wait:
            for _ in self.procs:
                self.tasks.put(None)
            for p in self.procs:
                p.join()
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=5)
        self.tasks.cancel_join_thread()
        self.procs = []


def make_executor(jobs: int) -> Executor:
    """The executor for a command: serial for --jobs 1, else local worker processes."""
    return SerialExecutor() if jobs == 1 else LocalExecutor(jobs)
