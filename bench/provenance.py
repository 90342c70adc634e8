"""Where a generated number comes from: date, commit, machine, versions and load.

Every script that writes measurements or tables into the docs stamps them with the same
:func:`stamp`, so that a reader can tell which code, which machine and which libraries produced
them, and whether other work was running beside a timing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIRTY = " (with uncommitted changes)"


def git_commit(
    root: Path = REPO, *, length: int | None = None, paths: Sequence[str] = (), dirty: str = DIRTY
) -> str:
    """The short HEAD commit of the checkout at ``root`` (``length`` hex digits, else git's
    default), with ``dirty`` appended when tracked files differ from it (only those under
    ``paths`` when given, so that regenerated docs do not mark the code as changed); "unknown"
    outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip

    short = f"--short={length}" if length else "--short"
    try:
        commit = git("rev-parse", short, "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (dirty if changed else "")


def cpu() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says of the processor."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU and how many cores this process can see, e.g. ``AMD EPYC, 2 CPUs``."""
    return f"{cpu()}, {os.cpu_count()} CPUs"


def versions(*packages: str) -> dict[str, str]:
    """Python's version, then each package's: the module's own ``__version__`` (torch's names
    its CUDA build, which the installed metadata leaves out), else the installed distribution's,
    else "not installed"."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            version = getattr(importlib.import_module(name), "__version__", None)
        except Exception:
            version = None
        if not isinstance(version, str):
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = "not installed"
        out[name] = version
    return out


def format_versions(found: dict[str, str]) -> str:
    """``torch 2.5.1, Python 3.11.7``: the packages in the order given, then Python."""
    parts = [f"{k} {v}" for k, v in found.items() if k != "python"]
    return ", ".join([*parts, f"Python {found['python']}"] if "python" in found else parts)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, ``1.02 / 0.87 / 0.65``; "unknown" where the
    platform has none. Printed beside timings: on a shared machine they say how busy it was."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def now() -> str:
    """The current UTC time to the minute, ``2026-01-31 14:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def stamp(*details: str, packages: Sequence[str] = ("torch",), commit: str | None = None) -> str:
    """One line: date, commit, machine, ``details`` (threads, a GPU ...) and versions, e.g.
    ``2026-01-31 14:05 UTC, commit abc1234, AMD EPYC, 2 CPUs, 1 thread, torch 2.5.1, Python
    3.11.7``. ``commit`` replaces :func:`git_commit`'s when a caller counts changes its own way."""
    parts = [now(), f"commit {commit or git_commit()}", machine(), *details]
    return ", ".join([*parts, format_versions(versions(*packages))])
