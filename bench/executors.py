"""Executors: where runs happen. ``Executor.map(jobs)`` yields ``(config, record)`` for every
run, in completion order; a job is a RunConfig or a ``bench.batched.Batch`` of runs trained
together (it yields one pair per member, together). A run is the pure function
``train_one_run(config) -> record``; executors return records and never touch the store (the
driver writes every record).

    serial   in this process, one run after another (with a per-run progress bar)
    local    ``--jobs N`` worker processes on this machine, started once per command
    ray      Ray tasks on a local instance or a cluster (``--executor ray``; bench.ray_executor)

Short runs travel in chunks (``chunk_size``): a chunk lasts about ``CHUNK_S`` seconds, so the
cost of sending work and records stays a small share, yet no worker gets more than an even share
of what is left. A worker that dies mid-chunk (killed, out of memory) has the unfinished runs of
its chunk retried on a new worker up to ``MAX_RETRIES`` times, then recorded ``failed``; a run
that fails by its own exception is a ``failed`` record from ``train_one_run`` and is not retried.
"""

from __future__ import annotations

import contextlib
import math
import socket
import statistics
import subprocess
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from typing import Any

from bench import procs
from bench.train import FORMAT_VERSION, Progress, RunConfig, train_one_run

Record = dict[str, Any]
#: Given a config, a context manager that yields the run's progress callback (or None).
ProgressFactory = Callable[[RunConfig], AbstractContextManager[Progress | None]]

CHUNK_S = 1.0  # seconds of runs per chunk, once their length is known
MAX_RETRIES = 3  # a run whose worker dies is retried this many times (Ray's default for tasks)
EXECUTORS = ("local", "ray")  # --executor (serial: local with --jobs 1)


class Executor:
    """Runs configs somewhere and hands back their records, in completion order."""

    name = "executor"

    def map(
        self, configs: Sequence[RunConfig], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[RunConfig, Record]]:
        """Yield (config, record) for each config as its run finishes. ``progress`` is used by
        executors that run in this process (a per-run progress bar). Closing the iterator early
        (Ctrl-C) abandons the runs in flight."""
        raise NotImplementedError

    def start(self) -> None:
        """Get ready to run (connect, start workers) where that can fail or take a while; map
        does it too. A no-op where nothing needs to start up front."""

    def close(self) -> None:
        """Stop the workers; safe to call more than once."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Job = Any  # RunConfig | bench.batched.Batch


def members(job: Job) -> list[RunConfig]:
    """The runs of a job."""
    return list(job.configs) if hasattr(job, "configs") else [job]


def run_job(job: Job, progress: Progress | None = None) -> list[Record]:
    """The records of a job's runs, in ``members`` order: a batch by ``train_batch`` (which
    falls back to separate runs if the batch fails), a single run by ``run_here``."""
    if hasattr(job, "configs"):
        from bench.batched import train_batch

        return [_name_node(r) for r in train_batch(job.configs)]
    return [run_here(job, progress)]


def _name_node(record: Record) -> Record:
    error = record.get("error") or ""
    if record["status"] == "failed" and error.startswith("DataMissingError"):
        record["error"] = (
            f"DataMissingError on node {socket.gethostname()}: " + error.split(": ", 1)[-1]
        )
    return record


def run_here(config: RunConfig, progress: Progress | None = None) -> Record:
    """``train_one_run`` as a worker calls it: a data set missing on this machine names the node
    (on a cluster the driver's check says nothing about the node that ran the run)."""
    return _name_node(train_one_run(config, progress))


def lost_record(config: RunConfig, error: str) -> Record:
    """The ``failed`` record of a run that never returned (its worker kept dying)."""
    return {
        "run_id": config.run_id,
        "format": FORMAT_VERSION,
        "config": asdict(config),
        "status": "failed",
        "error": error,
        "diverged_at_step": None,
        "divergence": None,
        "threads": config.threads,
        "device": config.device,
        "curves": {},
        "summary": {"steps_done": 0},
    }


def chunk_size(left: int, slots: int, run_s: float | None) -> int:
    """Runs per chunk: about CHUNK_S seconds of runs of ``run_s`` seconds each (one run while
    their length is unknown), at most an even share of the ``left`` runs over ``slots``."""
    if run_s is None or left <= 0:
        return 1
    k = max(1, math.floor(CHUNK_S / max(run_s, 1e-3)))
    return max(1, min(k, left // slots))


class RunTimes:
    """The wall seconds of finished runs, for ``chunk_size``."""

    def __init__(self) -> None:
        self.times: deque[float] = deque(maxlen=32)

    def add(self, record: Record) -> None:
        wall = (record.get("summary") or {}).get("wall_s")
        if wall is not None:
            self.times.append(float(wall))

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


# ---------------------------------------------------------------------------- serial


class SerialExecutor(Executor):
    """Every run in this process, one after another."""

    name = "serial"

    def map(self, configs, progress=None):
        for job in configs:
            single = not hasattr(job, "configs")
            with progress(job) if progress and single else nullcontext() as callback:
                records = run_job(job, callback)
            yield from zip(members(job), records, strict=True)


# ---------------------------------------------------------------------------- local


_WORKER = """\
from bench.executors import worker_main
worker_main(int(sys.argv[3]))
"""


def worker_main(fd: int) -> None:
    """A local worker: receive chunks [(k, config), ...], send back (k, record) after each run;
    stop at None or when the driver's end of the socket closes.

    It then leaves by ``procs.exit_now``: the driver waits for it, and the interpreter's teardown
    of torch would only add to that wait."""
    conn = Connection(fd)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            break
        if chunk is None:
            break
        for k, job in chunk:
            conn.send((k, run_job(job)))
    procs.exit_now(0)


class _Worker:
    def __init__(self) -> None:
        self.proc, sock = procs.spawn_python(_WORKER)
        self.conn = Connection(sock.detach())
        self.chunk: dict[int, RunConfig] = {}  # sent, not yet returned

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)

    def kill(self) -> None:
        procs.kill(self.proc)
        self.conn.close()


class LocalExecutor(Executor):
    """``jobs`` worker processes on this machine, started at the first map of two or more runs
    and kept until ``close`` (the rounds of --lr search reuse them); a single run before that
    runs in this process, with its progress bar. (``make_executor`` gives --jobs 1 the serial
    executor instead.)"""

    name = "local"

    def __init__(self, jobs: int, max_retries: int = MAX_RETRIES) -> None:
        self.jobs, self.max_retries = jobs, max_retries
        self.workers: list[_Worker] = []
        self.times = RunTimes()

    def map(self, configs, progress=None):
        if not self.workers and len(configs) <= 1:
            yield from SerialExecutor().map(configs, progress)
            return
        todo = deque(enumerate(configs))
        tries = [0] * len(configs)
        done = False
        try:
            while len(self.workers) < min(self.jobs, len(configs)):
                self.workers.append(_Worker())
            left = len(configs)
            while left:
                for w in self.workers:
                    if not w.chunk and todo:
                        n = chunk_size(len(todo), len(self.workers), self.times.median)
                        w.chunk = dict(todo.popleft() for _ in range(min(n, len(todo))))
                        with contextlib.suppress(OSError):  # a dead worker shows in wait()
                            w.conn.send(list(w.chunk.items()))
                for conn in wait([w.conn for w in self.workers if w.chunk]):
                    w = next(w for w in self.workers if w.conn is conn)
                    try:
                        k, records = conn.recv()
                    except (EOFError, OSError):  # the worker died
                        for k, records in self._lost(w, todo, tries):
                            left -= 1
                            yield from zip(members(configs[k]), records, strict=True)
                        continue
                    del w.chunk[k]
                    for record in records:
                        self.times.add(record)
                    left -= 1
                    yield from zip(members(configs[k]), records, strict=True)
            done = True
        finally:
            if not done:  # interrupted: the runs in flight are abandoned with their workers
                self.close()

    def _lost(self, w: _Worker, todo: deque, tries: list[int]) -> list[tuple[int, list[Record]]]:
        """Replace a dead worker; requeue its unfinished runs, or give up on those retried
        max_retries times (returned as failed records)."""
        try:
            code = w.proc.wait(5)
        except subprocess.TimeoutExpired:  # its socket closed, yet it runs: end it
            procs.kill(w.proc)
            code = w.proc.returncode
        w.conn.close()
        self.workers.remove(w)
        gave_up = []
        why = f"signal {-code}" if code < 0 else f"exit code {code}"
        for k, config in reversed(w.chunk.items()):
            tries[k] += 1
            if tries[k] <= self.max_retries:
                todo.appendleft((k, config))
                continue
            error = f"WorkerLost: its worker process died ({why}) {tries[k]} times running it"
            gave_up.append((k, [lost_record(c, error) for c in members(config)]))
        if todo:
            self.workers.append(_Worker())
        return gave_up

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.proc.wait(0 if w.chunk else 5)
            w.kill()
        self.workers = []


def make_executor(kind: str = "local", jobs: int | None = 1, **ray_options: Any) -> Executor:
    """The executor of a command: ``serial``; ``local`` with ``jobs`` workers (in this process
    when jobs is 1); ``ray`` (options: address, cpus_per_run, gpus_per_run)."""
    if kind == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(jobs=jobs, **ray_options)
    if kind == "serial" or not jobs or jobs == 1:
        return SerialExecutor()
    return LocalExecutor(jobs)
