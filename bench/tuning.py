"""Choosing the lr per (task, optimizer, schedule) cell, and time to target: pure functions.

Two protocols (``bench.run --lr search`` / ``--lr grid``), both on one tuning seed (the first of
``--seeds``), both with the same budget for every optimizer:

* halving search (the article's advice): probe lr_k = lr_max / 2^k, k = 0 .. MAX_HALVINGS, and
  stop at the first probe that passes: it did not diverge and its final train loss is not above
  its initial one (row 0: the first minibatch's loss at the start);
* grid (DeepOBS): every lr of a log-spaced grid, pick the best final held-out metric: the final
  test accuracy on the classifiers (ties: lower final test loss, then the smaller lr), the final
  loss f(x, y) on the 2-D surfaces; diverged and failed runs are never picked.

Time to target: the first logged step at which the task's target metric meets its target
(train loss <= target on the surfaces, test accuracy >= target on the classifiers; see
the tasks' ``target``), and the training-loop seconds at that step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import tasks as T

if TYPE_CHECKING:
    import pandas as pd

MAX_HALVINGS = 20  # at most 21 probes per cell: lr_max down to lr_max / 2^20 (~1e-6 x lr_max)
PASSED, DIVERGED, ABOVE_START, FAILED = "passed", "diverged", "above_start", "failed"

CELL_COLUMNS = ["task", "optim", "sched", "steps", "batch_size", "warmup", "opt_args", "sched_args"]
PROBE_COLUMNS = [
    *CELL_COLUMNS, "lr", "seed", "initial_loss", "final_loss", "verdict", "diverged_at_step",
    "run_id",
]  # fmt: skip
TUNING_COLUMNS = [
    *CELL_COLUMNS, "lr", "seed", "metric", "value", "status", "final_train_loss",
    "final_test_loss", "final_test_acc", "run_id",
]  # fmt: skip


# ---------------------------------------------------------------------------- parsing


def parse_grid(spec: str) -> list[float]:
    """'lo:hi:n' -> n log-spaced lrs from lo to hi inclusive (4 significant digits).

    Raises ValueError (one line) for anything else: 0 < lo <= hi, n a positive integer
    (n = 1 needs lo == hi)."""
    parts = spec.split(":")
    bad = ValueError(
        f"--lr-grid must be LO:HI:N (0 < LO <= HI, N a positive integer), e.g. 1e-5:1e1:13, "
        f"got '{spec}'"
    )
    if len(parts) != 3:
        raise bad
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise bad from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi and n >= 1):
        raise bad
    if n == 1 and lo != hi:
        raise bad
    values = np.geomspace(lo, hi, n) if n > 1 else np.array([lo])
    return list(dict.fromkeys(float(f"{v:.4g}") for v in values))


def halving_lrs(lr_max: float, max_halvings: int = MAX_HALVINGS) -> list[float]:
    """The probe lrs lr_max / 2^k, k = 0 .. max_halvings (exact: dividing by 2 is exact)."""
    return [lr_max / 2**k for k in range(max_halvings + 1)]


# ---------------------------------------------------------------------------- verdicts


def probe_verdict(record: dict[str, Any]) -> str:
    """passed / diverged / above_start / failed: whether the halving search stops at this lr."""
    if record["status"] == "failed":
        return FAILED
    if record["status"] == "diverged":
        return DIVERGED
    losses = (record.get("curves") or {}).get("train_loss") or []
    if len(losses) < 2 or losses[0] is None or losses[-1] is None:
        return DIVERGED  # non-finite values are stored as null
    return ABOVE_START if losses[-1] > losses[0] else PASSED


def tuning_metric(task: str) -> tuple[str, str]:
    """(summary column, 'max' or 'min') that the grid maximises or minimises for a task: the
    final test accuracy, or the final value of a task's own target metric when it is a loss
    (the surfaces: the train loss)."""
    t = T.find(task)
    if t is not None and (t.is_surface or t.target_metric != "test_acc"):
        return f"final_{t.target_metric}", "min"
    return "final_test_acc", "max"


def select_best(task: str, rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The best grid point of one cell (rows: summary-like dicts with lr and status), or None
    when every point diverged or failed."""
    column, sense = tuning_metric(task)
    sign = -1.0 if sense == "max" else 1.0

    def key(r: dict[str, Any]) -> tuple[float, float, float]:
        test_loss = r.get("final_test_loss")
        tie = test_loss if test_loss is not None and math.isfinite(test_loss) else math.inf
        return (sign * r[column], tie, r["lr"])

    ok = [
        r
        for r in rows
        if r.get("status") == "ok" and r.get(column) is not None and math.isfinite(r[column])
    ]
    return min(ok, key=key) if ok else None


# ---------------------------------------------------------------------------- time to target


def default_target(task: str) -> dict[str, Any] | None:
    t = T.find(task)
    if t is None or t.target is None:
        return None
    return {"metric": t.target_metric, "value": t.target}


def time_to_target(
    curves: dict[str, list], metric: str, value: float
) -> tuple[int | None, float | None]:
    """(first logged step where ``metric`` meets ``value``, elapsed_s there), or (None, None).

    Losses meet the target when <= value, accuracy when >= value; missing (not measured) and
    non-finite entries never do."""
    higher = T.TARGET_METRICS.get(metric) == "max"
    for step, v, t in zip(
        curves.get("step") or [], curves.get(metric) or [], curves.get("elapsed_s") or [],
        strict=False,
    ):  # fmt: skip
        if v is None or not math.isfinite(v):
            continue
        if (v >= value) if higher else (v <= value):
            return int(step), t
    return None, None


# ---------------------------------------------------------------------------- tables


def cell_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The columns that name a cell (the config without seed and lr), from a record's config."""
    out = {k: config.get(k) for k in CELL_COLUMNS}
    out["opt_args"] = json.dumps(config.get("opt_args") or {}, sort_keys=True)
    out["sched_args"] = json.dumps(config.get("sched_args") or {}, sort_keys=True)
    return out


def probe_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """lr_search.csv: one row per probe, each cell's probes from the largest lr down."""
    import pandas as pd  # (imported by the tuning modes only)

    rows = []
    for r in records:
        losses = (r.get("curves") or {}).get("train_loss") or [None]
        rows.append(
            {
                **cell_fields(r["config"]),
                "lr": r["config"]["lr"],
                "seed": r["config"]["seed"],
                "initial_loss": losses[0],
                "final_loss": losses[-1],
                "verdict": probe_verdict(r),
                "diverged_at_step": r.get("diverged_at_step"),
                "run_id": r["run_id"],
            }
        )
    df = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    df["diverged_at_step"] = df["diverged_at_step"].astype("Int64")
    order = [*CELL_COLUMNS[:3], "steps", "seed"]
    df = df.sort_values([*order, "lr"], ascending=[True] * len(order) + [False], kind="stable")
    return df.reset_index(drop=True)


def tuning_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """tuning.csv: one row per grid point (every lr of every cell, the tuning seed)."""
    import pandas as pd

    rows = []
    for r in records:
        c, s = r["config"], r.get("summary") or {}
        column, _ = tuning_metric(c["task"])
        rows.append(
            {
                **cell_fields(c),
                "lr": c["lr"],
                "seed": c["seed"],
                "metric": column,
                "value": s.get(column) if r["status"] == "ok" else None,
                "status": r["status"],
                "final_train_loss": s.get("final_train_loss"),
                "final_test_loss": s.get("final_test_loss"),
                "final_test_acc": s.get("final_test_acc"),
                "run_id": r["run_id"],
            }
        )
    df = pd.DataFrame(rows, columns=TUNING_COLUMNS)
    return df.sort_values([*CELL_COLUMNS[:3], "steps", "seed", "lr"], kind="stable").reset_index(
        drop=True
    )
