"""Helpers for the tests that drive bench.run as a user does: from the shell, and in process
with the store's bytes compared before and after (a refused command must change none)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m bench.run ARGS`` in a fresh interpreter from the repository root, with ``env``
    added to the environment; output captured as text."""
    return subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def one_error_line(err: str) -> str:
    """The single line of ``err``, which must be a ``bench.run: error:`` line (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.run: error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def copy_store(src: Path, dst: Path) -> Path:
    """A copy of the store ``src`` at ``dst``, without the lock file older versions left."""
    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)  # made by older versions; no part of the contents
    return dst
