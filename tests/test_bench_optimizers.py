"""scripts/bench_optimizers.py, run as users run it: end to end, and the table it writes (a
smoke test; the timings themselves are measured by running the script, not by tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/bench_optimizers.py", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_table_has_every_path_and_the_ratios(tmp_path):
    out, page = tmp_path / "speed.csv", tmp_path / "generated" / "speed.md"
    argv = ["--optim", "sgd,rprop", "--shapes", "transformer", "--paths", "loop,foreach"]
    done = bench(
        *argv, "--repeats", "1", "--warmup", "0", "--csv", str(out), "--markdown", str(page)
    )
    assert done.returncode == 0, done.stderr
    assert "loop/loop" in done.stdout
    table = pd.read_csv(out)
    assert list(table["optim"]) == ["sgd", "rprop"]
    for column in ("ours_loop_ms", "ours_foreach_ms", "torch_loop_ms", "limit GB/s", "loop/loop"):
        assert (table[column] > 0).all(), column
    text = page.read_text()
    assert "Generated " in text and "torch " + torch.__version__ in text and "at commit" in text
    assert "| device | shapes | optim |" in text and "| cpu | transformer | rprop |" in text


def test_bad_arguments_exit_2():
    done = bench("--optim", "adamm")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "unknown optimizer" in last and "adamm" in last and "choose from sgd" in last
