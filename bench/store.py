"""The result store, and the only code that writes files.

    DIR/runs/<run_id>.json   one record per finished run (the source of truth), written atomically
    DIR/runs/corrupt/        records that could not be used, set aside (their runs are redone)
    DIR/summary.csv          one row per run, rebuilt from the records
    DIR/curves.csv           one row per logged step per run (long format)
    DIR/lr_search/, DIR/lr_search.csv   the probes of `--lr search` (a store of their own) and
                                        their table, one row per probe
    DIR/tuning/, DIR/tuning.csv         the grid runs of `--lr grid` and their table

Opening a store only reads: it loads the records, checks that every row of the tables belongs to
one of them, and locks the folder (flock on the folder itself, so no file appears). A store whose
tables hold rows without a record (CSV files sent on their own, records deleted) is refused with
StoreError, because rebuilding its tables would drop those rows. Writing starts with
``check_writable`` (or the first ``add``): it creates the folders, proves that the longest path the
store writes can be created, and moves unusable records to ``runs/corrupt/``. So a command that
stops before its first run leaves the store byte for byte as it was.

Every write goes to a temporary file in the same folder and is moved into place with os.replace,
so a reader, a crash or kill -9 sees either the old file or the new one. A record is written only
when its run has finished; the tables are rebuilt from the records after each record and when the
command ends, so anything a crash left behind heals on the next command. A failed write (a full
disk) raises StoreWriteError naming the file; what was written before it stays whole.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import tuning

if TYPE_CHECKING:
    import pandas as pd

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
    """The store cannot be used: not writable, in use by another bench.run, or holding rows that
    its records cannot rebuild. Raised before anything of the store changed."""


class StoreWriteError(StoreError):
    """A write failed while the store was in use (no space left, I/O error); the files written
    before it are whole."""


# Each sub-store (a folder of its own) and the table it keeps in its parent folder.
SUBSTORES = {"lr_search": tuning.probe_table, "tuning": tuning.tuning_table}
STATUSES = ("ok", "diverged", "failed")
CORRUPT = "corrupt"  # runs/corrupt/: the records set aside
TABLES_EVERY_S = 5.0  # during a sweep, the tables are rewritten at most this often
_RUN_ID = "0" * 12  # as long as a run id (bench.train: 12 hex digits)
_CONFIG_TYPES: dict[str, Any] = {
    "task": str, "optim": str, "sched": str, "seed": int, "steps": int, "lr": (int, float),
}  # fmt: skip


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    tmp = _tmp_path(path)
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


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_error(path: Path, e: OSError) -> StoreWriteError:
    if e.errno == errno.ENOSPC:
        return StoreWriteError(f"no space left on device while writing {path}")
    if e.errno == errno.EDQUOT:
        return StoreWriteError(f"disk quota exceeded while writing {path}")
    return StoreWriteError(f"cannot write {path}: {e.strerror or e}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_problem(record: Any, run_id: str) -> str | None:
    """Why a parsed record file named ``<run_id>.json`` cannot be used (None: it can)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("run_id") != run_id:
        return f"its run_id {record.get('run_id')!r} is not its file name"
    config = record.get("config")
    if not isinstance(config, dict):
        return "no config"
    for key, kind in _CONFIG_TYPES.items():
        value = config.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"config {key} is {value!r}"
    if record.get("status") not in STATUSES:
        return f"status {record.get('status')!r}"
    summary, curves = record.get("summary"), record.get("curves")
    if not isinstance(summary or {}, dict) or not isinstance(curves or {}, dict):
        return "summary or curves is not a JSON object"
    if any(v is not None and not _is_number(v) for v in (summary or {}).values()):
        return "summary holds a value that is not a number"
    columns = list((curves or {}).values())
    if not all(isinstance(c, list) for c in columns) or len({len(c) for c in columns}) > 1:
        return "curves of uneven length"
    if any(v is not None and not _is_number(v) for c in columns for v in c):
        return "curves hold a value that is not a number"
    steps = (curves or {}).get("step")
    if columns and columns[0] and not (steps and all(isinstance(v, int) for v in steps)):
        return "curves without whole-number steps"
    return None


def table_run_ids(path: Path) -> set[str]:
    """The run ids of a table's rows (none when the file does not exist); StoreError when it
    cannot be read as a table with a run_id column."""
    if not path.exists():
        return set()
    import pandas as pd  # (only a store with tables needs it: a fresh sweep's path has no pandas)

    try:
        ids = pd.read_csv(path, usecols=["run_id"], dtype=str)["run_id"]
    except FileNotFoundError:
        return set()
    except pd.errors.EmptyDataError:
        return set()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(
            f"cannot read {path}: {reason}; move it away or use another --out"
        ) from None
    except ValueError:  # usecols: no run_id column
        raise StoreError(
            f"{path} is not a bench.run table (no run_id column); move it away or use another --out"
        ) from None
    return set(ids.dropna())


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


def curves_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The long table of the records' curves: one row per logged step per run, in
    ``CURVE_COLUMNS``, unsorted. Built column by column over all records at once (one DataFrame,
    not one per record: the per-frame cost of pandas is most of the time for short curves)."""
    import pandas as pd

    columns: dict[str, list] = {k: [] for k in CURVE_COLUMNS}
    for record in records:
        curves = record.get("curves") or {}
        n = len(curves.get("step", ()))
        for key in CURVE_COLUMNS[5:13]:
            columns[key].extend(curves.get(key) or [None] * n)
        for key, value in _run_fields(record).items():
            columns[key].extend([value] * n)
    df = pd.DataFrame(columns, columns=CURVE_COLUMNS)
    df["step"] = df["step"].astype("int64")
    return df


def summary_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The summary table of ``records``: one row per run in ``SUMMARY_COLUMNS``, sorted by
    ``SORT_KEYS``, the whole-number columns that may be empty as pandas' Int64."""
    import pandas as pd

    df = pd.DataFrame([summary_row(r) for r in records], columns=SUMMARY_COLUMNS)
    for col in ("diverged_at_step", "steps_done", "batch_size", "steps_to_target"):
        df[col] = df[col].astype("Int64")
    return df.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)


def summary_csv(records: Iterable[dict[str, Any]]) -> str:
    """summary.csv's text: ``summary_frame(records).to_csv(index=False)``, written by the csv
    module (a number as its record holds it), so that a sweep's path never imports pandas."""
    rows = sorted((summary_row(r) for r in records), key=lambda row: [row[k] for k in SORT_KEYS])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerows([row[k] for k in SUMMARY_COLUMNS] for row in rows)
    return buffer.getvalue()


def _run_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The columns that name a record's run in both tables (every SORT_KEYS column among them)."""
    c = record["config"]
    return {"run_id": record["run_id"], "task": c["task"], "optim": c["optim"],
            "sched": c["sched"], "seed": c["seed"], "lr0": c["lr"]}  # fmt: skip


def _sort_key(record: dict[str, Any]) -> list:
    fields = _run_fields(record)
    return [fields[k] for k in SORT_KEYS]


def _csv_fields(values: list[Any]) -> str:
    """A few fields joined as one CSV row (strings quoted where CSV needs it)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def _number_fields(values: list[Any] | None, n: int, text: str | None = None) -> list[str]:
    """A curve column's n fields: numbers as ``repr`` writes them (json's C encoder, one call
    for the column, or ``text``: the column's JSON already encoded), None and NaN as empty
    fields, infinities as ``inf`` (pandas' spelling)."""
    if values is None:
        return [""] * n
    try:
        text = text or json.dumps(values, allow_nan=False)
    except ValueError:  # a non-finite number (a record written by hand)
        return ["" if v is None or v != v else str(float(v)) if math.isinf(v) else repr(v)
                for v in values]  # fmt: skip
    return text.replace("null", "")[1:-1].split(", ")


def curves_csv(
    records: Iterable[dict[str, Any]], encoded: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """curves.csv's text: ``curves_frame(records)`` sorted by ``SORT_KEYS`` and step, as
    ``to_csv(index=False)`` writes it when the number columns hold floats (an int is written as
    the record holds it). A run's number columns are formatted in one ``json.dumps`` each (or
    taken from ``encoded``: run id -> column -> JSON, as ``encode_record`` returns them) and
    joined row by row: about a third of pandas' time, which formats field by field."""
    encoded = encoded or {}
    lines = [",".join(CURVE_COLUMNS)]
    for record in sorted(records, key=_sort_key):
        curves = record.get("curves") or {}
        steps = curves.get("step") or []
        n = len(steps)
        if not n:
            continue
        fields = _run_fields(record)
        head = _csv_fields([fields[k] for k in CURVE_COLUMNS[:5]])
        tail = _csv_fields([fields[k] for k in CURVE_COLUMNS[13:]])
        texts = encoded.get(record["run_id"], {})
        columns = [_number_fields(curves.get(k), n, texts.get(k)) for k in CURVE_COLUMNS[5:13]]
        rows = list(zip(*columns, strict=True))
        if any(a > b for a, b in itertools.pairwise(steps)):  # (by hand: a stable sort by step)
            rows = [rows[i] for i in sorted(range(n), key=steps.__getitem__)]
        lines.extend(f"{head},{','.join(row)},{tail}" for row in rows)
    return "\n".join(lines) + "\n"


_CURVES_MARK = json.dumps("\x00curves")


def encode_record(record: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """``json.dumps(record, allow_nan=False)``, and the JSON of each curve column in it: the
    columns are encoded one by one and put in place, so that curves.csv reuses them instead of
    formatting every number a second time."""
    curves = record.get("curves")
    if not curves:
        return json.dumps(record, allow_nan=False), {}
    columns = {k: json.dumps(v, allow_nan=False) for k, v in curves.items()}
    text = json.dumps({**record, "curves": "\x00curves"}, allow_nan=False)
    if text.count(_CURVES_MARK) != 1:  # (the mark inside some other string of the record)
        return json.dumps(record, allow_nan=False), columns
    body = ", ".join(f"{json.dumps(k)}: {v}" for k, v in columns.items())
    return text.replace(_CURVES_MARK, f"{{{body}}}"), columns


class Store:
    """A results folder: load the records, add finished ones, keep the tables in step.

    ``open`` reads only; ``check_writable`` (or the first ``add``) starts writing. As a context
    manager the store is opened for writing and its tables are rebuilt on a clean exit.
    """

    def __init__(self, root: str | os.PathLike, index: tuple[Path, Any] | None = None) -> None:
        """``index``: (path, records -> DataFrame), one more table rebuilt with the CSV files
        (a sub-store's lr_search.csv / tuning.csv in its parent folder)."""
        self.index = index
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.records: dict[str, dict[str, Any]] = {}
        self.corrupt: dict[Path, str] = {}  # record files that cannot be used -> why
        self._lock_fd: int | None = None
        self._lock_file: Any = None
        self._next_write_at = 0.0
        self._write_error: StoreWriteError | None = None
        self.writable = False
        self.dirty = False  # records added since the tables were last written
        self._tables_written = False  # by this Store: until then they may lag the records
        self._newest_record_ns = 0  # the latest mtime of a loaded record file
        self._table_ids: dict[Path, set[str]] = {}  # each table's run ids, as opened
        # the curves' JSON of the records added by this Store (encode_record), for curves.csv
        self._curve_json: dict[str, dict[str, str]] = {}

    # -- opening (reads only) -----------------------------------------------------------------

    def open(self) -> Store:
        """Check the folder, take the lock, load the records and check that they account for
        every row of the tables (and of the sub-stores' tables). Writes nothing."""
        self._check_location()
        if self.root.is_dir():
            self._lock()
            try:
                self._load()
                self._check_tables()
                if self.index is None:
                    for kind in SUBSTORES:
                        self._check_sub(kind)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Store:
        self.open()
        try:
            self.check_writable()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.write_tables(force=True)
            elif self.dirty:
                with contextlib.suppress(StoreError):
                    self.write_tables(force=True)
        finally:
            self.close()

    def _check_location(self) -> None:
        """Refuse at once a --out that cannot become a writable folder (read-only test)."""
        where = next(p for p in (self.root, *self.root.parents) if p.exists() or p == Path("."))
        if not where.is_dir():
            raise StoreError(f"cannot write to --out {self.root}: {where} is not a folder")
        if not os.access(where, os.W_OK | os.X_OK):
            raise StoreError(f"cannot write to --out {self.root}: {where} is not writable")

    def _lock(self) -> None:
        """flock the folder itself; where the file system cannot (NFS emulates flock with
        byte-range locks, which need a file open for writing), a .lock file in it."""
        if self._lock_fd is not None or self._lock_file is not None:
            return
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise StoreError(f"cannot open --out {self.root}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock_fd = fd
            return
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise self._in_use() from None
        try:
            self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 (held until close)
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise self._in_use() from None
            raise StoreError(f"cannot lock --out {self.root}: {e.strerror or e}") from None

    def _in_use(self) -> StoreError:
        return StoreError(
            f"store {self.root} is in use by another bench.run; wait or use another --out"
        )

    def _load(self, warn: bool = True) -> None:
        """Load every usable record; note the others (set aside when writing starts)."""
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                written_ns = path.stat().st_mtime_ns
                record = json.loads(path.read_text())
                problem = record_problem(record, path.stem)
                if problem is None:  # everything the tables need from it must work
                    summary_row(record)
                    if self.index is not None:
                        self.index[1]([record])
            except (OSError, ValueError, RecursionError) as e:
                problem = (str(e).strip().splitlines() or [type(e).__name__])[0]
            except Exception as e:  # a shape that record_problem did not foresee
                problem = f"{type(e).__name__}: {e}".splitlines()[0]
            if problem is not None:
                self.corrupt[path] = problem
                if warn:
                    print(
                        f"bench.run: warning: unusable record {path} ({problem}); it is moved to "
                        f"{self.runs_dir / CORRUPT} when the store is written, and its run redone",
                        file=sys.stderr,
                    )
                continue
            self.records[path.stem] = record
            self._newest_record_ns = max(self._newest_record_ns, written_ns)

    def _known_ids(self) -> set[str]:
        """Run ids whose rows may leave the tables: the records, and the unusable ones (which
        will be redone)."""
        aside = (p.name.split(".")[0] for p in (self.runs_dir / CORRUPT).glob("*.json"))
        return {*self.records, *(p.stem for p in self.corrupt), *aside}

    def _tables(self) -> list[Path]:
        tables = [self.root / "summary.csv", self.root / "curves.csv"]
        return tables + ([self.index[0]] if self.index is not None else [])

    def _check_tables(self) -> None:
        known = self._known_ids()
        for path in self._tables():
            self._table_ids[path] = ids = table_run_ids(path)
            lost = sorted(ids - known)
            if lost:
                raise StoreError(
                    f"{path} has rows of {len(lost)} run(s) without a record in {self.runs_dir} "
                    f"(e.g. {lost[0]}), which rebuilding it would drop; restore those records, "
                    "or use another --out"
                )

    def _check_sub(self, kind: str) -> None:
        folder, table = self.root / kind, self.root / f"{kind}.csv"
        if folder.is_dir() or table.exists():
            sub = Store(folder, index=(table, SUBSTORES[kind]))
            sub._load(warn=False)
            sub._check_tables()

    # -- starting to write --------------------------------------------------------------------

    def _longest_names(self) -> list[str]:
        """The longest paths (relative to the root) that this store and its sub-stores write."""
        pid = os.getpid()
        names = [f"runs/.{_RUN_ID}.json.{pid}.tmp", f"runs/{CORRUPT}/{_RUN_ID}.999.json"]
        if self.index is None:
            names += [f"{kind}/{name}" for kind in SUBSTORES for name in names]
        return names

    def check_writable(self) -> None:
        """Start writing: create the folders, prove that the longest path the store will write
        can be created (a probe of that length, created and removed), lock, set unusable records
        aside, remove stale temporary files. StoreError, with the store as it was, when it cannot.
        """
        if self.writable:
            return
        created: list[Path] = []
        longest = max(self._longest_names(), key=len)
        try:
            for folder in reversed([self.runs_dir, self.root, *self.root.parents]):
                if not folder.exists():
                    folder.mkdir()
                    created.append(folder)
            self._lock()
            probes = [_tmp_path(self.runs_dir / f"{_RUN_ID}.json")]  # as a record is written
            probes.append(self.root / f".{'0' * (len(longest) - 5)}.tmp")  # as long as the longest
            for probe in probes:
                probe.write_bytes(b"")
                probe.unlink()
        except (OSError, StoreError) as e:
            if self.root in created:
                self.close()
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if isinstance(e, StoreError):
                raise
            if e.errno == errno.ENAMETOOLONG:
                where = self.root / longest
                raise StoreError(
                    f"--out {self.root} is too long: the store writes paths such as {where} "
                    f"({len(str(where))} characters), beyond this system's limit; choose a "
                    "shorter --out"
                ) from None
            raise StoreError(f"cannot write to --out {self.root}: {e.strerror or e}") from None
        self._set_aside()
        self._remove_stale_tmp()
        self.writable = True

    def _set_aside(self) -> None:
        if not self.corrupt:
            return
        folder = self.runs_dir / CORRUPT
        try:
            folder.mkdir(exist_ok=True)
            for path in self.corrupt:
                target, n = folder / path.name, 0
                while target.exists():
                    n += 1
                    target = folder / f"{path.stem}.{n}.json"
                os.replace(path, target)
        except OSError as e:
            raise StoreError(f"cannot move unusable records to {folder}: {e.strerror}") from None
        self.corrupt = {}

    def _remove_stale_tmp(self) -> None:
        for folder in (self.root, self.runs_dir):
            for p in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()

    # -- queries ------------------------------------------------------------------------------

    def is_done(self, run_id: str) -> bool:
        r = self.records.get(run_id)
        return r is not None and r.get("status") in DONE

    def sub(self, kind: str) -> Store:
        """The probe store (``lr_search``) or grid store (``tuning``) inside this one, opened (and
        writable when this one is); its table DIR/<kind>.csv is rebuilt with its CSV files."""
        sub = Store(self.root / kind, index=(self.root / f"{kind}.csv", SUBSTORES[kind])).open()
        if self.writable:
            sub.check_writable()
        return sub

    # -- writing ------------------------------------------------------------------------------

    def annotate(self, run_id: str, fields: dict[str, Any]) -> None:
        """Set fields that describe but do not define a finished run (lr_choice, target);
        rewrites the record only when something changed."""
        record = self.records[run_id]
        if all(record.get(k) == v for k, v in fields.items()):
            return
        self.add({**record, **fields})

    def add(self, record: dict[str, Any], tables: bool = True) -> None:
        """Write the run's record, then (unless ``tables`` is false: the caller adds several
        records and then calls ``write_tables``) the tables, throttled only for very large
        stores. StoreWriteError when a write fails (the record, or the tables: then the record is
        kept and the next command's tables include it)."""
        self.check_writable()
        run_id = record["run_id"]
        # compact: the C encoder (an indented dump goes through the pure-Python one, several
        # times slower on a record's curves)
        text, columns = encode_record(record)
        self._write(self.runs_dir / f"{run_id}.json", text.encode(), fsync=True)
        self.records[run_id] = record
        self._curve_json[run_id] = columns
        self.dirty = True
        if tables:
            self.write_tables()

    def _write(self, path: Path, data: bytes, fsync: bool) -> None:
        try:
            atomic_write_bytes(path, data, fsync=fsync)
        except OSError as e:
            self._write_error = self._write_error or _write_error(path, e)
            raise self._write_error from None

    def summary_frame(self) -> pd.DataFrame:
        return summary_frame(self.records.values())

    def curves_frame(self) -> pd.DataFrame:
        df = curves_frame(self.records.values())
        return df.sort_values([*SORT_KEYS, "step"], kind="stable").reset_index(drop=True)

    def _curves_current(self) -> bool:
        """Whether curves.csv, as opened, already is what ``curves_frame`` would write: written
        after every record (strictly later mtime), with the current columns, and the rows of
        exactly the records that have curves. It is the large table: a rerun that adds nothing
        then leaves it alone."""
        path = self.root / "curves.csv"
        try:
            if path.stat().st_mtime_ns <= self._newest_record_ns:
                return False
            with open(path) as f:
                if f.readline().rstrip("\r\n") != ",".join(CURVE_COLUMNS):
                    return False
        except (OSError, UnicodeDecodeError):
            return False
        logged = {k for k, r in self.records.items() if (r.get("curves") or {}).get("step")}
        return self._table_ids.get(path) == logged

    def write_tables(self, force: bool = False) -> None:
        """Rewrite summary.csv and curves.csv atomically; nothing before writing started.

        A rewrite costs time proportional to the store, so during a sweep the next one waits
        ``TABLES_EVERY_S`` seconds, or ten times the last one's duration when that is longer (it
        stays under ~10% of the sweep, with no quadratic cost in the number of records).
        ``force`` (the final rewrite when the command ends) skips only that wait; a rewrite is
        skipped when this Store has written the tables and added no record since, and curves.csv
        is kept when no record was added and it is current (``_curves_current``).
        """
        now = time.perf_counter()
        if not self.writable or (not force and now < self._next_write_at):
            return
        if not self.dirty and self._tables_written:  # (nothing new since the last rewrite)
            return
        self._write(self.root / "summary.csv", summary_csv(self.records.values()).encode(), False)
        if self.dirty or not self._curves_current():
            text = curves_csv(self.records.values(), self._curve_json)
            self._write(self.root / "curves.csv", text.encode(), False)
        if self.index is not None:
            path, table = self.index
            self._write(path, table(self.records.values()).to_csv(index=False).encode(), False)
        took = time.perf_counter() - now
        self._next_write_at = now + max(TABLES_EVERY_S, 10 * took)
        self.dirty = False
        self._tables_written = True
