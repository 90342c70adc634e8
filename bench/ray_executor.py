"""``--executor ray``: runs as Ray tasks, on a Ray instance started for the command or on a
cluster (``--address``). Ray is an optional dependency: ``pip install -e ".[ray]"``.

Each task runs a chunk of configs (``bench.executors.chunk_size``: one run when runs are long,
about a second of runs when they are short) and returns their records; the driver writes them.
Tasks rather than one actor per worker: Ray reuses its worker processes between tasks, so torch
and the data stay loaded either way (scripts/bench_runner.py measures both), and tasks get
Ray's retries of lost workers (``max_retries``) and per-run resources for free.

* at most ``--jobs`` tasks are in flight (default: as many as the cluster's resources hold);
  each asks for ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs;
* a worker or node lost mid-task: the task is retried up to ``MAX_RETRIES`` times, then its runs
  are ``failed`` records; a run's own exception is already a ``failed`` record (never retried);
* the local instance (no ``--address``) lives in a private temporary folder, bound to
  127.0.0.1, and is shut down when the command ends; a ``bench.procs.Reaper`` kills whatever of
  it is left, even after kill -9 of the driver.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import tempfile
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from bench import procs
from bench.executors import (
    MAX_RETRIES,
    Executor,
    RunTimes,
    chunk_size,
    lost_record,
    members,
    run_job,
)
from bench.plan import UsageError, first_line
from bench.train import RunConfig

INSTALL = 'pip install -e ".[ray]"'
PROBE_TIMEOUT_S = 5.0
GCS_PORT, CLIENT_PORT = 6379, 10001  # Ray's defaults: `ray start --head`, Ray Client (ray://)
#: The command's own instance polls its local sockets every 50 ms instead of every second, with
#: twenty times the attempts, so it gives up after the same 10 s as Ray's default. The raylet
#: connects to its object store, a thread it has just started; when the raylet wins that race it
#: would otherwise sleep a whole second before trying again, and the start waits for it.
#: ``ray.init`` adds the instance's spilling folder to the dict it is given: pass a copy, or the
#: next instance of the process spills into (and recreates) this one's deleted folder.
CONNECT_POLL = {
    "raylet_client_connect_timeout_milliseconds": 50,
    "raylet_client_num_connect_attempts": 200,
}


def require_ray() -> None:
    """UsageError (one line, how to install) when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None


def resolve_address(address: str | None) -> str | None:
    """The cluster to connect to: ``--address`` (``auto``: the cluster this node belongs to;
    ``host:port``; ``ray://host:port``), else ``$RAY_ADDRESS``, else None (start a local instance).
    Something must listen there: probed with a bounded timeout, else UsageError."""
    text = address if address is not None else os.environ.get("RAY_ADDRESS") or None
    if text is None:
        return None
    flag = "--address" if address is not None else "$RAY_ADDRESS"
    target = text
    if text == "auto":
        from ray._private import services

        try:
            target = services.get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise UsageError(
                f"{flag} auto: no Ray cluster runs on this node (start one with `ray start "
                "--head`, or give its address as host:port)"
            ) from None
    probe(flag, text, target)
    return text


def probe(flag: str, text: str, target: str) -> None:
    """Connect to the address's port (at most PROBE_TIMEOUT_S), so that an address where nothing
    listens is one line at once instead of a long hang inside ray.init."""
    client = target.startswith("ray://")
    parts = urlsplit(target if "://" in target else "//" + target)
    try:
        host, port = parts.hostname, parts.port or (CLIENT_PORT if client else GCS_PORT)
    except ValueError:
        host = port = None
    if not host:
        raise UsageError(f"{flag} must be auto, host:port or ray://host:port, got '{text}'")
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UsageError(
            f"{flag} {text}: nothing answers at {host}:{port} ({why}); is the Ray cluster "
            "running (ray start --head) and the address right?"
        ) from None


def is_loopback(address: str | None) -> bool:
    """A local instance (None) or a head on this machine's loopback interface."""
    if address is None:
        return True
    if address.startswith("ray://"):
        return False  # Ray Client connects to the address as given
    host = urlsplit("//" + address).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def loopback(ray: Any, on: bool):
    """While Ray starts or connects, keep it on 127.0.0.1: by default it replaces a loopback
    address by the machine's outward one (and hangs when the head listens on loopback only).
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's switch, read by the processes it starts and,
    once, when ray is imported (hence the constant too)."""
    if not on:
        yield
        return
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


def kill_monitor() -> None:
    """SIGKILL the autoscaler monitor of the command's own Ray instance, before ``ray.shutdown``.
    Ray stops the GCS first, then sends the monitor SIGTERM, whose handler reports to the dead GCS
    until Ray SIGKILLs it a second later: a second added to every command, on an instance of
    fixed size that the monitor never scales. Best effort (Ray's private structures)."""
    with contextlib.suppress(Exception):
        from ray._private import ray_constants, worker

        infos = worker._global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
        for info in infos:
            info.process.kill()
            info.process.wait(timeout=5)


def run_chunk(configs: list[RunConfig]) -> list[dict[str, Any]]:
    """The Ray task: the chunk's runs, one after another, on one worker."""
    return [r for job in configs for r in run_job(job)]


class RayExecutor(Executor):
    """Ray tasks, started at the first map (a command with nothing to run starts no Ray)."""

    name = "ray"

    def __init__(
        self,
        jobs: int | None = None,
        address: str | None = None,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        num_cpus: int | None = None,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        """``address``: an already resolved one (see resolve_address), None for a local instance
        of ``num_cpus`` CPUs (default: this machine's)."""
        self.jobs, self.address, self.num_cpus = jobs, address, num_cpus
        self.cpus, self.gpus, self.max_retries = cpus_per_run, gpus_per_run, max_retries
        self.ray: Any = None
        self.reaper: procs.Reaper | None = None
        self.times = RunTimes()

    # -- starting and stopping -----------------------------------------------------------------

    def start(self) -> None:
        if self.ray is not None:
            return
        import ray

        self.ray = ray
        try:
            self._connect()
            self.slots = self._slots()
        except BaseException:
            self.close()
            raise
        self.task = ray.remote(run_chunk).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
            retry_exceptions=False,
        )  # fmt: skip

    def _connect(self) -> None:
        ray = self.ray
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        with loopback(ray, is_loopback(self.address)):
            if self.address is None:  # its own instance: no notice about its default token auth
                quiet["logging_level"] = logging.ERROR
                short = "/tmp" if os.path.isdir("/tmp") else None  # Ray's socket paths are
                folder = tempfile.mkdtemp(prefix="optbench-ray-", dir=short)  # limited to 107
                self.reaper = procs.Reaper(folder)
                ray.init(
                    address="local", num_cpus=self.num_cpus, include_dashboard=False,
                    _temp_dir=folder, _node_ip_address="127.0.0.1",
                    _system_config=dict(CONNECT_POLL), **quiet,  # (a copy: Ray adds keys)
                )  # fmt: skip
            else:
                try:
                    ray.init(address=self.address, **quiet)
                except Exception as e:  # Ray raises many kinds; one line either way
                    raise UsageError(f"--address {self.address}: {first_line(e)}") from None

    def _slots(self) -> int:
        """How many runs can be in flight: what the nodes hold, capped by --jobs."""
        fits = 0
        largest = (0.0, 0.0)
        for node in self.ray.nodes():
            if not node.get("Alive"):
                continue
            res = node.get("Resources", {})
            cpu, gpu = res.get("CPU", 0.0), res.get("GPU", 0.0)
            largest = max(largest, (cpu, gpu))
            n = math.floor(cpu / self.cpus + 1e-9) if self.cpus else math.inf
            if self.gpus:
                n = min(n, math.floor(gpu / self.gpus + 1e-9))
            fits += n if math.isfinite(n) else 1
        if fits == 0:
            where = "the local Ray instance" if self.address is None else "no node of the cluster"
            raise UsageError(
                f"{where} has {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) free for one run "
                f"(largest node: {largest[0]:g} CPUs, {largest[1]:g} GPUs); lower --cpus-per-run "
                "or --gpus-per-run (--cpus-per-run defaults to --threads)"
            )
        return fits if self.jobs is None else min(self.jobs, fits)

    def close(self) -> None:
        if self.ray is not None:
            if self.address is None:
                kill_monitor()
            with contextlib.suppress(Exception):
                self.ray.shutdown()
            self.ray = None
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None

    # -- running -------------------------------------------------------------------------------

    def map(self, configs, progress=None):
        if not configs:
            return
        self.start()
        ray = self.ray
        todo = deque(configs)
        flying: dict[Any, list[RunConfig]] = {}
        try:
            while todo or flying:
                while todo and len(flying) < self.slots:
                    n = chunk_size(len(todo), self.slots, self.times.median)
                    chunk = [todo.popleft() for _ in range(min(n, len(todo)))]
                    flying[self.task.remote(chunk)] = chunk
                [ref], _ = ray.wait(list(flying), num_returns=1)
                chunk = flying.pop(ref)
                runs = [c for job in chunk for c in members(job)]
                for config, record in zip(runs, self._records(ref, runs), strict=True):
                    self.times.add(record)
                    yield config, record
        finally:
            for ref in flying:  # interrupted: end the runs in flight
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _records(self, ref: Any, chunk: list[RunConfig]) -> list[dict[str, Any]]:
        from ray.exceptions import RayError, RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as e:  # the task itself raised (run_here catches a run's errors)
            error = f"{type(e.cause).__name__}: {first_line(e.cause)}"
        except RayError as e:  # the worker or its node was lost, max_retries times
            error = f"WorkerLost: {type(e).__name__} after {self.max_retries} retries: " + (
                first_line(e)
            )
        return [lost_record(c, error) for c in chunk]
