"""scripts/bench_optimizers.py, run as users run it: end to end, and the table it writes (a
smoke test; the timings themselves are measured by running the script, not by tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/bench_optimizers.py", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_table_has_every_path_and_the_ratio(tmp_path):
    out = tmp_path / "speed.csv"
    argv = ["--optim", "sgd,rprop", "--shapes", "transformer", "--paths", "loop,fused"]
    done = bench(*argv, "--repeats", "1", "--warmup", "0", "--csv", str(out))
    assert done.returncode == 0, done.stderr
    assert "ours/torch" in done.stdout
    table = pd.read_csv(out)
    assert list(table["optim"]) == ["sgd", "rprop"]
    for column in ("ours_loop_ms", "ours_fused_ms", "torch_loop_ms", "limit_GB/s", "ours/torch"):
        assert (table[column] > 0).all(), column
    assert table.loc[0, "torch_fused_ms"] > 0  # torch has a fused SGD, no fused Rprop
    assert pd.isna(table.loc[1, "torch_fused_ms"])


def test_bad_arguments_exit_2():
    done = bench("--optim", "adamm")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "unknown optimizer" in last and "adamm" in last and "choose from sgd" in last
