"""``python -m bench.run``: sweep optimizers x schedules x tasks x seeds into a result store.

Layers: ``plan`` turns arguments into a list of RunConfig (every default resolved, every name and
constructor argument checked before any work); ``execute`` runs the pending ones (in this process
or a spawn pool) and hands each record to the Store, the only writer.

Exit codes: 0 every run ok or diverged; 1 a run failed; 2 bad usage (one line on stderr);
130 interrupted (finished runs are kept).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from tqdm import tqdm

from bench import data as D
from bench import store as S
from bench import tasks as T
from bench import tuning as U
from bench.train import RunConfig, train_one_run

DEFAULT_OUT = "results/runs"
DEFAULT_GRID = "1e-5:1e1:13"
PROG = "bench.run"


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage block
        raise UsageError(message)


# ---------------------------------------------------------------------------- parsing helpers


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


def positive_int(flag: str, text: str, allow_zero: bool = False) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 0 or (value == 0 and not allow_zero):
        what = "a non-negative integer" if allow_zero else "a positive integer"
        raise UsageError(f"{flag} must be {what}, got '{text}'")
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


def parse_lr(text: str | None) -> float | None:
    """A positive finite float (None: each optimizer's per-task default)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"--lr must be a positive number, got '{text}'")
    return value


@dataclass(frozen=True)
class LrMode:
    """How each cell's lr is chosen: the task's default, one shared value, or tuned."""

    source: str  # default | shared | search | grid
    shared: float | None = None
    lr_max: float = 10.0
    probe_steps: int | None = None  # None: the run's steps
    grid: tuple[float, ...] = field(default_factory=tuple)


def parse_lr_mode(args: argparse.Namespace) -> LrMode:
    """--lr X | search | grid, with --lr-max / --probe-steps / --lr-grid (each only with its
    mode)."""
    text = None if args.lr is None else args.lr.strip()
    source = {None: "default", "search": "search", "grid": "grid"}.get(text, "shared")
    for flag, value, needs in (
        ("--lr-max", args.lr_max, "search"),
        ("--probe-steps", args.probe_steps, "search"),
        ("--lr-grid", args.lr_grid, "grid"),
    ):
        if value is not None and source != needs:
            raise UsageError(f"{flag} is only used with --lr {needs}")
    if source == "shared":
        try:
            return LrMode("shared", shared=parse_lr(text))
        except UsageError:
            raise UsageError(
                f"--lr must be a positive number, got '{text}'; or 'search' (halving from "
                "--lr-max) or 'grid' (tuning on --lr-grid)"
            ) from None
    if source == "search":
        lr_max = 10.0
        if args.lr_max is not None:
            try:
                lr_max = float(args.lr_max)
            except ValueError:
                lr_max = math.nan
            if not (math.isfinite(lr_max) and lr_max > 0):
                raise UsageError(f"--lr-max must be a positive number, got '{args.lr_max}'")
        probe = None
        if args.probe_steps is not None:
            probe = positive_int("--probe-steps", args.probe_steps)
        return LrMode("search", lr_max=lr_max, probe_steps=probe)
    if source == "grid":
        try:
            grid = U.parse_grid(args.lr_grid if args.lr_grid is not None else DEFAULT_GRID)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return LrMode("grid", grid=tuple(grid))
    return LrMode("default")


def parse_targets(text: str | None, task_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each task's target: --target X (every task of the command), or TASK=X,TASK=Y (those
    tasks); the others keep their registry default."""
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
            out[n] = {"metric": T.TASKS[n].target_metric, "value": number}
    return out


def parse_kv(flag: str, items: Sequence[str] | None) -> dict[str, Any]:
    """['key=value', ...] with values as Python literals (0.9, (0.9, 0.99), True, 'name')."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"{flag} expects key=value, got '{item}'")
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise UsageError(
                f"{flag} {key}: '{value}' is not a Python literal (numbers, True/False, "
                "tuples, quoted strings)"
            ) from None
    return out


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


# ---------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.run",
        description="Sweep optimizers x schedules x tasks x seeds; results accumulate in --out.",
        epilog="Exit codes: 0 all runs ok or diverged, 1 a run failed, 2 bad usage, 130 Ctrl-C.",
    )
    a = p.add_argument
    a("--optim", default="adam", help="optimizer names, comma-separated, or 'all' (default: adam)")
    a(
        "--sched",
        default="constant",
        help="schedule names, comma-separated, or 'all' (default: constant)",
    )
    a(
        "--task",
        default="mnist1d_mlp",
        help="task names, comma-separated, or 'all' (default: mnist1d_mlp)",
    )
    a("--seeds", default="1", help="N (seeds 0..N-1) or a comma list such as 0,5,7 (default: 1)")
    a("--steps", help="optimizer steps per run (default: the task's)")
    a("--batch-size", help="minibatch size (default: the task's)")
    a(
        "--lr",
        help="one initial lr shared by every optimizer; 'search': per cell, halve from --lr-max "
        "until a probe neither diverges nor ends above its initial loss; 'grid': per cell, the "
        "best of --lr-grid on the first seed (default: the task's lr per optimizer)",
    )
    a("--lr-max", help="--lr search: the first probe's lr (default: 10)")
    a(
        "--probe-steps",
        help="--lr search: steps per probe run (default: the run's steps, so the accepted probe "
        "is the first seed's run)",
    )
    a(
        "--lr-grid",
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
        metavar="KEY=VALUE",
        help="optimizer constructor argument, a Python literal (repeatable), e.g. betas=(0.9,0.99)",
    )
    a(
        "--sched-arg",
        action="append",
        metavar="KEY=VALUE",
        help="schedule constructor argument, a Python literal (repeatable), e.g. decay_rate=0.5",
    )
    a("--warmup", default="0", help="linear warm-up steps before the schedule (default: 0)")
    a("--eval-every", help="test-set evaluation period in steps (default: the task's)")
    a(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)",
    )
    a(
        "--threads",
        default="1",
        help="torch CPU threads per run, fixed so the numbers do not depend on --jobs (default: 1)",
    )
    a("--out", default=DEFAULT_OUT, help=f"result store folder (default: {DEFAULT_OUT})")
    a("--data-dir", help=f"data sets folder (default: ${D.DATA_ENV} or ~/.cache/optbench/data)")
    a("--download", action="store_true", help="download missing torchvision data sets (internet)")
    a("--jobs", default="1", help="parallel worker processes (default: 1)")
    a("--force", action="store_true", help="rerun runs that already finished")
    a("--quiet", action="store_true", help="no progress bars and no per-run lines")
    a("--list", action="store_true", help="print optimizers, schedules and tasks with defaults")
    return p


# ---------------------------------------------------------------------------- planning


def plan(args: argparse.Namespace) -> list[RunConfig]:
    """Every run of the sweep, resolved and validated (raises UsageError).

    With --lr search / grid the configs carry the task's default lr as a placeholder until
    ``tune`` replaces it with each cell's chosen lr."""
    import optimizers
    import schedulers

    optims = parse_names("optimizer", args.optim, optimizers.available())
    scheds = parse_names("schedule", args.sched, schedulers.available())
    task_names = parse_names("task", args.task, T.available())
    seeds = parse_seeds(args.seeds)
    steps = positive_int("--steps", args.steps) if args.steps is not None else None
    batch = positive_int("--batch-size", args.batch_size) if args.batch_size is not None else None
    mode = parse_lr_mode(args)
    lr = mode.shared
    parse_targets(args.target, task_names)
    warmup = positive_int("--warmup", args.warmup, allow_zero=True)
    eval_every = positive_int("--eval-every", args.eval_every) if args.eval_every else None
    threads = positive_int("--threads", args.threads)
    opt_args = parse_kv("--opt-arg", args.opt_arg)
    sched_args = parse_kv("--sched-arg", args.sched_arg)
    if "lr" in opt_args:
        raise UsageError("--opt-arg lr=...: give the learning rate with --lr")
    device = resolve_device(args.device)
    data_dir = str(Path(args.data_dir).expanduser()) if args.data_dir else str(D.default_data_dir())

    for name in task_names:
        if warmup and warmup >= (steps or T.TASKS[name].steps):
            n = steps or T.TASKS[name].steps
            raise UsageError(f"--warmup {warmup} must be below the {n} steps of {name}")
        if warmup and mode.probe_steps is not None and warmup >= mode.probe_steps:
            raise UsageError(f"--warmup {warmup} must be below --probe-steps {mode.probe_steps}")
    _check_constructors(optims, scheds, opt_args, sched_args, warmup, task_names, steps)
    configs = []
    for name in task_names:
        task = T.TASKS[name]
        n_steps = steps or task.steps
        for optim in optims:
            for sched in scheds:
                for seed in seeds:
                    configs.append(
                        RunConfig(
                            task=name,
                            optim=optim,
                            sched=sched,
                            seed=seed,
                            steps=n_steps,
                            batch_size=None if task.is_surface else (batch or task.batch_size),
                            lr=lr if lr is not None else task.default_lr(optim),
                            opt_args=opt_args,
                            sched_args=sched_args,
                            warmup=warmup,
                            eval_every=eval_every or min(task.eval_every, n_steps),
                            device=device,
                            threads=threads,
                            data_dir=data_dir,
                        )
                    )
    return configs


def _check_constructors(optims, scheds, opt_args, sched_args, warmup, task_names, steps) -> None:
    """Build each optimizer and schedule once on a dummy parameter, so a key the constructor does
    not accept (or a bad value) stops the command before the sweep starts."""
    import optimizers
    import schedulers

    for name in optims:
        try:
            optimizers.create(name, [torch.zeros(1, requires_grad=True)], lr=1e-3, **opt_args)
        except (ValueError, TypeError) as e:
            raise UsageError(first_line(e)) from None
    lengths = sorted({steps or T.TASKS[t].steps for t in task_names})
    for name in scheds:
        for n in lengths:
            dummy = optimizers.create("sgd", [torch.zeros(1, requires_grad=True)], lr=0.1)
            try:
                schedulers.create(name, dummy, n, warmup_steps=warmup, **sched_args)
            except (ValueError, TypeError) as e:
                raise UsageError(first_line(e)) from None


# ---------------------------------------------------------------------------- listing


def print_list() -> None:
    import optimizers
    import schedulers

    def fmt(d: dict) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in d.items())

    print("optimizers (constructor defaults; --opt-arg overrides):")
    for name in optimizers.available():
        print(f"  {name:<10} {fmt(optimizers.defaults(name))}")
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


# ---------------------------------------------------------------------------- execution


def _show_bars(quiet: bool) -> bool:
    return not quiet and not (os.environ.get("CI") and not sys.stdout.isatty())


def _describe(c: RunConfig) -> str:
    return f"{c.task} {c.optim} {c.sched} seed={c.seed} lr={c.lr:g}"


def _outcome(record: dict[str, Any]) -> str:
    s = record.get("summary") or {}
    status = record["status"]
    if status == "failed":
        return f"failed: {record.get('error')}"
    parts = [status]
    if status == "diverged":
        parts.append(f"at step {record.get('diverged_at_step')}")
    if s.get("final_train_loss") is not None:
        parts.append(f"train_loss={s['final_train_loss']:.4g}")
    if s.get("final_test_acc") is not None:
        parts.append(f"test_acc={s['final_test_acc']:.4f}")
    parts.append(f"({s.get('wall_s', 0):.1f} s)")
    return " ".join(parts)


class WorkerDied(RuntimeError):
    """A worker process ended without returning its run (killed, out of memory)."""


def _worker(tasks, results) -> None:
    """Worker process: run configs until the None sentinel. Ctrl-C is the driver's business, and a
    worker dies with the driver (Linux), so a kill -9'd sweep leaves no orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    for k, config in iter(tasks.get, None):
        results.put((k, train_one_run(config)))


class WorkerPool:
    """Spawned worker processes that run configs and send back records, kept across batches (the
    rounds of --lr search start them once).

    Hand-rolled rather than a ProcessPoolExecutor so that Ctrl-C can terminate the workers at once
    and a dead worker is noticed instead of waited for."""

    def __init__(self, jobs: int) -> None:
        self.jobs, self.procs, self.batch = jobs, [], 0
        ctx = mp.get_context("spawn")  # fork is unsafe with torch threads and CUDA
        self.tasks, self.results = ctx.Queue(), ctx.Queue()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.procs = [
            ctx.Process(target=_worker, args=(self.tasks, self.results), daemon=True)
            for _ in range(self.jobs)
        ]
        for p in self.procs:
            p.start()

    def run(self, pending: list[RunConfig]):
        """Yield (config, record) as the workers finish them (in any order); the workers start
        with the first configs."""
        if pending and not self.procs:
            self._start()
        self.batch += 1
        for k, config in enumerate(pending):
            self.tasks.put(((self.batch, k), config))
        for _ in pending:
            while True:
                try:
                    (batch, k), record = self.results.get(timeout=0.5)
                    if batch == self.batch:
                        break
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in self.procs):
                        raise WorkerDied from None
            yield pending[k], record

    def close(self, wait: bool = False) -> None:
        """Stop the workers: let them finish (wait) or terminate them at once."""
        if wait:
            for _ in self.procs:
                self.tasks.put(None)
            for p in self.procs:
                p.join()
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=5)
        self.tasks.cancel_join_thread()


def run_in_workers(pending: list[RunConfig], jobs: int, pool: WorkerPool | None = None):
    """Yield (config, record) as worker processes finish them: in ``pool`` when given (left
    running), else in a pool started for these configs and stopped afterwards."""
    own = pool is None
    pool = pool or WorkerPool(jobs)
    done = False
    try:
        yield from pool.run(pending)
        done = True
    finally:
        if own:
            pool.close(wait=done)
        elif not done:  # interrupted or a worker died: the pool cannot be trusted any more
            pool.close()


def execute(
    store: S.Store,
    pending: list[RunConfig],
    skipped: int,
    jobs: int,
    quiet: bool,
    label: str = "",
    extra: Mapping[str, dict[str, Any]] | None = None,
    pool: WorkerPool | None = None,
) -> dict[str, int]:
    """Run the pending configs, adding each record to the store as it finishes (with the fields of
    ``extra[run_id]``: how its lr was chosen, its target). ``label`` prefixes the per-run lines;
    ``pool``: worker processes to use (kept running) instead of starting ``jobs`` new ones."""
    counts = {"ok": 0, "diverged": 0, "failed": 0, "skipped": skipped}
    total = len(pending) + skipped
    bars = _show_bars(quiet)
    sweep_bar = tqdm(total=total, initial=skipped, desc="sweep", unit="run", disable=not bars)

    def finished(config: RunConfig, record: dict[str, Any], index: int) -> None:
        store.add({**record, **(extra or {}).get(config.run_id, {})})
        counts[record["status"]] += 1
        line = f"[{index}/{total}] {label}{_describe(config)}: {_outcome(record)}"
        if record["status"] == "failed":
            tqdm.write(f"{PROG}: {line}", file=sys.stderr)
        elif bars:
            tqdm.write(line)
        elif not quiet:
            print(line, flush=True)
        done = counts["ok"] + counts["diverged"]
        sweep_bar.set_postfix(done=done, failed=counts["failed"], skipped=skipped, refresh=False)
        sweep_bar.update(1)

    try:
        if pool is None and (jobs == 1 or len(pending) <= 1):
            for i, config in enumerate(pending, start=skipped + 1):
                run_bar = tqdm(
                    total=config.steps,
                    desc=label + _describe(config),
                    leave=False,
                    disable=not bars,
                )

                def progress(step, steps, loss, lr, bar=run_bar):
                    bar.update(step - bar.n)
                    bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", refresh=False)

                try:
                    record = train_one_run(config, progress if bars else None)
                finally:
                    run_bar.close()
                finished(config, record, i)
        else:
            workers = run_in_workers(pending, min(jobs, len(pending)), pool)
            with contextlib.closing(workers):  # Ctrl-C anywhere here stops the workers at once
                for n, (config, record) in enumerate(workers, start=skipped + 1):
                    finished(config, record, n)
    finally:
        sweep_bar.close()
    return counts


# ---------------------------------------------------------------------------- tuning


Cell = tuple[str, str, str]  # (task, optim, sched); the other settings are the command's


def _cells(configs: list[RunConfig]) -> dict[Cell, RunConfig]:
    """Each cell's config on the tuning seed (the first of --seeds)."""
    cells: dict[Cell, RunConfig] = {}
    for c in configs:
        cells.setdefault((c.task, c.optim, c.sched), c)
    return cells


def _say(quiet: bool, line: str) -> None:
    if quiet:
        return
    if _show_bars(quiet):
        tqdm.write(line)
    else:
        print(line, flush=True)


def _run_missing(
    sub: S.Store, configs: list[RunConfig], force: bool, fresh: set[str], jobs: int, quiet: bool,
    label: str, pool: WorkerPool | None = None,
) -> dict[str, int]:  # fmt: skip
    """Run the configs that the sub-store lacks (all of them with --force, once per command)."""
    todo = [
        c for c in dict((c.run_id, c) for c in configs).values()
        if not sub.is_done(c.run_id) or (force and c.run_id not in fresh)
    ]  # fmt: skip
    fresh.update(c.run_id for c in todo)
    return execute(sub, todo, len(configs) - len(todo), jobs, quiet, label, pool=pool)


def search_lrs(
    sub: S.Store, cells: dict[Cell, RunConfig], mode: LrMode, jobs: int, quiet: bool,
    force: bool, fresh: set[str],
) -> dict[Cell, float | None]:  # fmt: skip
    """The halving search, in rounds: each round runs the next probe of every unresolved cell (in
    parallel with --jobs, on worker processes started once); a cell stops at its first passing
    probe, or with None after MAX_HALVINGS halvings or a failed probe."""
    lrs = U.halving_lrs(mode.lr_max, U.MAX_HALVINGS)
    k = dict.fromkeys(cells, 0)
    chosen: dict[Cell, float | None] = {}
    pool = WorkerPool(min(jobs, len(cells))) if jobs > 1 and len(cells) > 1 else None
    try:
        _search_rounds(sub, cells, mode, lrs, k, chosen, quiet, force, fresh, pool)
    finally:
        if pool is not None:
            pool.close()
    return chosen


def _search_rounds(sub, cells, mode, lrs, k, chosen, quiet, force, fresh, pool) -> None:
    while k:
        probes = {}
        for cell, i in k.items():
            c = cells[cell]
            steps = mode.probe_steps or c.steps
            probes[cell] = replace(c, lr=lrs[i], steps=steps, eval_every=min(c.eval_every, steps))
        _run_missing(sub, list(probes.values()), force, fresh, 1, quiet, "probe ", pool)
        for cell, probe in probes.items():
            verdict = U.probe_verdict(sub.records[probe.run_id])
            if verdict == U.PASSED:
                chosen[cell] = probe.lr
            elif verdict == U.FAILED or k[cell] == U.MAX_HALVINGS:
                chosen[cell] = None
            else:
                k[cell] += 1
                continue
            n = k.pop(cell) + 1
            what = f"lr {probe.lr:g}"
            if verdict != U.PASSED:
                what = f"no lr ({verdict} at {probe.lr:g})"
            _say(quiet, f"lr search {' '.join(cell)}: {what} after {n} probe(s)")


def grid_lrs(
    sub: S.Store, cells: dict[Cell, RunConfig], mode: LrMode, jobs: int, quiet: bool,
    force: bool, fresh: set[str],
) -> dict[Cell, float | None]:  # fmt: skip
    """Every grid lr on the tuning seed, then each cell's best (None: every point diverged)."""
    runs = {cell: [replace(c, lr=lr) for lr in mode.grid] for cell, c in cells.items()}
    _run_missing(sub, [r for rs in runs.values() for r in rs], force, fresh, jobs, quiet, "grid ")
    chosen: dict[Cell, float | None] = {}
    for cell, rs in runs.items():
        rows = [S.summary_row(sub.records[r.run_id]) for r in rs]
        best = U.select_best(cell[0], [{**row, "lr": row["lr0"]} for row in rows])
        chosen[cell] = None if best is None else best["lr"]
        metric, _ = U.tuning_metric(cell[0])
        what = "no lr (every point diverged or failed)"
        if best is not None:
            what = f"lr {best['lr']:g} ({metric} {best[metric]:.4g})"
        _say(quiet, f"lr grid {' '.join(cell)}: {what} of {len(rs)}")
    return chosen


def tune(
    store: S.Store, configs: list[RunConfig], mode: LrMode, jobs: int, quiet: bool, force: bool
) -> tuple[list[RunConfig], dict[str, dict], list[Cell], dict[str, dict], int]:
    """Choose each cell's lr (search or grid, in a sub-store), then return the final configs at
    it, each run's lr_choice, the cells without an lr, the records that a tuning run already
    made (the tuning seed's run at the chosen lr, when the probe or grid run is that very run)
    and the number of tuning runs that failed."""
    sub = store.sub("lr_search" if mode.source == "search" else "tuning")
    fresh: set[str] = set()
    try:
        cells = _cells(configs)
        pick = search_lrs if mode.source == "search" else grid_lrs
        chosen = pick(sub, cells, mode, jobs, quiet, force, fresh)
    finally:
        sub.write_tables(force=True)
        sub.close()
    finals, choice, reuse = [], {}, {}
    for c in configs:
        lr = chosen[(c.task, c.optim, c.sched)]
        if lr is None:
            continue
        final = replace(c, lr=lr)
        finals.append(final)
        choice[final.run_id] = {"source": mode.source, "lr": lr}
        done = sub.records.get(final.run_id)
        if done and done["status"] in S.DONE and (not force or final.run_id in fresh):
            reuse[final.run_id] = done
    missing = [cell for cell, lr in chosen.items() if lr is None]
    failed = sum(sub.records[r]["status"] == "failed" for r in fresh if r in sub.records)
    return finals, choice, missing, reuse, failed


# ---------------------------------------------------------------------------- main


#: The committed reference results: only scripts/reference.py writes there (via a staging store),
#: because opening a store rebuilds its CSV files from its run records, which are not committed.
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "results" / "reference"


def check_not_reference(out: str | Path) -> None:
    """Refuse a store inside results/reference, so a user's run cannot overwrite the reference."""
    path = Path(out).expanduser().resolve()
    if path == REFERENCE_DIR or REFERENCE_DIR in path.parents:
        raise UsageError(
            f"--out {out} is inside {REFERENCE_DIR}, the committed reference results; "
            "choose another store (default results/runs); scripts/reference.py regenerates it"
        )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the sweep started (planning, data preparation)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print_list()
        return 0
    configs = plan(args)
    mode = parse_lr_mode(args)
    targets = parse_targets(args.target, list(dict.fromkeys(c.task for c in configs)))
    jobs = positive_int("--jobs", args.jobs)
    check_not_reference(args.out)
    store = S.Store(args.out)
    try:
        store.open()
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    interrupted = False
    missing: list[Cell] = []
    tuning_failed = 0
    t0 = time.perf_counter()
    try:
        tuned = mode.source in ("search", "grid")
        need = [c for c in configs if tuned or args.force or not store.is_done(c.run_id)]
        try:
            for name in dict.fromkeys(c.task for c in need):
                T.TASKS[name].prepare(need[0].data_dir, download=args.download)
        except D.DataMissingError as e:
            raise UsageError(first_line(e)) from None
        choice = {c.run_id: {"source": mode.source, "lr": c.lr} for c in configs}
        reuse: dict[str, dict[str, Any]] = {}
        try:
            if tuned:
                configs, choice, missing, reuse, tuning_failed = tune(
                    store, configs, mode, jobs, args.quiet, args.force
                )
            extra = {
                c.run_id: {"lr_choice": choice[c.run_id], "target": targets[c.task]}
                for c in configs
            }
            pending = []
            for c in configs:
                if c.run_id in reuse and (args.force or not store.is_done(c.run_id)):
                    store.add({**reuse[c.run_id], **extra[c.run_id]})  # the tuning run itself
                elif args.force or not store.is_done(c.run_id):
                    pending.append(c)
                else:
                    store.annotate(c.run_id, {"target": targets[c.task]})
            skipped = len(configs) - len(pending)
            counts = execute(store, pending, skipped, jobs, args.quiet, extra=extra)
        except KeyboardInterrupt:
            interrupted = True
        except WorkerDied:
            print(
                f"{PROG}: a worker process died (out of memory?); finished runs are kept in "
                f"{args.out}; rerun the command to resume",
                file=sys.stderr,
            )
            return 1
    finally:
        store.write_tables(force=True)
        store.close()
    if interrupted:
        print(f"{PROG}: interrupted; finished runs are kept in {args.out}", file=sys.stderr)
        return 130
    for cell in missing:
        print(
            f"{PROG}: {' '.join(cell)}: no lr passed the {mode.source} (see "
            f"{Path(args.out) / ('lr_search.csv' if mode.source == 'search' else 'tuning.csv')}"
            "); its runs were not made",
            file=sys.stderr,
        )
    if not args.quiet:
        ran = len(pending)
        print(
            f"{ran} run(s) in {time.perf_counter() - t0:.1f} s: {counts['ok']} ok, "
            f"{counts['diverged']} diverged, {counts['failed']} failed; {skipped} already done; "
            f"store {args.out}"
        )
    return 1 if counts["failed"] or missing or tuning_failed else 0


if __name__ == "__main__":
    sys.exit(main())
