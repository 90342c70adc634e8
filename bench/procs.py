"""Child processes that cannot outlive the command that started them.

* ``spawn_python(code, ...)``: a Python child whose first statements, before any import of
  ours, ignore Ctrl-C (the driver handles it), ask Linux to SIGKILL the child when its parent
  dies (``PR_SET_PDEATHSIG``), and exit at once if the parent is already gone (the death signal
  only covers a parent that dies after it is set). The driver holds the only other end of the
  child's socket, so a child on another platform also ends when it reads EOF.
* ``exit_now(code)``: end a command or a worker whose work is done, skipping the interpreter's
  teardown of its modules (most of a second once torch is imported).
* ``Reaper``: for processes that are not our children, such as a local Ray instance's agents
  (started by the raylet, which re-parents them to init when it dies). A small watcher in its
  own session holds a pipe from the driver; when the pipe closes (the driver finished, or was
  killed, even by kill -9) it SIGKILLs every process of this user that has a file open under the
  folder it guards (Ray's session folder: each Ray process keeps its logs there), then deletes
  the folder.

Only the standard library here: the reaper must start fast and import nothing heavy.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Where the ``bench`` package of this process lives: children import the same code.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

_PRELUDE = """\
import signal, sys, os
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(0)  # the parent died before the death signal was set
sys.path.insert(0, sys.argv[2])
sys.path[1:1] = [p for p in os.environ.pop("OPTBENCH_SYS_PATH", "").split(os.pathsep)
                 if p and p not in sys.path]  # the driver's: user specs import here as there
"""


def exit_now(code: int) -> None:
    """Exit as Python would, less the teardown of its modules: wait for non-daemon threads, run
    the atexit handlers (Ray's shutdown, torch's compile workers, ...), flush the standard
    streams, then ``os._exit(code)``. Tearing down torch's modules frees nothing the operating
    system would not, and takes most of a second. Under a profiler, tracer or coverage tool (which
    write their results after the program returns) it is ``sys.exit(code)``."""
    monitoring = getattr(sys, "monitoring", None)  # Python >= 3.12's tools (cProfile, coverage)
    if (sys.gettrace() or sys.getprofile()
            or (monitoring and any(monitoring.get_tool(i) for i in range(6)))):  # fmt: skip
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def spawn_python(code: str, *args: str) -> tuple[subprocess.Popen, socket.socket]:
    """Start ``python -c PRELUDE + code`` with a socket to it; the child reads its socket's file
    descriptor as ``int(sys.argv[3])`` and its own arguments from ``sys.argv[4:]``. Start
    children from the main thread: the death signal follows the thread that forked them."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PRELUDE + code, str(os.getpid()), PACKAGE_ROOT,
             str(theirs.fileno()), *args],
            pass_fds=(theirs.fileno(),),
            env={**os.environ, "OPTBENCH_SYS_PATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


def kill(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGKILL a child and reap it."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


# ---------------------------------------------------------------------------- the reaper


def holders(folder: str, exclude: set[int]) -> list[int]:
    """Pids of this user's processes with a file open under ``folder``, or with ``folder`` in
    their command line (Linux /proc; an empty list elsewhere)."""
    folder = folder.rstrip("/") + "/"
    found = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        pid = int(entry.name)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if folder in cmdline + " ":
                found.append(pid)
                continue
            for fd in os.scandir(f"/proc/{pid}/fd"):
                if os.readlink(fd.path).startswith(folder):
                    found.append(pid)
                    break
        except OSError:  # gone, or not ours
            continue
    return found


def reap(folder: str, exclude: set[int], timeout: float = 10.0) -> None:
    """SIGKILL the holders of ``folder`` until none is left (or ``timeout``), then delete it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = holders(folder, exclude)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


_REAPER = """\
import os, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a group-wide kill must leave it to clean up
signal.signal(signal.SIGHUP, signal.SIG_IGN)
folder, driver = sys.argv[3], int(sys.argv[1])
os.read(0, 1)  # blocks until the driver closes the pipe: it finished or it died
from bench.procs import reap
reap(folder, exclude={os.getpid(), driver})
"""


class Reaper:
    """Guards ``folder``: whatever has files open there is killed when the driver lets go
    (``close``) or dies. Not a child that dies with the driver: it runs in its own session,
    without the death signal, ignoring SIGINT, SIGTERM and SIGHUP."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        read, self._write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2])\n"
                 "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" + _REAPER,
                 str(os.getpid()), PACKAGE_ROOT, folder],
                stdin=read, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(read)

    def close(self, timeout: float = 30.0) -> None:
        """Let go: the reaper kills what is left under the folder, deletes it, and exits."""
        if self._write is not None:
            os.close(self._write)
            self._write = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
