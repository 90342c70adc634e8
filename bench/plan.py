"""Options -> a typed ``Plan``: every run of the sweep resolved and validated before any work.

``make_plan`` takes the options that ``bench.cli`` parsed (each flag already checked on its own)
and checks what involves several of them (warm-up against steps, the lr mode's flags, targets
against tasks, constructor arguments against every optimizer and schedule). Anything wrong raises
``UsageError`` (a ``ValueError``) with one line that names the option and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import data as D
from bench import tasks as T
from bench import tuning as U
from bench import validate as V
from bench.specs import OptimizerSpec, resolve_optimizer, split_opt_args
from bench.train import RunConfig

DEFAULT_OUT = "results/runs"
DEFAULT_GRID = "1e-5:1e1:13"

#: The committed reference results: only scripts/reference.py writes there (via a staging store),
#: because opening a store rebuilds its CSV files from its run records, which are not committed.
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "results" / "reference"


class UsageError(ValueError):
    """Bad input: reported as one line on stderr, exit code 2."""


# ---------------------------------------------------------------------------- single values


def unknown_name(kind: str, name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} choose from {', '.join(choices)}"


def parse_names(kind: str, text: str, choices: Sequence[str]) -> list[str]:
    """'a,b' or 'all' -> names, in the order given, without repeats."""
    if text.strip() == "all":
        return list(choices)
    names: list[str] = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            raise UsageError(f"empty {kind} name in '{text}'; choose from {', '.join(choices)}")
        if name not in choices:
            raise UsageError(unknown_name(kind, name, choices))
        if name not in names:
            names.append(name)
    return names


def parse_specs(kind: str, text: str, builtins: Sequence[str]) -> list[str]:
    """'a,b' or 'all' (every built-in) -> specs, in the order given, without repeats; each is
    resolved later (bench.specs), so a spec may be an entry-point name or an import path."""
    if text.strip() == "all":
        return list(builtins)
    specs: list[str] = []
    for spec in (n.strip() for n in text.split(",")):
        if not spec:
            raise UsageError(
                f"empty {kind} name in '{text}'; give built-in names ({', '.join(builtins)}), "
                "entry-point names or import paths, separated by commas"
            )
        if spec not in specs:
            specs.append(spec)
    return specs


def positive_int(flag: str, text: str, allow_zero: bool = False) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 0 or (value == 0 and not allow_zero):
        what = "a non-negative integer" if allow_zero else "a positive integer"
        raise UsageError(f"{flag} must be {what}, got '{text}'")
    return value


def positive_float(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be a positive number, got '{text}'")
    return value


def parse_gpus(text: str) -> float:
    """--gpus-per-run: 0, a fraction of one GPU, or a whole number of GPUs (Ray's rule)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and (value <= 1 or value.is_integer())):
        raise UsageError(
            f"--gpus-per-run must be 0, a fraction up to 1 or a whole number, got '{text}'"
        )
    return value


def parse_seeds(text: str) -> list[int]:
    """'N' -> seeds 0..N-1; '0,5,7' (any comma) -> exactly those."""
    if "," not in text:
        return list(range(positive_int("--seeds", text.strip())))
    seeds = [
        positive_int("--seeds", s.strip(), allow_zero=True) for s in text.split(",") if s.strip()
    ]
    if not seeds:
        raise UsageError(f"--seeds must be N or a comma list of seeds, got '{text}'")
    return list(dict.fromkeys(seeds))


def resolve_device(text: str) -> str:
    text = text.strip()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {text}: CUDA is not available here; use --device cpu or auto"
            )
        if text.startswith("cuda:"):
            index = text[5:]
            n = torch.cuda.device_count()
            if not index.isdigit() or int(index) >= n:
                raise UsageError(f"--device {text}: choose cuda:0 .. cuda:{n - 1}")
        return text
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got '{text}'")


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# ---------------------------------------------------------------------------- lr mode, targets


@dataclass(frozen=True)
class LrMode:
    """How each cell's lr is chosen: the task's default, one shared value, or tuned."""

    source: str  # default | shared | search | grid
    shared: float | None = None
    lr_max: float = 10.0
    probe_steps: int | None = None  # None: the run's steps
    grid: tuple[float, ...] = field(default_factory=tuple)

    @property
    def tuned(self) -> bool:
        return self.source in ("search", "grid")


def parse_lr_mode(
    lr: str | None,
    lr_max: float | None = None,
    probe_steps: int | None = None,
    lr_grid: Sequence[float] | None = None,
) -> LrMode:
    """--lr X | search | grid, with --lr-max / --probe-steps / --lr-grid (each only with its
    mode)."""
    text = None if lr is None else lr.strip()
    source = {None: "default", "search": "search", "grid": "grid"}.get(text, "shared")
    for flag, value, needs in (
        ("--lr-max", lr_max, "search"),
        ("--probe-steps", probe_steps, "search"),
        ("--lr-grid", lr_grid, "grid"),
    ):
        if value is not None and source != needs:
            raise UsageError(f"{flag} is only used with --lr {needs}")
    if source == "shared":
        try:
            return LrMode("shared", shared=positive_float("--lr", text))
        except UsageError:
            raise UsageError(
                f"--lr must be a positive number, got '{text}'; or 'search' (halving from "
                "--lr-max) or 'grid' (tuning on --lr-grid)"
            ) from None
    if source == "search":
        return LrMode("search", lr_max=lr_max or 10.0, probe_steps=probe_steps)
    if source == "grid":
        grid = lr_grid if lr_grid is not None else U.parse_grid(DEFAULT_GRID)
        return LrMode("grid", grid=tuple(grid))
    return LrMode("default")


def parse_targets(text: str | None, task_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each task's target: --target X (every task of the command), or TASK=X,TASK=Y (those
    tasks); the others keep their task's default (None: no target)."""
    out = {name: U.default_target(name) for name in task_names}
    if text is None:
        return out
    items = [i.strip() for i in text.split(",")]
    for item in items:
        name, sep, value = item.rpartition("=")
        names = [name.strip()] if sep else list(task_names)
        if sep and names[0] not in task_names:
            raise UsageError(
                f"--target {item}: task '{names[0]}' is not in this command's --task "
                f"({', '.join(task_names)})"
            )
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or (not sep and len(items) > 1):
            raise UsageError(
                f"--target must be a number or TASK=NUMBER[,TASK=NUMBER], got '{text}'"
            )
        for n in names:
            out[n] = {"metric": T.get(n).target_metric, "value": number}
    return out


def check_not_reference(out: str | Path) -> None:
    """Refuse a store inside results/reference, so a user's run cannot overwrite the reference."""
    path = Path(out).expanduser().resolve()
    if path == REFERENCE_DIR or REFERENCE_DIR in path.parents:
        raise UsageError(
            f"--out {out} is inside {REFERENCE_DIR}, the committed reference results; "
            "choose another store (default results/runs); scripts/reference.py regenerates it"
        )


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """One command's work: the runs (tuned runs carry a placeholder lr until tuning picks
    theirs), how their lr is chosen (and, per run, where its lr came from), each task's target,
    and where and how to run them."""

    configs: list[RunConfig]
    lr_mode: LrMode
    targets: dict[str, dict[str, Any] | None]
    out: str
    jobs: int | None = 1  # None: as many as the executor holds (Ray)
    executor: str = "local"
    address: str | None = None  # Ray: the cluster; None: a local instance
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    force: bool = False
    quiet: bool = False
    download: bool = False
    lr_sources: dict[str, str] = field(default_factory=dict)  # run_id -> default|class_default|..
    vectorize: str = "auto"  # auto: batch runs that can share a batch (bench.batched); off: never
    max_batch: int | None = None  # runs per batch; None: bench.batched.DEFAULT_MAX_BATCH


def usage(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, its ValueError (one line) raised as a UsageError."""
    try:
        return fn(*args)
    except UsageError:
        raise
    except ValueError as e:
        raise UsageError(first_line(e)) from None


def _version(distribution: str | None, version: str | None) -> str | None:
    return f"{distribution}=={version}" if version else None


def initial_lr(
    task: T.Task, spec: OptimizerSpec, mode: LrMode, task_name: str
) -> tuple[float, str]:
    """A run's initial lr and where it comes from: --lr X (shared); the task's lr for this
    optimizer, else a built-in optimizer's documented default (default); else an outside
    optimizer's constructor default (class_default). Tuned runs get a placeholder (their lr
    comes from the search or grid)."""
    if mode.shared is not None:
        return mode.shared, "shared"
    lr, source = task.default_lr(spec.spec), "default"
    if lr is None:
        lr, source = spec.default_lr(), "class_default"
    if mode.tuned:
        return lr or 1.0, mode.source
    if lr is None:
        raise UsageError(
            f"optimizer '{spec.spec}' has no default lr (its constructor's lr has no default) "
            f"and task '{task_name}' gives none; pass --lr X, --lr search or --lr grid"
        )
    return lr, source


def make_plan(o: Any) -> Plan:
    """A Plan from parsed options (the attributes of ``bench.cli``'s namespace: optim, task
    (specs) and sched as lists, seeds as a list; steps, batch_size, warmup, eval_every, threads,
    jobs as ints or None; opt_arg / sched_arg as lists of (key, value), keys optionally
    prefixed ``SPEC:``; lr, target, device, out, data_dir as text)."""
    mode = parse_lr_mode(o.lr, o.lr_max, o.probe_steps, o.lr_grid)
    optims = [usage(resolve_optimizer, name) for name in o.optim]
    tasks = {name: usage(T.resolve, name) for name in o.task}
    targets = parse_targets(o.target, o.task)
    opt_args, sched_args = dict(o.opt_arg or []), dict(o.sched_arg or [])
    for key in opt_args:
        if key.rpartition(":")[2] == "lr":
            raise UsageError(f"--opt-arg {key}=...: give the learning rate with --lr")
    per_optim = usage(split_opt_args, opt_args, optims)
    V.sweep_size(len(tasks) * len(optims) * len(o.sched), len(o.seeds), len(mode.grid))
    device = resolve_device(o.device)
    executor = make_executor_options(o, device)
    data_dir = str(Path(o.data_dir).expanduser()) if o.data_dir else str(D.default_data_dir())
    steps = {}
    for name, (task, _) in tasks.items():
        n = steps[name] = o.steps or task.steps
        if n is None:
            raise UsageError(f"task '{name}' has no default number of steps; give --steps")
        if o.batch_size and task.builder is not None:
            raise UsageError(
                f"--batch-size: task '{name}' makes its own batches (it is not a "
                "classification_task); leave --batch-size out"
            )
        if o.warmup and o.warmup >= n:
            raise UsageError(f"--warmup {o.warmup} must be below the {n} steps of {name}")
        if o.warmup and mode.probe_steps is not None and o.warmup >= mode.probe_steps:
            raise UsageError(f"--warmup {o.warmup} must be below --probe-steps {mode.probe_steps}")
    lrs = {
        (name, spec.spec): initial_lr(task, spec, mode, name)
        for name, (task, _) in tasks.items()
        for spec in optims
    }
    per_sched = split_sched_args(sched_args, o.sched, sorted(set(steps.values())), o.warmup)
    check_optimizers(optims, per_optim, lrs)
    check_not_reference(o.out)
    configs, sources = [], {}
    for name, (task, task_version) in tasks.items():
        n_steps = steps[name]
        for spec in optims:
            lr, source = lrs[(name, spec.spec)]
            for sched in o.sched:
                for seed in o.seeds:
                    config = RunConfig(
                        task=name,
                        optim=spec.spec,
                        sched=sched,
                        seed=seed,
                        steps=n_steps,
                        batch_size=None
                        if task.batch_size is None
                        else (o.batch_size or task.batch_size),
                        lr=lr,
                        opt_args=per_optim[spec.spec],
                        sched_args=per_sched[sched],
                        warmup=o.warmup,
                        eval_every=V.eval_period(
                            o.eval_every, task.eval_every or n_steps, n_steps, name
                        ),
                        device=device,
                        threads=o.threads,
                        data_dir=data_dir,
                        optim_version=None
                        if spec.origin == "builtin"
                        else _version(spec.distribution, spec.version),
                        task_version=task_version,
                    )
                    configs.append(config)
                    sources[config.run_id] = source
    return Plan(
        configs=configs,
        lr_mode=mode,
        targets=targets,
        out=o.out,
        force=o.force,
        quiet=o.quiet,
        download=o.download,
        lr_sources=sources,
        vectorize=getattr(o, "vectorize", None) or "auto",
        max_batch=getattr(o, "max_batch", None),
        **executor,
    )


def make_executor_options(o: Any, device: str) -> dict[str, Any]:
    """jobs, executor, address, cpus_per_run and gpus_per_run of the Plan, checked."""
    ray_flags = {"--address": o.address, "--cpus-per-run": o.cpus_per_run,
                 "--gpus-per-run": o.gpus_per_run}  # fmt: skip
    if o.executor != "ray":
        for flag, value in ray_flags.items():
            if value is not None:
                raise UsageError(f"{flag} is only used with --executor ray")
        return {"jobs": o.jobs or 1, "executor": o.executor}
    from bench import ray_executor

    ray_executor.require_ray()
    if device.startswith("cuda:"):
        raise UsageError(
            f"--device {device}: with --executor ray give --device cuda (Ray assigns each run "
            "its GPU)"
        )
    gpus = o.gpus_per_run
    if gpus is None:
        gpus = 1.0 if device == "cuda" else 0.0
    if gpus > 0 and device != "cuda":
        raise UsageError(
            f"--gpus-per-run {gpus:g} needs --device cuda, and CUDA is not available here"
            if not torch.cuda.is_available()
            else f"--gpus-per-run {gpus:g} needs --device cuda (the runs are on {device})"
        )
    if gpus == 0 and device == "cuda":
        raise UsageError("--gpus-per-run 0 with --device cuda: the runs would see no GPU")
    return {
        "jobs": o.jobs,
        "executor": "ray",
        "address": ray_executor.resolve_address(o.address),
        "cpus_per_run": o.cpus_per_run or float(o.threads),
        "gpus_per_run": gpus,
    }


def check_optimizers(
    optims: Sequence[OptimizerSpec],
    per_optim: dict[str, dict[str, Any]],
    lrs: dict[tuple[str, str], tuple[float, str]],
) -> None:
    """Build each optimizer once on a dummy parameter, so a key the constructor does not accept
    (or a bad value) stops the command before the sweep starts."""
    import optimizers

    for spec in optims:
        lr = next(lr for (_, name), (lr, _) in lrs.items() if name == spec.spec)
        dummy = [torch.zeros(1, requires_grad=True)]
        kwargs = per_optim[spec.spec]
        V.check_kwargs("--opt-arg", spec.spec, keyword_defaults(spec), kwargs)
        try:
            if spec.origin == "builtin":
                optimizers.create(spec.spec, dummy, lr=lr, **kwargs)
            else:
                spec.create(dummy, lr=lr, **kwargs)
        except Exception as e:  # any refusal of the constructor is a bad value
            given = " ".join(f"{k}={v!r}" for k, v in kwargs.items()) or spec.spec
            raise UsageError(f"--opt-arg {given}: {first_line(e)}") from None


def keyword_defaults(spec: OptimizerSpec) -> dict[str, Any]:
    """The defaults of an optimizer's constructor keywords (a registry name's own first): the
    kind each --opt-arg value must have."""
    import optimizers

    found = {}
    try:
        params = inspect.signature(spec.cls).parameters.values()
        found = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    except (TypeError, ValueError):  # a signature Python cannot read: the constructor judges
        pass
    if spec.origin == "builtin":
        found.update(optimizers.defaults(spec.spec))
    return found


def split_sched_args(
    sched_args: dict[str, Any], scheds: Sequence[str], lengths: Sequence[int], warmup: int
) -> dict[str, dict[str, Any]]:
    """Each schedule's constructor arguments: ``NAME:key`` to that schedule only, an unprefixed
    ``key`` to every schedule that takes it (an error when none does); each schedule is then
    built once per run length, so a bad value stops the command before the sweep starts."""
    import schedulers

    accepted = {name: set(schedulers.defaults(name, lengths[0])) for name in scheds}
    out: dict[str, dict[str, Any]] = {name: {} for name in scheds}
    prefixed: dict[str, dict[str, Any]] = {name: {} for name in scheds}
    for key, value in sched_args.items():
        prefix, _, name = key.rpartition(":")
        if prefix:
            if prefix not in out:
                raise UsageError(
                    f"--sched-arg {key}: '{prefix}' is not a schedule of this run "
                    f"({', '.join(scheds)})"
                )
            prefixed[prefix][name] = value
            continue
        takers = [s for s in scheds if name in accepted[s]]
        if not takers:
            takes = "; ".join(f"{s}: {', '.join(sorted(accepted[s])) or 'none'}" for s in scheds)
            raise UsageError(
                f"--sched-arg {name}: no schedule of this run accepts '{name}' (they accept "
                f"{takes})"
            )
        for s in takers:
            out[s][name] = value
    for name, kwargs in prefixed.items():
        out[name].update(kwargs)
    for name in scheds:
        V.check_schedule(name, lengths, warmup, out[name])
    return out
