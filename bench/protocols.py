"""The contract a task implements: what ``--task`` and ``bench.sweep(task=...)`` accept.

Most tasks are made by ``bench.classification_task`` or ``bench.surface_task``. A problem that
fits neither implements the two protocols below; nothing needs to subclass them (structural
typing, as ``typing.Protocol`` checks it).

A run does, for its seed ``s`` and ``steps`` updates::

    torch.manual_seed(s)
    problem = task.build(s, device, data_dir)
    opt = Optimizer(problem.params, lr=...)
    for step in 1 .. steps:
        loss = problem.train_loss()      # the next minibatch's loss at the current parameters
        opt.zero_grad(); loss.backward(); opt.step(); schedule.step()
        at evaluation steps: problem.evaluate()

and logs ``train_loss`` (the mean of the minibatch losses since the last logged step),
``test_loss`` / ``test_acc`` (from ``evaluate()``) and, when the problem has ``position()``, the
point ``(x, y)`` (the trajectories of the 2-D surfaces). A train loss that is NaN, infinite or
above the task's ``diverge_above`` stops the run as diverged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

#: The metrics a run stores from ``Problem.evaluate()``; other keys are ignored.
EVAL_METRICS = ("test_loss", "test_acc")


@runtime_checkable
class Problem(Protocol):
    """One instantiated problem: parameters to optimize, a training loss, test metrics.

    Optional: ``position() -> (x, y) | None``, the point a 2-D problem is at (logged as the
    ``x``, ``y`` columns of ``curves.csv``).
    """

    #: What the optimizer is built on: tensors with ``requires_grad``, or param-group dicts.
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]

    def train_loss(self) -> torch.Tensor:
        """The loss of the next minibatch at the current parameters: a 0-d tensor with a graph
        back to ``params`` (the runner calls ``backward()`` on it)."""
        ...

    def evaluate(self) -> Mapping[str, float]:
        """Held-out metrics at the current parameters: ``test_loss`` and/or ``test_acc`` (other
        keys are ignored; ``{}`` when there is no test split)."""
        ...


@runtime_checkable
class TaskProtocol(Protocol):
    """A task: ``build(seed, device, data_dir)`` makes a fresh :class:`Problem`.

    ``build`` is called after ``torch.manual_seed(seed)``, so the parameters it initialises are
    seeded; it must draw any other randomness (minibatch order) from ``seed`` too, so that a seed
    gives the same run in any process. ``data_dir`` is the ``--data-dir`` folder.

    Optional attributes, read when present (their defaults in brackets):

    * ``steps``: default number of updates [none: ``--steps`` is then required];
    * ``lr``: the default initial lr, a float or ``{optimizer spec: lr}`` [the optimizer's own
      default, recorded as ``lr_source=class_default``];
    * ``eval_every``: steps between evaluations [``steps``];
    * ``diverge_above``: the train loss above which a run has diverged [infinity];
    * ``target_metric`` (``train_loss``, ``test_loss`` or ``test_acc``) and ``target``: the level
      for time-to-target [no target];
    * ``prepare(data_dir, download)``: fetch or check the data before any run [nothing].
    """

    def build(self, seed: int, device: torch.device, data_dir: str) -> Problem:
        """A fresh problem for ``seed`` on ``device``."""
        ...


__all__ = ["EVAL_METRICS", "Problem", "TaskProtocol"]
