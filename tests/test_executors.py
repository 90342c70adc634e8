"""The local executor: chunks, worker deaths (retried, then failed; never lost or duplicated),
and no worker outliving its driver, however early the driver is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import executors as E
from bench import procs
from bench.train import RunConfig

ROOT = Path(__file__).resolve().parents[1]
WORKER_MARKS = ("bench.executors import worker_main", "multiprocessing.spawn")  # (this, older)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def surface(seed: int = 0, steps: int = 20, task: str = "long_valley") -> RunConfig:
    return RunConfig(task=task, optim="sgd", sched="constant", seed=seed, steps=steps,
                     batch_size=None, lr=0.01, eval_every=steps)  # fmt: skip


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent's wait() has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out |= {k} | descendants(k)
    return out


def workers_of(pid: int) -> list[int]:
    found = []
    for p in descendants(pid):
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_text()
            if any(mark in cmdline for mark in WORKER_MARKS):
                found.append(p)
        except OSError:
            pass
    return found


def check_store(out: Path, expected_runs: int) -> pd.DataFrame:
    """Records, summary and curves agree: each run once, each (run, step) once."""
    records = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    summary = pd.read_csv(out / "summary.csv")
    curves = pd.read_csv(out / "curves.csv")
    assert len(records) == expected_runs
    assert sorted(summary["run_id"]) == sorted(records) and summary["run_id"].is_unique
    assert not curves.duplicated(["run_id", "step"]).any()
    for run_id, r in records.items():
        assert (curves["run_id"] == run_id).sum() == len(r["curves"]["step"])
    return summary


# ---------------------------------------------------------------------------- chunks


def test_chunk_size():
    assert E.chunk_size(100, 2, None) == 1  # run length unknown: one run at a time
    assert E.chunk_size(100, 2, 2.0) == 1  # long runs: one per chunk
    assert E.chunk_size(100, 2, 0.1) == 10  # about CHUNK_S of runs
    assert E.chunk_size(8, 2, 0.001) == 4  # never more than an even share of what is left
    assert E.chunk_size(1, 4, 0.001) == 1


def test_local_executor_returns_every_run_once_and_serial_equal(data_dir):
    configs = [surface(seed, steps=30, task=t) for t in ("beale", "saddle") for seed in range(5)]
    with E.LocalExecutor(jobs=2) as ex:
        got = list(ex.map(configs))
        again = list(ex.map(configs[:3]))  # the same workers serve a second map
        assert len(ex.workers) == 2
    assert sorted(c.run_id for c, _ in got) == sorted(c.run_id for c in configs)
    assert all(r["run_id"] == c.run_id for c, r in got + again)
    serial = {c.run_id: r for c, r in E.SerialExecutor().map(configs)}
    for c, r in got:
        assert r["curves"]["train_loss"] == serial[c.run_id]["curves"]["train_loss"]


@pytest.mark.parametrize("retries, status", [(0, "failed"), (1, "ok")])
def test_worker_death_is_retried_then_failed(retries, status):
    configs = [surface(0, steps=5), surface(1, steps=5)]
    ex = E.LocalExecutor(jobs=2, max_retries=retries)

    def kill_first_worker():
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ws = [w for w in list(ex.workers) if w.chunk]
            if ws:
                os.kill(ws[0].proc.pid, signal.SIGKILL)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    with ex:
        got = {c.seed: r for c, r in ex.map(configs)}
    killer.join()
    assert len(got) == 2
    lost = [r for r in got.values() if r["status"] != "ok"]
    if status == "failed":
        assert len(lost) == 1 and lost[0]["error"].startswith("WorkerLost: ")
        assert "signal 9" in lost[0]["error"]
    else:
        assert not lost


def test_worker_killed_mid_sweep_completes_without_loss(tmp_path, data_dir):
    out = tmp_path / "s"
    args = ["--task", "long_valley,beale", "--optim", "adam,sgd,rmsprop", "--steps", "2000",
            "--jobs", "2", "--out", str(out), "--data-dir", data_dir, "--quiet"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    end = time.monotonic() + 120
    while len(list((out / "runs").glob("*.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < end
        time.sleep(0.01)
    victims = workers_of(proc.pid)
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = check_store(out, 6)
    assert summary["status"].eq("ok").all()  # the killed worker's run was redone elsewhere


# ---------------------------------------------------------------------------- no orphans


def test_no_worker_outlives_a_driver_killed_during_startup(tmp_path, data_dir):
    """kill -9 of the driver while its workers start (importing torch), at several moments:
    every worker is gone 10 s later (the death signal is set before their imports)."""
    args = ["--task", "long_valley", "--optim", "adam,sgd,rmsprop", "--steps", "20000",
            "--jobs", "2", "--data-dir", data_dir, "--quiet"]  # fmt: skip
    seen: set[int] = set()
    for i, delay in enumerate((0.0, 0.3, 1.0)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.run", *args, "--out", str(tmp_path / str(i))], cwd=ROOT
        )
        end = time.monotonic() + 120
        while not workers_of(proc.pid):  # not any child: the driver runs short-lived tools too
            assert proc.poll() is None and time.monotonic() < end
            time.sleep(0.002)
        time.sleep(delay)
        seen |= descendants(proc.pid)
        proc.kill()
        proc.wait()
    assert seen
    time.sleep(10)
    assert [p for p in seen if alive(p)] == []


def test_spawned_child_exits_when_its_parent_is_already_gone():
    """The window before the death signal is set: a child whose parent died first exits."""
    code = "import time; time.sleep(60)"
    # run spawn_python from a short-lived intermediate process, which exits immediately
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bench import procs\n"
        "p, s = procs.spawn_python(sys.argv[2]); print(p.pid, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), code], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    child = int(out.split()[0])
    end = time.monotonic() + 10
    while alive(child) and time.monotonic() < end:
        time.sleep(0.05)
    assert not alive(child)


def test_exit_now_keeps_what_a_normal_exit_does(tmp_path):
    """exit_now skips only the teardown of modules: non-daemon threads finish, atexit handlers
    run, buffered output on pipes arrives, and the exit code is the one given."""
    mark = tmp_path / "atexit"
    script = (
        "import sys, atexit, threading, time; sys.path.insert(0, sys.argv[1])\n"
        "from bench import procs\n"
        "atexit.register(lambda: open(sys.argv[2], 'w').write('ran'))\n"
        "t = threading.Thread(target=lambda: (time.sleep(0.3), print('thread done')))\n"
        "t.start()\n"
        "print('buffered', end='')\n"
        "sys.stderr.write('err')\n"
        "procs.exit_now(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(mark)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 3
    assert done.stdout == "bufferedthread done\n" and done.stderr == "err"
    assert mark.read_text() == "ran"
    # under a profiler it is a plain exit, so that the profiler writes its results
    stats = tmp_path / "prof"
    (tmp_path / "script.py").write_text(script)
    profiled = [sys.executable, "-m", "cProfile", "-o", str(stats), str(tmp_path / "script.py")]
    subprocess.run([*profiled, str(ROOT), str(mark)], capture_output=True, timeout=60)
    assert stats.stat().st_size > 0


def test_reaper_kills_what_holds_its_folder_when_the_driver_dies(tmp_path):
    folder = tmp_path / "guarded"
    folder.mkdir()
    # a "driver" that starts a reaper and an orphan-to-be holding a file in the folder
    script = (
        "import sys, subprocess, time; sys.path.insert(0, sys.argv[1])\n"
        "from bench import procs\n"
        "r = procs.Reaper(sys.argv[2])\n"
        "h = subprocess.Popen(['sh', '-c', 'exec 3>' + sys.argv[2] + '/log; exec sleep 300'],"
        " start_new_session=True)\n"
        "print(h.pid, r.proc.pid, flush=True); time.sleep(300)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(folder)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    holder, reaper = (int(x) for x in driver.stdout.readline().split())
    end = time.monotonic() + 30
    while not procs.holders(str(folder), exclude=set()) and time.monotonic() < end:
        time.sleep(0.05)
    assert holder in procs.holders(str(folder), exclude=set())
    driver.kill()
    driver.wait()
    end = time.monotonic() + 10
    while (alive(holder) or alive(reaper)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not alive(holder) and not alive(reaper)
    assert not folder.exists()


# ---------------------------------------------------------------------------- without Ray


def test_ray_not_installed_says_how_to_install(tmp_path, capsys, monkeypatch):
    from bench.run import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["--executor", "ray", "--task", "saddle", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert 'needs Ray, which is not installed: pip install -e ".[ray]"' in err


TEARDOWN = (
    "import runpy, sys\n"
    "class Mark:\n"
    "    def __del__(self, open=open, path=sys.argv[1]):  # (builtins may be gone by then)\n"
    "        with open(path, 'w') as f:\n"
    "            f.write('torn down')\n"
    "mark = Mark()\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["bench.verify", "sgd", "--against", "torch.optim.SGD", "--steps", "2"],
        ["bench.run", "--task", "saddle", "--steps", "2", "--quiet", "--out", "{out}"],
        ["bench.plot", "--results", "{out}", "--out", "{out}/figures"],
        ["bench.report", "--results", "{out}"],
        ["bench.docs_tables", "--check"],
    ],
    ids=lambda a: a[0],
)
def test_the_commands_end_without_tearing_down_their_modules(tmp_path, argv):
    """python -m bench.run / verify / plot / report / docs_tables end by procs.exit_now: what
    a module teardown would destroy is left to the operating system (its __del__ never runs)."""
    out = tmp_path / "store"
    if argv[0] in ("bench.plot", "bench.report"):
        assert subprocess.run([sys.executable, "-m", "bench.run", "--task", "saddle", "--steps",
                               "2", "--quiet", "--out", str(out)], cwd=ROOT,
                              timeout=120).returncode == 0  # fmt: skip
    mark = tmp_path / "mark"
    cmd = [sys.executable, "-c", TEARDOWN, str(mark), *(a.format(out=out) for a in argv)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not mark.exists()
