"""bench.schedule_figures writes its three figures; scripts/plot_schedules.py puts them into
--out, and a bad folder is exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from bench import schedule_figures

ROOT = Path(__file__).resolve().parents[1]
FIGURES = (
    "schedule_exponential_decay.png",
    "schedule_piecewise_constant.png",
    "schedule_registry.png",
)


def _script(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/plot_schedules.py", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_figures_are_written_to_out(tmp_path):
    """The script over bench.schedule_figures.write_all: the three figures, one line each."""
    out = tmp_path / "figs"
    done = _script("--out", str(out))
    assert done.returncode == 0
    assert done.stdout.splitlines() == [str(out / name) for name in FIGURES]
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES)
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 800 and image.height > 400


def test_traces_are_the_lr_each_optimizer_step_uses():
    import schedulers

    lrs = schedule_figures.trace(
        lambda o: schedulers.ExponentialDecay(o, 100, 0.96, True), 0.1, 201
    )
    assert (lrs[0], lrs[99], lrs[100], lrs[200]) == (0.1, 0.1, 0.1 * 0.96, 0.1 * 0.96**2)


def test_an_unusable_out_folder_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = _script("--out", str(blocker / "figs"))
    assert done.returncode == 2
    err = done.stderr
    assert err.startswith("plot_schedules: cannot create") and err.count("\n") == 1
