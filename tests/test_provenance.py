"""bench.provenance: the stamp on generated files names the real commit, machine and versions."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bench import provenance as P


def git(root: Path, *args: str) -> str:
    command = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with one committed file under code/ and one under docs/."""
    for name in ("code/a.py", "docs/b.md"):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_text("x\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_commit_is_this_checkouts_head() -> None:
    head = git(P.REPO, "rev-parse", "--short", "HEAD")
    assert P.git_commit() in (head, head + P.DIRTY)


def test_a_clean_checkout_is_not_flagged(checkout: Path) -> None:
    (checkout / "untracked.py").write_text("y\n")  # untracked files do not count
    assert P.git_commit(checkout) == git(checkout, "rev-parse", "--short", "HEAD")


def test_uncommitted_changes_are_flagged(checkout: Path) -> None:
    (checkout / "code" / "a.py").write_text("changed\n")
    head = git(checkout, "rev-parse", "--short", "HEAD")
    assert P.git_commit(checkout) == head + " (with uncommitted changes)"
    assert P.git_commit(checkout, dirty="-dirty") == head + "-dirty"


def test_paths_limit_what_counts_as_changed(checkout: Path) -> None:
    (checkout / "docs" / "b.md").write_text("regenerated\n")
    head12 = git(checkout, "rev-parse", "--short=12", "HEAD")
    assert P.git_commit(checkout, length=12, paths=["code"]) == head12
    assert P.git_commit(checkout, length=12, paths=["docs"]) == head12 + P.DIRTY


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert P.git_commit(tmp_path) == "unknown"


def test_machine_names_the_cpu_and_its_cores() -> None:
    assert P.cpu()
    assert P.machine() == f"{P.cpu()}, {os.cpu_count()} CPUs"


def test_versions_python_first_then_each_package() -> None:
    found = P.versions("torch", "no_such_package_here")
    assert found == {
        "python": platform.python_version(),
        "torch": torch.__version__,  # the module's own, with its CUDA build
        "no_such_package_here": "not installed",
    }
    assert P.format_versions(found) == (
        f"torch {torch.__version__}, no_such_package_here not installed, "
        f"Python {platform.python_version()}"
    )


def test_load_average_three_numbers_or_unknown(monkeypatch) -> None:
    assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d / \d+\.\d\d", P.load_average())
    monkeypatch.delattr(os, "getloadavg")
    assert P.load_average() == "unknown"


def test_stamp_fields_in_order() -> None:
    days = {time.strftime("%Y-%m-%d", time.gmtime())}
    text = P.stamp("1 thread", "GPU X")
    days.add(time.strftime("%Y-%m-%d", time.gmtime()))  # a stamp made across midnight
    when, rest = text.split(" UTC, ", 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", when) and when[:10] in days
    assert rest == (
        f"commit {P.git_commit()}, {P.machine()}, 1 thread, GPU X, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    given = P.stamp(packages=(), commit="abc1234")
    assert given.endswith(f", commit abc1234, {P.machine()}, Python {platform.python_version()}")
