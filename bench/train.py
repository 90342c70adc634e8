"""One benchmark run as a pure function: ``train_one_run(RunConfig) -> record`` (a JSON-able dict).

Nothing here writes files; the driver (bench.run / bench.store) does. A config is a small picklable
dataclass, so runs can go to a process pool. The run id is a short hash of the config's canonical
JSON (plus FORMAT_VERSION), so the same command maps to the same ids and finished runs are skipped.

Step semantics (one row of ``curves`` per logged step s, s = 0 .. steps):
    update j (1-based) computes the minibatch loss at the parameters theta_{j-1}, then steps the
    optimizer with the lr the schedule gives at step j-1, then steps the schedule.
    row s describes the state after s updates: x, y and test metrics are measured at theta_s;
    train_loss is the mean of the minibatch losses of the updates since the previous row
    (row 0: the first minibatch's loss at theta_0); lr is the lr used by update s (row 0: update 1).
Rows are logged every ceil(steps / 500) updates, at every eval step, and at the last step; losses
accumulate on the device and are read only at rows (no host sync per step on CUDA).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch

from bench import tasks as T
from bench.protocols import EVAL_METRICS
from bench.specs import OptimizerSpec, resolve_optimizer

FORMAT_VERSION = 1
MAX_LOG_POINTS = 500

Progress = Callable[[int, int, float, float], None]  # (step, steps, train_loss, lr)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (all resolved: no 'auto', no None defaults)."""

    task: str  # the task's spec: a built-in name, an entry-point name or an import path
    optim: str  # the optimizer's spec, likewise
    sched: str
    seed: int
    steps: int
    batch_size: int | None
    lr: float
    opt_args: dict[str, Any] = field(default_factory=dict)
    sched_args: dict[str, Any] = field(default_factory=dict)
    warmup: int = 0
    eval_every: int = 0
    device: str = "cpu"
    threads: int = 1
    data_dir: str = ""  # where the data lives: not part of the run's identity
    # "distribution==version" of an outside optimizer's / task's package (None: built-in, or
    # outside any installed distribution), so that upgrading the package reruns its runs
    optim_version: str | None = None
    task_version: str | None = None

    def identity(self) -> dict[str, Any]:
        """The fields that define the run; the device counts by type (cuda:0 and cuda:1 agree).
        The versions count only when set, so a built-in run's id is what it always was."""
        d = asdict(self)
        d.pop("data_dir")
        for key in ("optim_version", "task_version"):
            if d[key] is None:
                d.pop(key)
        d["device"] = torch.device(self.device).type
        d["format"] = FORMAT_VERSION
        return d

    @functools.cached_property
    def run_id(self) -> str:  # (a frozen dataclass: computed once)
        canonical = json.dumps(_jsonable(self.identity()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def _jsonable(obj: Any) -> Any:
    """Tuples -> lists, non-finite floats -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        try:  # a curve: numbers (or None) only, all finite when their sum is (NaN, inf propagate;
            # filter(None, ...) skips the Nones, and zeros, which change no sum, at C speed)
            if math.isfinite(sum(filter(None, obj))):
                return list(obj)
        except (TypeError, ValueError, RuntimeError):  # None, strings, containers, arrays
            pass
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass(frozen=True)
class LogSteps:
    """Which steps get a row of ``curves`` and which an evaluation, by arithmetic, so nothing
    grows with the number of steps: step s is evaluated when eval_every divides it or s = steps,
    and logged when it is evaluated or ceil(steps / MAX_LOG_POINTS) divides it."""

    steps: int
    eval_every: int

    @cached_property
    def log_every(self) -> int:
        return max(1, math.ceil(self.steps / MAX_LOG_POINTS))

    def is_eval(self, s: int) -> bool:
        return s == self.steps or (self.eval_every > 0 and s % self.eval_every == 0)

    def is_row(self, s: int) -> bool:
        return s % self.log_every == 0 or self.is_eval(s)


def row_steps(steps: int, eval_every: int) -> tuple[list[int], set[int]]:
    """The logged steps (0, every ceil(steps/500), every eval step, the last) and the eval steps;
    memory in proportion to the rows, not to the steps."""
    log = LogSteps(steps, eval_every)
    evals = [steps] if eval_every <= 0 else range(0, steps + 1, eval_every)
    logged = range(0, steps + 1, log.log_every)
    rows = list(dict.fromkeys(heapq.merge(logged, evals, [steps])))
    return rows, {s for s in rows if log.is_eval(s)}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("optbench", "torchvision", "numpy", "mnist1d"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()})"


@functools.lru_cache(maxsize=64)
def optimizer_spec(spec: str) -> OptimizerSpec:
    """The resolved optimizer spec (once per process: a worker resolves it again)."""
    return resolve_optimizer(spec)


def make_optimizer(config: RunConfig, params: Any):
    """The optimizer (a built-in from the registry, else the spec's class) and the schedule."""
    import optimizers
    import schedulers

    if config.optim in optimizers.available():
        opt = optimizers.create(config.optim, params, lr=config.lr, **config.opt_args)
    else:
        opt = optimizer_spec(config.optim).create(params, lr=config.lr, **config.opt_args)
    sched = schedulers.create(
        config.sched, opt, config.steps, warmup_steps=config.warmup, **config.sched_args
    )
    return opt, sched


def train_one_run(config: RunConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Train one (task, optimizer, schedule, seed) and return its record; never raises on a failed
    run (status 'failed' with the message) except KeyboardInterrupt."""
    start = time.perf_counter()
    record: dict[str, Any] = {
        "run_id": config.run_id,
        "format": FORMAT_VERSION,
        "config": _jsonable(asdict(config)),
        "status": "failed",
        "error": None,
        "diverged_at_step": None,
        "divergence": None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "threads": config.threads,
        "device": config.device,
    }
    curves: dict[str, list] = {
        k: [] for k in ("step", "lr", "train_loss", "test_loss", "test_acc", "elapsed_s", "x", "y")
    }
    summary: dict[str, Any] = {"steps_done": 0, "train_s": 0.0}
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(config.threads)
        device = torch.device(config.device)
        record["device_name"] = device_name(device)
        _loop(config, device, curves, summary, record, progress)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the sweep goes on; the record says why
        record["status"] = "failed"
        msg = str(e).strip().splitlines()
        record["error"] = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")
        record["traceback"] = traceback.format_exc(limit=8)
    finally:
        torch.set_num_threads(threads_before)
    record["curves"] = _jsonable(curves)
    record["summary"] = _jsonable(_summarise(curves, summary, time.perf_counter() - start))
    return record


def _loop(config, device, curves, summary, record, progress) -> None:
    task = T.get(config.task)
    torch.manual_seed(config.seed)
    problem = task.build(config.seed, device, config.data_dir, config.batch_size)
    params = _check_problem(config.task, problem)
    opt, sched = make_optimizer(config, params)
    log = LogSteps(config.steps, config.eval_every)
    bound = task.diverge_above
    group = opt.param_groups[0]

    acc = torch.zeros((), dtype=torch.float64, device=device)  # sum of losses since the last row
    n_acc = 0
    record["status"] = "ok"
    t0 = time.perf_counter()
    row0: dict[str, Any] | None = None
    for j in range(config.steps + 1):
        if j > 0:
            loss = problem.train_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            acc += loss.detach()
            n_acc += 1
            if j == 1 or log.is_row(j):  # the lr this update uses (a tensor lr is read only here)
                lr_used = float(group["lr"])
            if j == 1:
                first, first_lr = loss.detach().clone(), lr_used
            opt.step()
            sched.step()
            if not log.is_row(j):
                continue
        if j == 0:  # row 0 is measured before any update; its train loss is the first minibatch's
            row0 = _measure(problem, log.is_eval(j))
            continue
        mean_loss = (acc / n_acc).item()
        acc.zero_()
        n_acc = 0
        elapsed = time.perf_counter() - t0
        if row0 is not None:
            _append(curves, 0, first_lr, first.item(), row0, 0.0)
            row0 = None
        m = _measure(problem, log.is_eval(j))
        _append(curves, j, lr_used, mean_loss, m, elapsed)
        summary["steps_done"] = j
        summary["train_s"] = elapsed
        if progress is not None:
            progress(j, config.steps, mean_loss, lr_used)
        if not math.isfinite(mean_loss) or mean_loss > bound:
            record["status"] = "diverged"
            record["diverged_at_step"] = j
            record["divergence"] = f"train loss {mean_loss:.4g} at step {j} (bound {bound:g})"
            break


def _check_problem(name: str, problem: Any) -> list:
    """The problem's params as a list, after checking it has what a run uses."""
    missing = [a for a in ("params", "train_loss", "evaluate") if not hasattr(problem, a)]
    if missing:
        raise TypeError(
            f"task '{name}': build() returned a {type(problem).__name__} without "
            f"{', '.join(missing)} (see bench.protocols.Problem)"
        )
    params = list(problem.params)
    if not params:
        raise ValueError(f"task '{name}': the problem has no params")
    return params


def _measure(problem, evaluate: bool) -> dict[str, Any]:
    got = problem.evaluate() if evaluate else {}
    m: dict[str, Any] = {k: float(got[k]) for k in EVAL_METRICS if got.get(k) is not None}
    position = getattr(problem, "position", None)
    pos = position() if position is not None else None
    if pos is not None:
        m["x"], m["y"] = pos
    return m


def _append(curves, step, lr, train_loss, m, elapsed) -> None:
    curves["step"].append(step)
    curves["lr"].append(float(lr))
    curves["train_loss"].append(train_loss)
    curves["test_loss"].append(m.get("test_loss"))
    curves["test_acc"].append(m.get("test_acc"))
    curves["elapsed_s"].append(round(elapsed, 6))
    curves["x"].append(m.get("x"))
    curves["y"].append(m.get("y"))


def _last(values: list) -> Any:
    for v in reversed(values):
        if v is not None:
            return v
    return None


def _summarise(curves, summary, wall_s: float) -> dict[str, Any]:
    accs = [a for a in curves["test_acc"] if a is not None and math.isfinite(a)]
    steps_done, train_s = summary["steps_done"], summary["train_s"]
    return {
        "final_train_loss": curves["train_loss"][-1] if curves["train_loss"] else None,
        "final_test_loss": _last(curves["test_loss"]),
        "final_test_acc": _last(curves["test_acc"]),
        "best_test_acc": max(accs) if accs else None,
        "steps_done": steps_done,
        "wall_s": round(wall_s, 4),
        "train_s": round(train_s, 4),
        "steps_per_s": round(steps_done / train_s, 2) if train_s > 0 else None,
    }
