"""The store never loses what it cannot rebuild: stores of CSV files only and rows without records
are refused untouched, a command that exits 2 changes no byte, malformed records are set aside and
redone, an --out too long for its files fails before any run, and a full disk stops the command
with one line and every reported run kept (bench.run end to end, and the Store API)."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _cli import copy_store, one_error_line, run_bench, snapshot

from bench import store as S
from bench.run import main

SWEEP = ["--task", "saddle,long_valley", "--optim", "adam,sgd", "--steps", "20", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir) -> Path:
    """A store of four finished runs made by SWEEP."""
    out = tmp_path_factory.mktemp("finished") / "s"
    assert main([*SWEEP, "--out", str(out), "--data-dir", data_dir]) == 0
    return out


# ---------------------------------------------------------------------------- unrebuildable rows


@pytest.mark.parametrize(
    "command",
    [SWEEP, ["--task", "mnist_mlp", "--steps", "5"]],  # the same sweep; one that exits 2 later
    ids=["same-sweep", "missing-dataset"],
)
def test_a_store_of_csv_files_only_is_refused_and_left_as_it_was(
    tmp_path, finished, data_dir, capsys, command
):
    out = tmp_path / "colleague"
    out.mkdir()
    for name in ("summary.csv", "curves.csv"):
        shutil.copy(finished / name, out / name)
    before = snapshot(out)
    code = main([*command, "--out", str(out), "--data-dir", data_dir])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "summary.csv has rows of 4 run(s) without a record" in line and "runs" in line
    assert snapshot(out) == before


def test_rows_without_their_record_are_refused(tmp_path, finished, data_dir, capsys):
    out = copy_store(finished, tmp_path / "s")
    lost = sorted((out / "runs").glob("*.json"))[0]
    lost.unlink()
    before = snapshot(out)
    assert main([*SWEEP, "--out", str(out), "--data-dir", data_dir]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"rows of 1 run(s) without a record in {out / 'runs'} (e.g. {lost.stem})" in line
    assert snapshot(out) == before


def test_a_tuning_table_without_its_runs_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    grid = ["--task", "saddle", "--steps", "5", "--lr", "grid", "--lr-grid", "0.01:0.1:2"]
    assert main([*grid, "--out", str(out), "--quiet", "--data-dir", data_dir]) == 0
    shutil.rmtree(out / "tuning")  # as scripts/reference.py leaves a store: tuning.csv only
    before = snapshot(out)
    assert main([*grid, "--out", str(out), "--quiet", "--data-dir", data_dir]) == 2
    assert "tuning.csv has rows of 2 run(s) without a record" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_command_that_exits_2_changes_no_byte_of_the_store(tmp_path, finished, data_dir, capsys):
    out = copy_store(finished, tmp_path / "s")
    stale = pd.read_csv(out / "summary.csv").iloc[:-1]  # as a crash before the tables leaves it
    stale.to_csv(out / "summary.csv", index=False)
    before = snapshot(out)
    code = main(["--task", "mnist_mlp", "--steps", "5", "--out", str(out), "--data-dir", data_dir])
    assert code == 2 and "MNIST not found" in one_error_line(capsys.readouterr().err)
    assert snapshot(out) == before
    # the next command that writes heals the table
    assert main([*SWEEP, "--out", str(out), "--data-dir", data_dir]) == 0
    assert len(pd.read_csv(out / "summary.csv")) == 4


def _older_than_records(out: Path) -> None:
    newest = max(f.stat().st_mtime_ns for f in (out / "runs").glob("*.json"))
    os.utime(out / "curves.csv", ns=(newest - 10**9, newest - 10**9))


def _old_columns(out: Path) -> None:
    text = (out / "curves.csv").read_text()
    (out / "curves.csv").write_text(text.replace("elapsed_s", "seconds", 1))


def _rows_of_one_run_missing(out: Path) -> None:
    df = pd.read_csv(out / "curves.csv")
    df[df["run_id"] != df["run_id"].iloc[0]].to_csv(out / "curves.csv", index=False)


@pytest.mark.parametrize(
    "make_stale", [None, _older_than_records, _old_columns, _rows_of_one_run_missing],
    ids=["current", "older-than-a-record", "old-columns", "rows-of-a-run-missing"],
)  # fmt: skip
def test_a_rerun_that_adds_nothing_rewrites_curves_csv_only_when_stale(
    tmp_path, finished, data_dir, make_stale
):
    """curves.csv, the large table, is left alone by a command that adds no record when it is
    newer than every record and holds the rows of exactly the records with curves, in the
    current columns; otherwise it is rebuilt. summary.csv is always rebuilt (it is small)."""
    out = copy_store(finished, tmp_path / "s")
    if make_stale is not None:
        make_stale(out)
    before = (out / "curves.csv").stat()
    assert main([*SWEEP, "--out", str(out), "--data-dir", data_dir]) == 0
    after = (out / "curves.csv").stat()
    rewritten = (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)
    assert rewritten == (make_stale is not None)
    with S.Store(out) as store:  # (its exit finds nothing to rewrite either)
        expected = store.curves_frame().to_csv(index=False)
    assert (out / "curves.csv").read_text() == expected
    assert (out / "curves.csv").stat().st_ino == after.st_ino


def _records(root: Path) -> list[dict]:
    store = S.Store(root).open()
    store.close()  # (the lock: a later open in this process must not find it taken)
    return list(store.records.values())


def _record(run_id: str, task: str, seed: int, lr: float, curves: dict) -> dict:
    config = {"task": task, "optim": "sgd", "sched": "constant", "seed": seed, "lr": lr}
    return {"run_id": run_id, "config": config, "curves": curves}


EDGE_RECORDS = [
    _record("b", 'my,task "q"', 1, 0.1, {  # a field CSV must quote; steps out of order
        "step": [0, 2, 1], "lr": [0.1, 0.1, 0.2], "train_loss": [1.5, float("nan"), float("inf")],
        "x": [None, -float("inf"), 1e-300],
    }),
    _record("a", "rosenbrock", 0, 0.05, {
        "step": [0, 1], "lr": [0.05, 1e20], "train_loss": [2.0, 3.25], "test_acc": [None, 0.5],
    }),
    _record("c", "rosenbrock", 0, 0.05, {}),  # no curves: no rows
]  # fmt: skip


@pytest.mark.parametrize("kind", ["sweep", "edge-cases"])
def test_curves_csv_is_what_pandas_writes_for_the_sorted_frame(finished, kind):
    """The store writes curves.csv itself (json formats each column) rather than through
    DataFrame.to_csv: the text must be the same, quoting, sorting, NaN and inf included."""
    records = _records(finished) if kind == "sweep" else EDGE_RECORDS
    store = S.Store(finished / "unused")
    store.records = {r["run_id"]: r for r in records}
    assert S.curves_csv(records) == store.curves_frame().to_csv(index=False)


def test_a_record_is_encoded_as_json_dumps_encodes_it_and_its_columns_reused(finished):
    """Store.add encodes each curve column once (encode_record) and curves.csv reuses the text:
    the record file must be json.dumps' text, and the table the one formatted afresh."""
    records = _records(finished)
    odd = json.loads(json.dumps(records[0]))
    odd.update(run_id="e" * 12, error='a string holding the mark: "\x00curves"')
    bare = {**records[1], "run_id": "d" * 12, "curves": {}}
    encoded = {}
    for record in [*records, odd, bare]:
        text, columns = S.encode_record(record)
        assert text == json.dumps(record, allow_nan=False)
        assert columns == {k: json.dumps(v) for k, v in (record["curves"] or {}).items()}
        encoded[record["run_id"]] = columns
    assert S.curves_csv([*records, odd], encoded) == S.curves_csv([*records, odd])


def test_summary_csv_is_what_pandas_writes_for_the_summary_frame(finished):
    """summary.csv is written by the csv module (no pandas on a sweep's path): the same text as
    the summary frame's to_csv, empty whole-number columns and quoted errors included."""
    records = _records(finished)
    failed = json.loads(json.dumps(records[0]))
    failed.update(run_id="f" * 12, status="failed", error='boom, "twice"\nsecond line')
    failed["config"]["seed"] = 7
    failed["summary"] = {}
    records.append(failed)
    assert S.summary_csv(records) == S.summary_frame(records).to_csv(index=False)


def test_a_fresh_sweep_never_imports_pandas(tmp_path, data_dir):
    """pandas costs a command about a third of a second to import; the sweep path (records,
    summary.csv, curves.csv) does without it."""
    argv = [*SWEEP, "--out", str(tmp_path / "s"), "--data-dir", data_dir]
    code = (
        "import sys, bench.run\n"
        f"assert bench.run.main({argv!r}) == 0\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s" / "curves.csv").exists()


def test_open_reads_only_and_writing_starts_with_check_writable(tmp_path):
    root = tmp_path / "new" / "store"
    store = S.Store(root).open()
    assert not (tmp_path / "new").exists()
    store.write_tables(force=True)  # nothing to write to before writing started
    assert not (tmp_path / "new").exists()
    store.check_writable()
    assert snapshot(tmp_path / "new") == {"store": None, "store/runs": None}
    with pytest.raises(S.StoreError, match="in use by another bench"):
        S.Store(root).open()
    store.close()
    S.Store(root).open().close()


# ---------------------------------------------------------------------------- malformed records


def _drop(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


MALFORMED = {
    "summary-a-string": lambda r: {**r, "summary": "oops"},
    "uneven-curves": lambda r: {**r, "curves": {**r["curves"], "lr": r["curves"]["lr"][:-1]}},
    "config-without-optim": lambda r: {**r, "config": _drop(r["config"], "optim")},
    "config-a-list": lambda r: {**r, "config": [1, 2]},
    "curves-a-list": lambda r: {**r, "curves": [1, 2]},
    "text-in-curves": lambda r: {**r, "curves": {**r["curves"], "step": ["a"] * 6}},
    "fractional-steps": lambda r: {**r, "curves": {**r["curves"], "step": [0.5] * 6}},
    "curves-without-steps": lambda r: {**r, "curves": _drop(r["curves"], "step")},
    "status-unknown": lambda r: {**r, "status": "great"},
    "not-an-object": lambda r: [r],
    "another-run-id": lambda r: {**r, "run_id": "0123456789ab"},
    "truncated": None,
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_record_is_set_aside_and_its_run_redone(tmp_path, data_dir, capsys, kind):
    out = tmp_path / "s"
    argv = ["--task", "saddle", "--steps", "5", "--out", str(out), "--data-dir", data_dir]
    assert main([*argv, "--quiet"]) == 0
    path = next((out / "runs").glob("*.json"))
    text = path.read_text()
    bad = (
        text[: len(text) // 2]
        if kind == "truncated"
        else json.dumps(MALFORMED[kind](json.loads(text)))
    )
    path.write_text(bad)
    capsys.readouterr()

    before = snapshot(out)
    store = S.Store(out).open()  # never crashes, and only reads
    assert store.records == {} and list(store.corrupt) == [path]
    store.close()
    assert snapshot(out) == before

    assert main(argv) == 0
    cap = capsys.readouterr()
    assert f"bench.run: warning: unusable record {path}" in cap.err
    assert "1 run(s)" in cap.out.splitlines()[-1]  # redone
    assert (out / "runs" / "corrupt" / path.name).read_text() == bad
    assert json.loads(path.read_text())["status"] == "ok"
    assert len(pd.read_csv(out / "summary.csv")) == 1
    assert main(argv) == 0 and "warning" not in capsys.readouterr().err  # healed for good


# ---------------------------------------------------------------------------- path length


def deep_folder(base: Path, length: int) -> Path:
    """A path of exactly ``length`` characters under ``base`` (components of at most 200)."""
    path = str(base)
    while length - len(path) > 201:
        path += "/" + "d" * 200
    return Path(path + "/" + "e" * (length - len(path) - 1))


def test_an_out_too_long_for_its_record_files_fails_before_any_run(tmp_path, data_dir, capsys):
    limit = os.pathconf("/", "PC_PATH_MAX")  # 4096 on Linux, the terminating NUL included
    out = deep_folder(tmp_path, limit - 30)  # room for the tables, not for runs/<id>.json.tmp
    code = main(["--task", "saddle", "--steps", "5", "--out", str(out), "--data-dir", data_dir])
    cap = capsys.readouterr()
    assert code == 2 and "[1/1]" not in cap.out
    assert "is too long: the store writes paths such as" in one_error_line(cap.err)
    assert not out.parent.exists()  # the folders made for the probe are gone again

    fits = deep_folder(tmp_path, limit - 120)
    assert main(["--task", "saddle", "--steps", "5", "--out", str(fits), "--quiet"]) == 0
    assert len(list((fits / "runs").glob("*.json"))) == 1


# ---------------------------------------------------------------------------- full disk


def check_reported_runs_kept(out: Path, stdout: str) -> int:
    """Every run reported finished ('[i/N] task optim ...: ok') has its record, and the tables
    (rewritten at most every TABLES_EVERY_S during a sweep) hold whole rows of records only;
    returns how many were reported."""
    reported = [line.split()[1:3] for line in stdout.splitlines() if line.startswith("[")]
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    by_cell = {(r["config"]["task"], r["config"]["optim"]): r["run_id"] for r in records}
    for task, optim in reported:
        assert (task, optim) in by_cell, (task, optim)
    if (out / "summary.csv").exists():
        summary = pd.read_csv(out / "summary.csv")
        curves = pd.read_csv(out / "curves.csv")
        assert set(summary["run_id"]) <= set(by_cell.values())
        assert set(curves["run_id"]) <= set(by_cell.values())
    return len(reported)


FULL_SWEEP = ["--task", "rosenbrock,beale,long_valley", "--optim", "all", "--steps", "300"]


def test_a_full_disk_stops_with_one_line_and_keeps_every_reported_run(
    tmp_path, data_dir, capsys, monkeypatch
):
    """Writes fail with ENOSPC once 120 kB went to the store (open() patched in bench.store)."""
    written = [0]

    class FillingFile:
        def __init__(self, f) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            if written[0] + len(data) > 120_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written[0] += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def filling_open(*args, **kwargs) -> FillingFile:
        return FillingFile(builtins.open(*args, **kwargs))

    monkeypatch.setattr(S, "open", filling_open, raising=False)
    monkeypatch.setenv("CI", "1")  # a line per finished run, no bars
    out = tmp_path / "s"
    code = main([*FULL_SWEEP, "--out", str(out), "--data-dir", data_dir])
    cap = capsys.readouterr()
    line = one_error_line(cap.err)
    assert code == 1
    assert line.startswith("bench.run: error: no space left on device while writing ")
    assert 1 <= check_reported_runs_kept(out, cap.out) < 24
    assert not list(out.rglob("*.tmp"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_tmpfs_from_the_shell(tmp_path, data_dir):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mount / "s"
        p = run_bench(*FULL_SWEEP, "--out", str(out), "--data-dir", data_dir, CI="1")
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr
        assert one_error_line(p.stderr).startswith(
            "bench.run: error: no space left on device while writing "
        )
        assert 1 <= check_reported_runs_kept(out, p.stdout) < 24
    finally:
        subprocess.run(["umount", str(mount)], check=False)
