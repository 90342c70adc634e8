"""python -m bench.run --vectorize auto|off: same run ids, curves within the batched tolerances,
and the same bits whatever --jobs."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import batched as B
from bench.train import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def sweep(out: Path, *flags: str) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench.run", "--task", "rosenbrock,rastrigin", "--optim",
           "sgd,adam,rprop", "--seed", "0,1,2", "--sched", "constant,exponential", "--steps",
           "200", "--out", str(out), "--quiet", *flags]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return {Path(f).stem: json.load(open(f)) for f in glob.glob(f"{out}/runs/*.json")}


def curves(record: dict) -> dict:
    return {k: v for k, v in record["curves"].items() if k != "elapsed_s"}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweeps")
    return (
        sweep(tmp / "off", "--vectorize", "off"),
        sweep(tmp / "auto"),
        sweep(tmp / "auto2", "--jobs", "2"),
    )


def test_vectorized_sweep_has_the_same_runs_and_curves(sweeps):
    off, auto, _ = sweeps
    assert sorted(off) == sorted(auto) and len(off) == 36
    assert all("batch" not in r for r in off.values())
    assert all(r["batch"]["size"] == 6 and "fallback" not in r["batch"] for r in auto.values())
    for run_id, r in off.items():
        a = auto[run_id]
        assert r["status"] == a["status"]
        for key, values in curves(r).items():
            for x, y in zip(values, a["curves"][key], strict=True):
                assert (x is None) == (y is None)
                if x is not None and x != y:
                    assert abs(x - y) <= 1e-12 * abs(x), (run_id, key)


def test_jobs_do_not_change_the_numbers(sweeps):
    _, auto, auto2 = sweeps
    assert sorted(auto) == sorted(auto2)
    for run_id in auto:
        assert curves(auto[run_id]) == curves(auto2[run_id])


def config(**kw) -> RunConfig:
    base = dict(task="rosenbrock", optim="sgd", sched="constant", seed=0, steps=10,
                batch_size=None, lr=1e-3, eval_every=10)  # fmt: skip
    return RunConfig(**{**base, **kw})


def test_make_jobs_groups_by_shared_fields_and_caps_the_batch():
    configs = [config(seed=s) for s in range(5)] + [config(optim="adam", seed=0)]
    configs += [config(optim="my_module:MyOpt", seed=s) for s in range(2)]

    def sizes(jobs):
        return [len(j.configs) if isinstance(j, B.Batch) else 1 for j in jobs]

    jobs = B.make_jobs(configs, "auto", max_batch=2)
    assert sizes(jobs) == [1, 2, 2, 1, 1, 1]  # 5 runs, at most 2 each: 3 batches, as even as can be
    seeds = [c.seed for j in jobs[:3] for c in (j.configs if isinstance(j, B.Batch) else [j])]
    assert seeds == [0, 1, 2, 3, 4]  # in sweep order
    assert B.make_jobs(configs, "off") == configs
    assert len(B.make_jobs(configs, "auto")[0].configs) == 5  # surfaces: up to 256
    many = [config(seed=s) for s in range(12)]
    assert sizes(B.make_jobs(many, "auto", max_batch=8)) == [6, 6]
    assert sizes(B.make_jobs(many, "auto", max_batch=12)) == [12]


def test_grid_points_train_as_one_batch_and_equal_separate_runs(tmp_path):
    def grid(out: Path, *flags: str) -> dict[str, dict]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "bench.run", "--task", "beale", "--optim", "adam",
               "--steps", "100", "--lr", "grid", "--lr-grid", "1e-3:1e-1:5", "--out", str(out),
               "--quiet", *flags]  # fmt: skip
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        return {Path(f).stem: json.load(open(f)) for f in glob.glob(f"{out}/tuning/runs/*.json")}

    auto, off = grid(tmp_path / "auto"), grid(tmp_path / "off", "--vectorize", "off")
    assert sorted(auto) == sorted(off) and len(auto) == 5
    assert all(r["batch"]["size"] == 5 for r in auto.values())
    for run_id, r in off.items():
        for key, values in curves(r).items():
            for x, y in zip(values, auto[run_id]["curves"][key], strict=True):
                assert x == y or abs(x - y) <= 1e-12 * abs(x), (run_id, key)


def test_a_batch_rewrites_the_tables_once_and_reports_runs_that_are_in_them(
    tmp_path, monkeypatch, capsys
):
    from bench import store as S
    from bench.run import main

    writes: list[int] = []
    original = S.Store._write

    def counted(self, path, data, fsync):
        original(self, path, data, fsync)
        if path.name == "summary.csv" and self.root == out:
            writes.append(len(self.records))
            assert len(pd.read_csv(out / "summary.csv")) == len(self.records)

    out = tmp_path / "s"
    monkeypatch.setattr(S.Store, "_write", counted)
    argv = ["--task", "rosenbrock", "--optim", "sgd", "--seed", "0,1,2,3,4,5", "--steps", "20",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert writes == [6]  # once after the batch; the final rewrite has nothing new to write
    assert main([*argv, "--seed", "0,1,2,3,4,5,6"]) == 0
    assert writes == [6, 7]
    assert capsys.readouterr().out.count("[") >= 6


def test_bench_runner_vectorize_mode_is_bench_batched_commands():
    """``bench_runner.py --vectorize`` hands its options to bench_batched's command timing: a
    bad one is refused there, before anything is timed."""
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_runner.py"), "--vectorize",
           "--repeats", "0"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert "--repeats must be >= 1, got 0" in done.stderr
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_runner.py"), "--no-such-flag"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "unrecognized arguments: --no-such-flag" in done.stderr
