"""scripts/bench_optimizers.py: runs end to end and writes the table it prints (a smoke test;
the timings themselves are measured by running the script, not by tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_optimizers.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_optimizers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_has_every_path_and_the_ratio(tmp_path, capsys):
    out = tmp_path / "speed.csv"
    argv = ["--optim", "sgd,rprop", "--shapes", "transformer", "--paths", "loop,fused"]
    assert load().main([*argv, "--repeats", "1", "--warmup", "0", "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["optim"]) == ["sgd", "rprop"]
    for column in ("ours_loop_ms", "ours_fused_ms", "torch_loop_ms", "limit_GB/s", "ours/torch"):
        assert (table[column] > 0).all(), column
    assert table.loc[0, "torch_fused_ms"] > 0  # torch has a fused SGD, no fused Rprop
    assert pd.isna(table.loc[1, "torch_fused_ms"])
    assert "ours/torch" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load().main(["--optim", "adamm"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown optimizer" in err and "adamm" in err and "choose from sgd" in err
