"""--executor ray: the same numbers as --jobs 1 and --jobs 2, worker and driver deaths, --lr grid,
missing data on a worker, bad input, and nothing of Ray left running afterwards.

Everything runs on 127.0.0.1: a test cluster (``ray start --head`` on a free port, auth off,
shared by the module) for the --address path, and the command's own local instance otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from bench import procs
from bench.run import main

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

from test_executors import alive, check_store, descendants  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
TIMING = ["elapsed_s", "wall_s", "steps_per_s", "time_to_target"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray head on 127.0.0.1 (auth off, as a loopback test cluster may be); yields its
    address; killed afterwards by pid: whatever holds its folder."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="obt-ray-", dir="/tmp")
    reaper = procs.Reaper(folder)  # the head goes even if pytest itself is killed
    env = {**os.environ, **LOOPBACK, "PYTHONPATH": str(ROOT)}
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={folder}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    saved = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the drivers connect without a token
    try:
        end = time.monotonic() + 180
        while True:
            assert head.poll() is None, "ray start --head failed"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, "the test head did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            head.kill()
        reaper.close()  # kills what the head left (by pid: what holds its folder), deletes it


def cli(args: list[str], data_dir: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the command keeps its Ray on 127.0.0.1 itself
    return subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--data-dir", data_dir, "--quiet", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """summary.csv and curves.csv without the timing columns, as text."""
    return tuple(
        pd.read_csv(out / name, dtype=str).drop(columns=TIMING, errors="ignore")
        for name in ("summary.csv", "curves.csv")
    )


def wait_for_runs(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while len(list((out / "runs").glob("*.json"))) < n:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end
        time.sleep(0.02)


# ---------------------------------------------------------------------------- same numbers


def test_ray_equals_jobs_1_and_jobs_2(tmp_path, data_dir, cluster):
    sweep = ["--task", "mnist1d_logreg,beale", "--optim", "adam,sgd", "--seeds", "2",
             "--steps", "60", "--eval-every", "20", "--data-dir", data_dir, "--quiet"]  # fmt: skip
    kinds = {"jobs1": [], "jobs2": ["--jobs", "2"], "ray": ["--executor", "ray", "--address",
             cluster]}  # fmt: skip
    for name, extra in kinds.items():
        assert main([*sweep, *extra, "--out", str(tmp_path / name)]) == 0
    base = results(tmp_path / "jobs1")
    assert len(base[1]) > 50
    for name in ("jobs2", "ray"):
        for a, b in zip(base, results(tmp_path / name), strict=True):
            pd.testing.assert_frame_equal(a, b)


def test_lr_grid_on_ray_equals_local(tmp_path, data_dir, cluster):
    args = ["--task", "long_valley,mnist1d_logreg", "--optim", "sgd", "--lr", "grid",
            "--lr-grid", "0.01:0.32:6", "--steps", "50", "--seeds", "2", "--data-dir", data_dir,
            "--quiet"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert (
        main([*args, "--executor", "ray", "--address", cluster, "--out", str(tmp_path / "r")]) == 0
    )
    for table in ("tuning.csv", "summary.csv", "curves.csv"):
        a, b = (pd.read_csv(tmp_path / d / table, dtype=str) for d in ("local", "r"))
        cols = [c for c in a.columns if c not in TIMING]
        pd.testing.assert_frame_equal(a[cols], b[cols])


# ---------------------------------------------------------------------------- faults


def ray_task_workers() -> list[int]:
    """Pids of Ray workers running a chunk of runs now (their title is ray::run_chunk)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes().startswith(b"ray::run_chunk"):
                    found.append(int(p.name))
            except OSError:
                pass
    return found


def test_worker_killed_mid_sweep_is_retried(tmp_path, data_dir, cluster):
    out = tmp_path / "s"
    args = ["--task", "mnist1d_logreg", "--optim", "adam,sgd,rmsprop,momentum", "--steps", "400",
            "--executor", "ray", "--address", cluster, "--out", str(out)]  # fmt: skip
    proc = cli(args, data_dir)  # the cluster fixture set RAY_AUTH_MODE=disabled
    wait_for_runs(out, 1, proc)
    end = time.monotonic() + 60
    while not (victims := ray_task_workers()):
        assert proc.poll() is None and time.monotonic() < end, "no run in flight to kill"
        time.sleep(0.01)
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = check_store(out, 4)
    assert summary["status"].eq("ok").all()


def ray_folders(cmdlines: set[str]) -> set[str]:
    """The private folders of the command's Ray instance, named in its processes' commands."""
    return {m for c in cmdlines for m in re.findall(r"/tmp/optbench-ray-[^/\s\x00]+", c)}


def test_driver_killed_mid_sweep_leaves_nothing_and_rerun_resumes(tmp_path, data_dir):
    """The command's own Ray instance: nothing of it is left after kill -9 of the driver, nor
    after a normal end; the rerun resumes."""
    out = tmp_path / "s"
    args = ["--task", "long_valley,beale", "--optim", "adam,sgd,rmsprop,momentum", "--steps",
            "3000", "--executor", "ray", "--out", str(out)]  # fmt: skip
    proc = cli(args, data_dir)
    kids: set[int] = set()
    end = time.monotonic() + 240
    while len(list((out / "runs").glob("*.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < end
        kids |= descendants(proc.pid)
        time.sleep(0.02)
    kids |= descendants(proc.pid)
    assert len(kids) > 3  # gcs_server, raylet, agents, workers, the reaper
    proc.kill()  # kill -9: no finally block runs in the driver
    proc.communicate()
    time.sleep(10)
    assert [p for p in kids if alive(p)] == []
    kept = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert 2 <= len(kept) < 8
    again = cli(args, data_dir)
    kids, cmdlines = set(), set()
    while again.poll() is None:
        kids |= descendants(again.pid)
        for p in kids:
            with contextlib.suppress(OSError):
                cmdlines.add(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"))
        time.sleep(0.05)
    _, err = again.communicate()
    assert again.returncode == 0, err
    assert err == ""  # no Ray notices on the command's output
    check_store(out, 8)
    for name, content in kept.items():
        assert (out / "runs" / name).read_bytes() == content
    time.sleep(2)
    assert [p for p in kids if alive(p)] == []
    assert ray_folders(cmdlines) and not any(Path(f).exists() for f in ray_folders(cmdlines))


@pytest.mark.slow
def test_driver_killed_while_ray_starts_leaves_nothing(tmp_path, data_dir):
    args = ["--task", "long_valley", "--optim", "adam,sgd", "--steps", "3000", "--executor", "ray"]
    seen: set[int] = set()
    for i, delay in enumerate((0.5, 2.0, 4.0)):
        proc = cli([*args, "--out", str(tmp_path / str(i))], data_dir)
        end = time.monotonic() + 120
        while not descendants(proc.pid):  # the reaper: Ray is about to start
            assert proc.poll() is None and time.monotonic() < end
            time.sleep(0.01)
        t = time.monotonic() + delay
        while time.monotonic() < t:
            seen |= descendants(proc.pid)
            time.sleep(0.02)
        proc.kill()
        proc.communicate()
    time.sleep(10)
    assert [p for p in seen if alive(p)] == []


def test_missing_data_on_a_worker_is_a_failed_record_naming_node_and_path(cluster):
    from bench.ray_executor import RayExecutor
    from bench.train import RunConfig

    config = RunConfig(task="mnist_mlp", optim="sgd", sched="constant", seed=0, steps=5,
                       batch_size=32, lr=0.1, eval_every=5,
                       data_dir="/nonexistent/data")  # fmt: skip
    with RayExecutor(address=cluster, cpus_per_run=1) as ex:
        [(_, record)] = list(ex.map([config]))
    assert record["status"] == "failed"
    assert record["error"].startswith(f"DataMissingError on node {socket.gethostname()}: ")
    assert "/nonexistent/data/MNIST/raw" in record["error"]


# ---------------------------------------------------------------------------- bad input


def one_line_error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bench.run: error: "), err
    return err


def test_address_where_nothing_listens_is_one_line_at_once(tmp_path, capsys):
    port = free_port()
    t0 = time.monotonic()
    err = one_line_error(["--executor", "ray", "--address", f"127.0.0.1:{port}", "--task",
                          "saddle", "--out", str(tmp_path / "s")], capsys)  # fmt: skip
    assert time.monotonic() - t0 < 10
    assert f"nothing answers at 127.0.0.1:{port}" in err
    assert not (tmp_path / "s").exists()  # refused before the store was opened
    err = one_line_error(["--executor", "ray", "--address", f"ray://127.0.0.1:{port}",
                          "--task", "saddle", "--out", str(tmp_path / "s")], capsys)  # fmt: skip
    assert "nothing answers" in err


BAD = [
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be 0, a fraction"),
    (["--executor", "ray", "--gpus-per-run", "1.5"], "--gpus-per-run must be 0, a fraction"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be a positive number"),
    (["--address", "auto"], "--address is only used with --executor ray"),
    (["--gpus-per-run", "1"], "--gpus-per-run is only used with --executor ray"),
    (["--executor", "ray", "--address", "a:b:c"], "--address must be auto, host:port"),
]
if not __import__("torch").cuda.is_available():
    BAD.append((["--executor", "ray", "--gpus-per-run", "1"], "needs --device cuda, and CUDA"))


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input(tmp_path, capsys, argv, message):
    assert message in one_line_error([*argv, "--task", "saddle", "--out", str(tmp_path)], capsys)


def test_more_cpus_per_run_than_the_cluster_has(tmp_path, capsys, cluster):
    err = one_line_error(["--executor", "ray", "--address", cluster, "--cpus-per-run", "64",
                          "--task", "saddle", "--steps", "2", "--out", str(tmp_path / "s")],
                         capsys)  # fmt: skip
    assert "64 CPU(s)" in err and "largest node: 2 CPUs" in err


def test_own_instance_polls_fast_and_stops_with_its_monitor_killed_first(tmp_path):
    """The command's own instance: it runs with the fast socket poll (the raylet's first
    connection to its object store may come too early; Ray's default retries after a second);
    its autoscaler monitor is gone before Ray's shutdown reaches it (Ray would SIGTERM it, then
    wait a second for it to give up on the stopped GCS); nothing of the instance is left."""
    from ray._private import node as ray_node
    from ray._private.state import state

    from bench.ray_executor import CONNECT_POLL, RayExecutor
    from bench.train import RunConfig

    seen: dict[str, object] = {}
    real = ray_node.Node._kill_process_impl

    def spy(self, process_type, *args, **kwargs):
        for info in self.all_processes.get(process_type, []):
            seen[process_type] = info.process.poll()
        return real(self, process_type, *args, **kwargs)

    config = RunConfig(task="saddle", optim="sgd", sched="constant", seed=0, steps=2,
                       batch_size=None, lr=0.01)  # fmt: skip
    with mock.patch.object(ray_node.Node, "_kill_process_impl", spy):
        with RayExecutor(jobs=1, num_cpus=1) as ex:
            [(_, record)] = list(ex.map([config]))
            folder, reaper = ex.reaper.folder, ex.reaper.proc
            system_config = state.get_system_config()
        assert record["status"] == "ok"
    assert CONNECT_POLL.items() <= system_config.items()
    assert seen["monitor"] is not None  # already exited when Ray came to stop it
    assert seen["raylet"] is None  # the others are Ray's to stop, as before
    assert reaper.poll() is not None and not os.path.exists(folder)
    assert not procs.holders(folder, exclude={os.getpid()})  # (Ray keeps log files open here)


def test_instances_one_after_another_in_one_process_leave_nothing(tmp_path):
    """Two sweeps on Ray from one Python process (bench.sweep twice): each instance's folder is
    gone afterwards; the second does not spill into, or recreate, the first one's."""
    from bench.ray_executor import CONNECT_POLL, RayExecutor
    from bench.train import RunConfig

    poll = dict(CONNECT_POLL)
    config = RunConfig(task="saddle", optim="sgd", sched="constant", seed=0, steps=2,
                       batch_size=None, lr=0.01)  # fmt: skip
    folders = []
    for _ in range(2):
        with RayExecutor(jobs=1, num_cpus=1) as ex:
            [(_, record)] = list(ex.map([config]))
            folders.append(ex.reaper.folder)
        assert record["status"] == "ok"
    assert [f for f in folders if os.path.exists(f)] == []
    assert poll == CONNECT_POLL
