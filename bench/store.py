"""The result store, and the only code that writes files.

    DIR/runs/<run_id>.json   one record per finished run (the source of truth), written atomically
    DIR/summary.csv          one row per run, rebuilt from the records
    DIR/curves.csv           one row per logged step per run (long format)
    DIR/.lock                held (flock) by the bench.run that is using the store
    DIR/lr_search/, DIR/lr_search.csv   the probes of `--lr search` (a store of their own) and
                                        their table, one row per probe
    DIR/tuning/, DIR/tuning.csv         the grid runs of `--lr grid` and their table

Every write goes to a temporary file in the same folder and is moved into place with os.replace,
so a reader, a crash or kill -9 sees either the old file or the new one. A record is written only
when its run has finished; the CSV files are rebuilt from the records when a store is opened, so
anything a crash left behind heals on the next command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench import tuning

SUMMARY_COLUMNS = [
    "run_id", "task", "optim", "sched", "seed", "lr0", "steps", "status",
    "final_train_loss", "final_test_loss", "final_test_acc", "best_test_acc",
    "diverged_at_step", "wall_s", "steps_per_s", "device",
    # beyond the agreed minimum:
    "batch_size", "warmup", "opt_args", "sched_args", "threads", "steps_done", "error",
    # issue 6: how lr0 was chosen, and time to target
    "lr_tuned", "lr_source", "target_metric", "target", "steps_to_target", "time_to_target",
]  # fmt: skip
LR_SOURCES = ("default", "class_default", "shared", "search", "grid")
CURVE_COLUMNS = [
    "run_id", "task", "optim", "sched", "seed", "step", "lr", "train_loss", "test_loss",
    "test_acc", "elapsed_s", "x", "y",
    "lr0",
]  # fmt: skip
SORT_KEYS = ["task", "optim", "sched", "lr0", "seed", "run_id"]
DONE = ("ok", "diverged")  # a failed run is retried by the next command


class StoreError(RuntimeError):
    """The store cannot be used (not writable, or in use by another bench.run)."""


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def lr_source(record: dict[str, Any]) -> str:
    """How the run's lr was chosen (recorded by bench.run; older records: default or shared)."""
    choice = record.get("lr_choice") or {}
    if choice.get("source") in LR_SOURCES:
        return choice["source"]
    from bench import tasks as T

    c = record["config"]
    task = T.TASKS.get(c["task"])
    return "default" if task is not None and task.lr.get(c["optim"]) == c["lr"] else "shared"


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    c, s = record["config"], record.get("summary") or {}
    source = lr_source(record)
    target = record.get("target") or tuning.default_target(c["task"]) or {}
    steps_to, time_to = (None, None)
    if target:
        steps_to, time_to = tuning.time_to_target(
            record.get("curves") or {}, target["metric"], target["value"]
        )
    return {
        "run_id": record["run_id"],
        "task": c["task"],
        "optim": c["optim"],
        "sched": c["sched"],
        "seed": c["seed"],
        "lr0": c["lr"],
        "steps": c["steps"],
        "status": record["status"],
        "final_train_loss": s.get("final_train_loss"),
        "final_test_loss": s.get("final_test_loss"),
        "final_test_acc": s.get("final_test_acc"),
        "best_test_acc": s.get("best_test_acc"),
        "diverged_at_step": record.get("diverged_at_step"),
        "wall_s": s.get("wall_s"),
        "steps_per_s": s.get("steps_per_s"),
        "device": record.get("device"),
        "batch_size": c.get("batch_size"),
        "warmup": c.get("warmup"),
        "opt_args": json.dumps(c.get("opt_args") or {}, sort_keys=True),
        "sched_args": json.dumps(c.get("sched_args") or {}, sort_keys=True),
        "threads": record.get("threads"),
        "steps_done": s.get("steps_done"),
        "error": record.get("error"),
        "lr_tuned": c["lr"] if source in ("search", "grid") else None,
        "lr_source": source,
        "target_metric": target.get("metric"),
        "target": target.get("value"),
        "steps_to_target": steps_to,
        "time_to_target": time_to,
    }


def curve_frame(record: dict[str, Any]) -> pd.DataFrame:
    c = record["config"]
    df = pd.DataFrame(record.get("curves") or {}, columns=CURVE_COLUMNS[5:13])
    for col, val in [
        ("run_id", record["run_id"]),
        ("task", c["task"]),
        ("optim", c["optim"]),
        ("sched", c["sched"]),
        ("seed", c["seed"]),
        ("lr0", c["lr"]),
    ]:
        df[col] = val
    df["step"] = df["step"].astype("int64")
    return df[CURVE_COLUMNS]


class Store:
    """A results folder: load the records, add finished ones, keep the CSV files in step."""

    def __init__(self, root: str | os.PathLike, index: tuple[Path, Any] | None = None) -> None:
        """``index``: (path, records -> DataFrame), one more table rebuilt with the CSV files
        (a sub-store's lr_search.csv / tuning.csv in its parent folder)."""
        self.index = index
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.records: dict[str, dict[str, Any]] = {}
        self._curves: dict[str, pd.DataFrame] = {}
        self._lock_file = None
        self._last_write_s = 0.0
        self._next_write_at = 0.0
        self.dirty = False

    # -- opening ------------------------------------------------------------------------------

    def open(self) -> Store:
        """Create/check the folder, take the lock, load every record, rebuild the CSV files."""
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 (held until close)
        except OSError as e:
            raise StoreError(f"cannot write to --out {self.root}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise StoreError(
                f"store {self.root} is in use by another bench.run; wait or use another --out"
            ) from None
        self._remove_stale_tmp()
        self._load()
        self.write_tables(force=True)
        return self

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc) -> None:
        try:
            if self.dirty:
                self.write_tables(force=True)
        finally:
            self.close()

    def _remove_stale_tmp(self) -> None:
        for folder in (self.root, self.runs_dir):
            for p in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _load(self) -> None:
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                run_id = record["run_id"]
                record["config"]["task"]  # a record without a config is not ours
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"bench.run: warning: ignoring unreadable {path}: {e}", file=sys.stderr)
                continue
            self.records[run_id] = record

    # -- queries ------------------------------------------------------------------------------

    def is_done(self, run_id: str) -> bool:
        r = self.records.get(run_id)
        return r is not None and r.get("status") in DONE

    def sub(self, kind: str) -> Store:
        """The probe store (``lr_search``) or grid store (``tuning``) inside this one, opened (under
        this store's lock); its table DIR/<kind>.csv is rebuilt with its CSV files."""
        table = {"lr_search": tuning.probe_table, "tuning": tuning.tuning_table}[kind]
        return Store(self.root / kind, index=(self.root / f"{kind}.csv", table)).open()

    # -- writing ------------------------------------------------------------------------------

    def annotate(self, run_id: str, fields: dict[str, Any]) -> None:
        """Set fields that describe but do not define a finished run (lr_choice, target);
        rewrites the record only when something changed."""
        record = self.records[run_id]
        if all(record.get(k) == v for k, v in fields.items()):
            return
        self.add({**record, **fields})

    def add(self, record: dict[str, Any]) -> None:
        """Write the run's record, then the tables (throttled only for very large stores)."""
        run_id = record["run_id"]
        data = json.dumps(record, indent=1, allow_nan=False).encode()
        atomic_write_bytes(self.runs_dir / f"{run_id}.json", data)
        self.records[run_id] = record
        self._curves.pop(run_id, None)
        self.dirty = True
        self.write_tables()

    def summary_frame(self) -> pd.DataFrame:
        rows = [summary_row(r) for r in self.records.values()]
        df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
        for col in ("diverged_at_step", "steps_done", "batch_size", "steps_to_target"):
            df[col] = df[col].astype("Int64")
        return df.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)

    def curves_frame(self) -> pd.DataFrame:
        for run_id, r in self.records.items():
            if run_id not in self._curves:
                self._curves[run_id] = curve_frame(r)
        frames = [self._curves[k] for k in self.records]
        if not frames:
            return pd.DataFrame(columns=CURVE_COLUMNS)
        df = pd.concat(frames, ignore_index=True)
        return df.sort_values([*SORT_KEYS, "step"], kind="stable").reset_index(drop=True)

    def write_tables(self, force: bool = False) -> None:
        """Rewrite summary.csv and curves.csv atomically.

        Rewriting costs time proportional to the store; when one rewrite takes over 0.2 s the next
        waits until ten times that has passed (so it stays under ~10% of the sweep), and the final
        rewrite when the command ends is always done.
        """
        now = time.perf_counter()
        if not force and now < self._next_write_at:
            return
        atomic_write_bytes(
            self.root / "summary.csv",
            self.summary_frame().to_csv(index=False).encode(),
            fsync=False,
        )
        atomic_write_bytes(
            self.root / "curves.csv", self.curves_frame().to_csv(index=False).encode(), fsync=False
        )
        if self.index is not None:
            path, table = self.index
            data = table(self.records.values()).to_csv(index=False).encode()
            atomic_write_bytes(path, data, fsync=False)
        took = time.perf_counter() - now
        self._next_write_at = now + 10 * took if took > 0.2 else 0.0
        self.dirty = False
