"""The command line of ``python -m bench.run``: flags -> a ``Plan`` (bench.plan), nothing else.

Each flag is checked by its argparse ``type=`` on its own; what involves several flags is checked
by ``bench.plan.make_plan``. Either way a bad value is one line, ``bench.run: error: ...``,
raised as ``UsageError`` (exit 2 in ``bench.run.main``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from bench import data as D
from bench import specs
from bench import sweepfile as F
from bench import tasks as T
from bench import validate as V
from bench.executors import EXECUTORS
from bench.plan import (
    DEFAULT_GRID,
    DEFAULT_OUT,
    Plan,
    UsageError,
    make_plan,
    parse_gpus,
    parse_names,
    parse_specs,
    positive_float,
    positive_int,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage block
        raise UsageError(message)


class _FlagError(Exception):
    """A type= check's message, passed through argparse unchanged (argparse would replace a
    ValueError's text with its generic "invalid value")."""


def _checked(name: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that raises ``check``'s ValueError text as the command's error."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as e:  # UsageError, or parse_grid's own ValueError
            raise _FlagError(str(e)) from None

    convert.__name__ = name
    return convert


def _int(flag: str, allow_zero: bool = False) -> Callable[[str], int]:
    return _checked(flag, lambda text: positive_int(flag, text, allow_zero))


def _steps(flag: str) -> Callable[[str], int]:
    return _checked(flag, lambda text: V.integer(flag, text, maximum=V.MAX_STEPS))


def _optim_names(text: str) -> list[str]:
    import optimizers

    return parse_specs("optimizer", text, optimizers.available())


def _key_value(flag: str, prefix: str) -> Callable[[str], tuple[str, Any]]:
    """KEY=VALUE or PREFIX:KEY=VALUE, the value a Python literal -> (key, value)."""

    def convert(text: str) -> tuple[str, Any]:
        ((key, value),) = specs.parse_opt_args([text], flag, prefix).items()
        return key, value

    return _checked(flag.lstrip("-").replace("-", "_"), convert)


def _sched_names(text: str) -> list[str]:
    import schedulers

    return parse_names("schedule", text, schedulers.available())


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.run",
        description="Sweep optimizers x schedules x tasks x seeds; results accumulate in --out.",
        epilog="Exit codes: 0 all runs ok or diverged, 1 a run failed, 2 bad usage, 130 Ctrl-C.",
    )
    a = p.add_argument
    a(
        "--config",
        metavar="FILE",
        help="a sweep file (TOML) whose keys are these options' long names; flags given here "
        "override it",
    )
    a(
        "--optim",
        default="adam",
        type=_checked("optim", _optim_names),
        help="optimizers, comma-separated: built-in names ('all': every one), names installed "
        "under the entry-point group optbench.optimizers, or import paths of torch.optim."
        "Optimizer subclasses (torch.optim.AdamW, mypkg.lion:Lion) (default: adam)",
    )
    a(
        "--sched",
        default="constant",
        type=_checked("sched", _sched_names),
        help="schedule names, comma-separated, or 'all' (default: constant)",
    )
    a(
        "--task",
        default="mnist1d_mlp",
        type=_checked("task", lambda t: parse_specs("task", t, T.available())),
        help="tasks, comma-separated: built-in names ('all': every one), entry-point names "
        "(optbench.tasks) or import paths of a task or a function returning one "
        "(mypkg.tasks:tiny_cnn) (default: mnist1d_mlp)",
    )
    a(
        "--seeds",
        default="1",
        type=_checked("seeds", V.seeds),
        help="N (seeds 0..N-1) or a comma list such as 0,5,7 (default: 1)",
    )
    a("--steps", type=_steps("--steps"), help="optimizer steps per run (default: the task's)")
    a("--batch-size", type=_int("--batch-size"), help="minibatch size (default: the task's)")
    a(
        "--lr",
        help="one initial lr shared by every optimizer; 'search': per cell, halve from --lr-max "
        "until a probe neither diverges nor ends above its initial loss; 'grid': per cell, the "
        "best of --lr-grid on the first seed (default: the task's lr per optimizer, else the "
        "optimizer's own default lr)",
    )
    a(
        "--lr-max",
        type=_checked("lr_max", lambda t: positive_float("--lr-max", t)),
        help="--lr search: the first probe's lr (default: 10)",
    )
    a(
        "--probe-steps",
        type=_steps("--probe-steps"),
        help="--lr search: steps per probe run (default: the run's steps, so the accepted probe "
        "is the first seed's run)",
    )
    a(
        "--lr-grid",
        type=_checked("lr_grid", V.lr_grid),
        help=f"--lr grid: LO:HI:N, N log-spaced lrs from LO to HI (default: {DEFAULT_GRID})",
    )
    a(
        "--target",
        help="time-to-target level: a number for every task of the command, or "
        "TASK=NUMBER,... (default: the task's; see --list)",
    )
    a(
        "--opt-arg",
        action="append",
        metavar="[OPTIM:]KEY=VALUE",
        type=_key_value("--opt-arg", "OPTIMIZER"),
        help="optimizer constructor argument, a Python literal (repeatable), e.g. "
        "betas=(0.9,0.99): to every optimizer that accepts it, or with a prefix to one, e.g. "
        "torch.optim.AdamW:weight_decay=0.1",
    )
    a(
        "--sched-arg",
        action="append",
        metavar="[SCHED:]KEY=VALUE",
        type=_key_value("--sched-arg", "SCHEDULE"),
        help="schedule constructor argument, a Python literal (repeatable), e.g. decay_rate=0.5: "
        "to every schedule that accepts it, or with a prefix to one, e.g. staircase:decay_rate=0.5",
    )
    a(
        "--warmup",
        default="0",
        type=_int("--warmup", allow_zero=True),
        help="linear warm-up steps before the schedule (default: 0)",
    )
    a(
        "--eval-every",
        type=_steps("--eval-every"),
        help="test-set evaluation period in steps (default: the task's)",
    )
    a(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)",
    )
    a(
        "--threads",
        default="1",
        type=_checked("threads", V.threads),
        help="torch CPU threads per run, fixed so the numbers do not depend on --jobs (default: 1)",
    )
    a(
        "--out",
        default=DEFAULT_OUT,
        type=_checked("out", V.out_dir),
        help=f"result store folder (default: {DEFAULT_OUT})",
    )
    a("--data-dir", help=f"data sets folder (default: ${D.DATA_ENV} or ~/.cache/optbench/data)")
    a("--download", action="store_true", help="download missing torchvision data sets (internet)")
    a(
        "--jobs",
        type=_int("--jobs"),
        help="runs at once: local worker processes, or the cap on Ray runs in flight (default: 1; "
        "with --executor ray, as many as the cluster's resources hold)",
    )
    a(
        "--vectorize",
        default="auto",
        choices=("auto", "off"),
        help="auto: train runs that differ only in seed, lr and schedule as one batched model "
        "(built-in optimizers on surface and classification tasks; docs/vectorized.md); "
        "off: one run at a time (default: auto)",
    )
    a(
        "--max-batch",
        type=_int("--max-batch"),
        help="most runs per batch with --vectorize auto (default: 256 on the 2-D surfaces, 8 "
        "on classification tasks); a group is split into batches of equal size",
    )
    a(
        "--executor",
        default="local",
        type=_checked("executor", lambda t: parse_names("executor", t, EXECUTORS)[0]),
        help="local: this machine (--jobs worker processes); ray: Ray tasks on a local Ray "
        "instance, or on the cluster at --address (needs pip install -e '.[ray]')",
    )
    a(
        "--address",
        help="--executor ray: the cluster, auto (the one this node is part of), host:port or "
        "ray://host:port (default: $RAY_ADDRESS, else a Ray instance started for the command)",
    )
    a(
        "--cpus-per-run",
        type=_checked("cpus_per_run", lambda t: positive_float("--cpus-per-run", t)),
        help="--executor ray: CPUs each run asks Ray for (default: --threads)",
    )
    a(
        "--gpus-per-run",
        type=_checked("gpus_per_run", parse_gpus),
        help="--executor ray: GPUs each run asks Ray for; a fraction such as 0.25 packs four runs "
        "on one GPU (default: 1 with --device cuda, else 0)",
    )
    a("--force", action="store_true", help="rerun runs that already finished")
    a("--quiet", action="store_true", help="no progress bars and no per-run lines")
    a("--list", action="store_true", help="print optimizers, schedules and tasks with defaults")
    return p


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of a command line, a ``--config`` file's settings under the flags given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        config, rest = _config_parser().parse_known_args(argv)
        if config.config is not None:
            try:
                file_argv = F.to_argv(F.read(config.config), source=config.config)
            except ValueError as e:
                raise UsageError(str(e)) from None
            try:  # the file's own values first, so that an error names the file
                parser.parse_args(file_argv)
            except (_FlagError, UsageError) as e:
                raise UsageError(f"{config.config}: {e}") from None
            argv = [*file_argv, *rest]
        return parser.parse_args(argv)
    except _FlagError as e:
        raise UsageError(str(e)) from None


def _config_parser() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("--config")
    return p


def parse(argv: Sequence[str] | None = None) -> Plan | None:
    """The plan of a command line; None for --list (which prints the registries)."""
    options = parse_options(argv)
    if options.list:
        print_list()
        return None
    return make_plan(options)


def print_list() -> None:
    import optimizers
    import schedulers

    def fmt(d: dict) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in d.items())

    print("optimizers (constructor defaults; --opt-arg overrides):")
    for name in optimizers.available():
        print(f"  {name:<10} {fmt(optimizers.defaults(name))}")
    _print_plugins("optimizers", "--optim torch.optim.AdamW,mypkg.lion:Lion")
    print("schedules (constructor arguments for a 1000-step run with lr 1; --sched-arg overrides):")
    for name in schedulers.available():
        print(f"  {name:<18} {fmt(schedulers.defaults(name, 1000, 1.0))}")
    print("tasks (steps, batch size, divergence bound, default lr per optimizer):")
    for t in T.TASKS.values():
        batch = "full" if t.batch_size is None else t.batch_size
        where = f"start={t.start}" if t.is_surface else f"eval_every={t.eval_every}"
        print(
            f"  {t.name:<15} steps={t.steps} batch={batch} {where} "
            f"diverge_above={t.diverge_above:g}"
        )
        print(f"  {'':<15} {t.description}")
        print(f"  {'':<15} lr: {', '.join(f'{k}={v:g}' for k, v in sorted(t.lr.items()))}")
        sense = ">=" if T.TARGET_METRICS[t.target_metric] == "max" else "<="
        print(f"  {'':<15} target: {t.target_metric} {sense} {t.target:g}")
    _print_plugins("tasks", "--task mypkg.tasks:tiny_cnn")


def _print_plugins(kind: specs.Kind, example: str) -> None:
    """The installed entry points of a kind, each with the distribution it comes from."""
    group = specs.OPTIMIZER_GROUP if kind == "optimizers" else specs.TASK_GROUP
    found = specs.plugins(kind)
    print(f"{kind} from installed packages (entry-point group {group}):")
    for p in found:
        note = " (shadowed by the built-in of that name)" if p.shadowed else ""
        print(f"  {p.name:<15} {p.value}  from {p.distribution} {p.version}{note}")
    if not found:
        print("  (none installed)")
    print(f"  and any import path, e.g. {example}")
