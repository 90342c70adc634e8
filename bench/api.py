"""The Python API: ``bench.sweep(...)`` runs a sweep into a store and returns its summary rows;
``bench.load(out)`` reads a store. ``python -m bench.run`` is a thin layer over the same steps
(options -> ``bench.plan.Plan`` -> ``bench.run.execute``); where it exits with code 2 these
raise ``ValueError`` with the same one-line message.

    import bench
    summary = bench.sweep(optim=["adam", "torch.optim.AdamW"], task="beale", steps=100,
                          out="results/mine")
    summary, curves = bench.load("results/mine")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench import cli, specs
from bench import run as R
from bench import sweepfile as F
from bench import tasks as T
from bench.plan import DEFAULT_OUT, make_plan

TEXT_COLUMNS = {"run_id": str, "task": str, "optim": str, "sched": str, "status": str}


def sweep(
    optim: Any = None,
    sched: str | Sequence[str] | None = None,
    task: Any = None,
    seeds: int | Sequence[int] | None = None,
    out: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Run every (task, optimizer, schedule, seed) into the store ``out`` and return the summary
    rows of those runs, whether they finished earlier or now (one row per run; the columns of
    ``summary.csv``).

    Args:
        optim: optimizers: a spec (built-in name, entry-point name, import path such as
            ``"torch.optim.AdamW"``), a ``torch.optim.Optimizer`` subclass (named by its import
            path ``module:QualName``), or a list of them (default ``"adam"``).
        sched: schedule names (default ``"constant"``).
        task: tasks: a spec (``"beale"``, ``"mypkg.tasks:tiny_cnn"``), a task object (named by
            its ``name``; it runs in this process only), or a list (default ``"mnist1d_mlp"``).
        seeds: N (seeds 0 .. N-1) or a list of seeds (default 1).
        out: the store folder (default ``results/runs``).
        config: a sweep file (TOML) read first; the arguments given here override it.
        **options: any other ``bench.run`` option by its long name: ``steps``, ``lr``
            (a number, ``"search"`` or ``"grid"``), ``opt_args`` (``{key: value}`` and
            ``{optimizer: {key: value}}``), ``sched_args``, ``batch_size``, ``jobs``,
            ``device``, ``quiet``, ``force``, ...

    Raises:
        ValueError: bad input (what ``bench.run`` reports with exit code 2), nothing run.
        KeyboardInterrupt: interrupted; the runs finished so far are kept in the store.
    """
    settings: dict[str, Any] = {}
    objects: list[str] = []
    for key, value in (("optim", optim), ("sched", sched), ("task", task), ("seeds", seeds)):
        if value is None:
            continue
        items = list(value) if _is_list(value) else [value]
        if key == "optim":
            items = [_optimizer_spec(v) for v in items]
        elif key == "task":
            items = [_task_spec(v, objects) for v in items]
        settings[key] = items if _is_list(value) else items[0]
    if out is not None:
        settings["out"] = os.fspath(out)
    for key, value in options.items():
        if key in ("opt_args", "sched_args") and isinstance(value, Mapping):
            value = {_optimizer_key(k): v for k, v in value.items()}
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        settings[key] = value
    argv = F.to_argv(settings, source="bench.sweep", what="argument")
    if config is not None:
        argv = ["--config", os.fspath(config), *argv]
    plan = make_plan(cli.parse_options(argv))
    parallel = plan.executor != "local" or (plan.jobs or 1) > 1
    if objects and parallel:
        raise ValueError(
            f"task {objects[0]!r} is an object of this process, which worker processes cannot "
            "rebuild; give it as an import path (module:attr) or use jobs=1"
        )
    outcome = R.execute(plan)
    if outcome.code == 130:
        raise KeyboardInterrupt
    return outcome.summary


def load(out: str | os.PathLike = DEFAULT_OUT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, curves)``: the store's ``summary.csv`` (one row per run) and ``curves.csv``
    (one row per logged step of each run). Any store can be read, e.g. the committed
    ``results/reference``. Raises ValueError when ``out`` holds no store."""
    folder = Path(out)
    tables = []
    for name in ("summary.csv", "curves.csv"):
        path = folder / name
        if not path.is_file():
            raise ValueError(
                f"{folder}: not a results store ({name} is missing); run bench.sweep(out=...) "
                "or python -m bench.run --out there first"
            )
        tables.append(pd.read_csv(path, dtype=TEXT_COLUMNS))
    return tables[0], tables[1]


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _optimizer_spec(value: Any) -> str:
    if isinstance(value, specs.OptimizerSpec):
        return value.spec
    if isinstance(value, type):
        if not issubclass(value, torch.optim.Optimizer):
            raise ValueError(f"{value.__name__} is not a subclass of torch.optim.Optimizer")
        return specs.class_spec(value)
    return value


def _optimizer_key(key: Any) -> Any:
    return _optimizer_spec(key) if isinstance(key, type | specs.OptimizerSpec) else key


def _task_spec(value: Any, objects: list[str]) -> str:
    if isinstance(value, str):
        return value
    name = T.register(value)
    objects.append(name)
    return name


__all__ = ["load", "sweep"]
