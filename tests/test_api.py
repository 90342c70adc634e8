"""The Python API: ``bench.sweep`` returns the summary rows of the runs it covered (finished
earlier or now), ``bench.load`` reads a store, ``ValueError`` where the CLI exits 2 (with the
CLI's message); and the examples of docs/your-own.md run as written."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench
from bench import tasks as T
from bench import train
from bench.run import REFERENCE_DIR, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def run_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (store / "runs").glob("*.json")}


def test_sweep_returns_the_rows_of_its_runs_finished_earlier_or_now(tmp_path):
    out = tmp_path / "s"
    common = dict(task="beale", optim=["adam", "sgd"], steps=5, out=out, quiet=True)
    first = bench.sweep(**common, seeds=1)
    assert len(first) == 2 and set(first["status"]) == {"ok"}
    before = run_files(out)
    bench.sweep(task="saddle", steps=5, out=out, quiet=True)  # another run in the same store
    rows = bench.sweep(**common, seeds=2)
    assert len(rows) == 4 and set(first["run_id"]) < set(rows["run_id"])
    assert set(rows["task"]) == {"beale"}  # only the runs this call covered
    after = run_files(out)
    assert len(after) == 5 and all(after[k] == v for k, v in before.items())  # not run again
    summary, curves = bench.load(out)
    assert len(summary) == 5 and set(curves["run_id"]) == set(summary["run_id"])
    expected = summary.set_index("run_id").loc[rows["run_id"], ["optim", "seed", "lr0"]]
    pd.testing.assert_frame_equal(rows.set_index("run_id")[["optim", "seed", "lr0"]], expected)
    assert (
        rows["final_train_loss"].tolist()
        == expected.join(summary.set_index("run_id")["final_train_loss"])[
            "final_train_loss"
        ].tolist()
    )


def test_load_reads_any_store_and_refuses_a_folder_without_one(tmp_path):
    summary, curves = bench.load(REFERENCE_DIR)
    assert summary["run_id"].map(type).eq(str).all()  # ids are text, even all-digit ones
    assert len(summary) == 224 and curves["run_id"].isin(summary["run_id"]).all()
    with pytest.raises(ValueError, match=r"not a results store \(summary\.csv is missing\)"):
        bench.load(tmp_path)


BAD = [
    (dict(optim="adamm"), ["--optim", "adamm"]),
    (dict(steps=0), ["--steps", "0"]),
    (dict(lr="fast"), ["--lr", "fast"]),
    (dict(seeds=[1, -1]), ["--seeds", "1,-1"]),
    (dict(optim="torch.nn.Linear"), ["--optim", "torch.nn.Linear"]),
    (dict(opt_args={"momentum": 0.9}), ["--opt-arg", "momentum=0.9"]),
    (dict(opt_args={"adam": {"lr": 0.1}}), ["--opt-arg", "adam:lr=0.1"]),
    (dict(task="mypkg_nowhere:task"), ["--task", "mypkg_nowhere:task"]),
    (dict(out=REFERENCE_DIR / "mine"), ["--out", str(REFERENCE_DIR / "mine")]),
]


@pytest.mark.parametrize("options, flags", BAD, ids=[" ".join(f) for _, f in BAD])
def test_value_error_with_the_cli_message_where_the_cli_exits_2(
    tmp_path, capsys, data_dir, options, flags
):
    out = tmp_path / "s"
    options = {"task": "saddle", "out": out, **options}
    with pytest.raises(ValueError) as e:
        bench.sweep(**options, data_dir=data_dir)
    argv = ["--task", options["task"], "--out", str(out), *flags, "--data-dir", data_dir]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"bench.run: error: {e.value}\n"
    assert not out.exists() or not list((out / "runs").glob("*.json"))


def test_unknown_argument_names_the_nearest():
    with pytest.raises(ValueError, match="unknown argument 'stepz'; did you mean 'steps'"):
        bench.sweep(stepz=3)


def test_classes_and_task_objects(tmp_path):
    bowl = bench.surface_task("api_bowl", fn=lambda x, y: x**2 + y**2, start=(1.0, 1.0), steps=4)
    try:
        rows = bench.sweep(
            optim=[torch.optim.SGD, "adam"],
            task=bowl,
            opt_args={torch.optim.SGD: {"momentum": 0.5}},
            out=tmp_path / "s",
            quiet=True,
        )
        assert sorted(rows["optim"]) == ["adam", "torch.optim.sgd:SGD"]
        assert set(rows["task"]) == {"api_bowl"} and set(rows["status"]) == {"ok"}
        sgd = rows[rows["optim"] == "torch.optim.sgd:SGD"].iloc[0]
        assert sgd["opt_args"] == '{"momentum": 0.5}' and sgd["lr_source"] == "class_default"
        with pytest.raises(ValueError, match="'api_bowl' is an object of this process"):
            bench.sweep(task=bowl, jobs=2, out=tmp_path / "s", quiet=True)
        with pytest.raises(ValueError, match="built-in task's; give yours another name"):
            bench.sweep(task=bench.surface_task("beale", fn=lambda x, y: x, start=(0, 0), steps=1))
    finally:
        T._RESOLVED.pop("api_bowl", None)


# ---------------------------------------------------------------------------- the docs' examples

DOC = ROOT / "docs" / "your-own.md"
QUICK = ["--steps", "3", "--seeds", "1", "--eval-every", "3", "--quiet"]


def code_blocks(language: str) -> list[str]:
    return [
        c
        for lang, c in re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S)
        if lang == language
    ]


def test_the_docs_examples_run(tmp_path, monkeypatch, data_dir):
    """Every file the page shows is written, every bench.run command is run (shortened) and the
    Python example is executed as it stands."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for block in code_blocks("python") + code_blocks("toml"):
        name = block.splitlines()[0].removeprefix("# ")
        if re.fullmatch(r"\w+\.(py|toml)", name):
            (tmp_path / name).write_text(block)
    assert {"mysgd.py", "mytasks.py", "mytasks2.py", "adamw.toml"} <= {
        p.name for p in tmp_path.iterdir()
    }
    try:
        commands = [line for b in code_blocks("bash") for line in b.splitlines()]
        runs = [shlex.split(c.split("#")[0])[3:] for c in commands if "-m bench.run" in c]
        assert len(runs) == 6
        for argv in runs:
            extra = ["--lr-grid", "1e-3:1e-2:2"] if "--config" in argv else []
            assert main([*argv, *QUICK, *extra, "--data-dir", data_dir]) == 0, argv
        (api,) = [b for b in code_blocks("python") if b.startswith("import bench")]
        exec(compile(api, str(DOC), "exec"), {})
        summary, _ = bench.load("results/bowl")
        assert len(summary) == 3 * 2 * 2 and set(summary["status"]) == {"ok"}
        assert set(summary["optim"]) == {"adam", "torch.optim.AdamW", "mysgd:SignSGD"}
    finally:
        for name in [m for m in sys.modules if m in ("mysgd", "mytasks", "mytasks2")]:
            del sys.modules[name]
        for spec in [s for s in T._RESOLVED if s.startswith(("mytasks", "bowl"))]:
            del T._RESOLVED[spec]
        train.optimizer_spec.cache_clear()
