"""optbench: compare optimizers and learning-rate schedules on tasks, yours or ours.

    python -m bench.run --optim adam,torch.optim.AdamW --task beale     # the command line
    bench.sweep(optim=["adam", "torch.optim.AdamW"], task="beale")      # the same, from Python
    bench.load("results/runs")                                         # (summary, curves)
    bench.classification_task(...), bench.surface_task(...)            # tasks of your own

The contract a task implements is ``bench.protocols`` (``Problem``); the catalogue of built-in
tasks is ``bench/tasks.py``.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "sweep": "bench.api",
    "load": "bench.api",
    "classification_task": "bench.tasks",
    "surface_task": "bench.tasks",
    "Task": "bench.tasks",
    "Problem": "bench.protocols",
    "TaskProtocol": "bench.protocols",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public API, imported on first use (``import bench`` alone stays light)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
