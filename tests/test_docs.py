"""The documentation: every relative link resolves, and the MkDocs site builds with --strict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code holds no links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [
        t for t in relative_links(page) if not (page.parent / t.split("#")[0]).resolve().exists()
    ]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) ![gone](figures/none.png) [web](https://x.org) `[x](y)`\n")
    assert relative_links(page) == ["page.md", "figures/none.png"]


@pytest.mark.skipif(
    shutil.which("mkdocs") is None, reason="mkdocs not installed: pip install -e '.[docs]'"
)
def test_docs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").exists()


# Every command of the README's quick start and of the getting-started page runs, as shown, with
# flags appended that make it tiny (5 steps on a 2-D surface); the `pip install ... &&` part is
# CI's job, and the test command itself is what CI runs.
TINY = {"bench.run": ["--task", "saddle", "--steps", "5", "--quiet"]}
SHOWN_ON = [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]


def shown_commands(page: Path) -> list[str]:
    """The ``python -m ...`` commands of the page's bash blocks, without install prefixes and
    comments; the README's only from its quick start."""
    text = page.read_text()
    if page.name == "README.md":
        text = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r"^pip install [^&]*&&\s*", "", line)
            if line.startswith("python -m ") and line != "python -m pytest":
                commands.append(line)
    return commands


def test_shown_commands_are_found() -> None:
    readme = shown_commands(ROOT / "README.md")
    assert readme == ["python -m bench.run --optim adam --sched staircase"]
    assert len(shown_commands(ROOT / "docs" / "getting-started.md")) >= 3


@pytest.mark.parametrize("page", SHOWN_ON, ids=lambda p: p.name)
def test_shown_commands_run(page: Path, tmp_path: Path) -> None:
    # in order, in an empty folder: the default store results/runs is the test's own, and a
    # command that reads it (bench.plot) sees what the commands before it wrote
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "1", "MPLBACKEND": "Agg"}
    for command in shown_commands(page):
        argv = command.split()
        argv = [sys.executable, *argv[1:], *TINY.get(argv[2], [])]
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
