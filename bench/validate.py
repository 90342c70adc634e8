"""Checks of command-line values, each raising ArgumentError: one line that names the option, the
value and what is allowed (the CLI prints it and exits 2; it is a ValueError for API callers).

Every size a flag controls has a stated maximum, so no single flag can make the planner or a run
exhaust the machine:

    --steps, --probe-steps, --eval-every   at most MAX_STEPS
    evaluations per run                    at most MAX_EVALS (the default period is stretched)
    --seeds                                values 0 .. MAX_SEED, at most MAX_SEED_COUNT of them
    --lr-grid LO:HI:N                      N at most MAX_GRID_POINTS
    runs per command                       at most MAX_RUNS (cells x (seeds + grid points))
    --threads                              at most MAX_THREADS (a warning beyond the cores)
    --opt-arg / --sched-arg values         at most MAX_LITERAL_CHARS characters each

Constructor arguments are checked against the constructor's defaults: a value must have the
default's kind (True/False for a flag, a finite number for a number, a tuple of as many finite
numbers for a tuple) before the constructor, built once on a dummy parameter, judges its range.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

MAX_STEPS = 10**9
MAX_EVALS = 10_000
MAX_SEED = 2**32 - 1
MAX_SEED_COUNT = 10_000
MAX_GRID_POINTS = 200
MAX_RUNS = 100_000
MAX_THREADS = 1024
MAX_LITERAL_CHARS = 1000
MAX_INT = 2**63 - 1  # any other integer option


class ArgumentError(ValueError):
    """A bad command-line value; the message is one line naming the option and what is allowed."""


def _show(text: str, limit: int = 40) -> str:
    """The user's text, shortened for a one-line message."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def integer(flag: str, text: str, *, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """An integer in [minimum, maximum] (minimum 0 or 1), from its decimal digits."""
    what = "a non-negative integer" if minimum == 0 else "a positive integer"
    m = re.fullmatch(r"\s*([+-]?)0*([0-9]+)\s*", str(text))
    if m is None or (m.group(1) == "-" and m.group(2) != "0"):
        raise ArgumentError(f"{flag} must be {what}, got '{_show(text)}'")
    digits = m.group(2)
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise ArgumentError(f"{flag} must be at most {maximum}, got '{_show(text)}'")
    if int(digits) < minimum:
        raise ArgumentError(f"{flag} must be {what}, got '{_show(text)}'")
    return int(digits)


def seeds(text: str) -> list[int]:
    """'N' -> seeds 0..N-1; '0,5,7' (any comma) -> exactly those, in order, without repeats."""
    if "," not in text:
        n = integer("--seeds", text, maximum=MAX_SEED_COUNT)
        return list(range(n))
    items = [s for s in text.split(",") if s.strip()]
    if not items:
        raise ArgumentError(f"--seeds must be N or a comma list of seeds, got '{_show(text)}'")
    values = list(dict.fromkeys(integer("--seeds", s, minimum=0, maximum=MAX_SEED) for s in items))
    if len(values) > MAX_SEED_COUNT:
        raise ArgumentError(f"--seeds lists {len(values)} seeds; at most {MAX_SEED_COUNT}")
    return values


def lr_grid(spec: str) -> list[float]:
    """--lr-grid LO:HI:N (bench.tuning.parse_grid) with N at most MAX_GRID_POINTS."""
    from bench import tuning

    parts = str(spec).split(":")
    if len(parts) == 3:
        n = parts[2].strip()
        if len(n) > 30 or (n.isdigit() and int(n) > MAX_GRID_POINTS):
            raise ArgumentError(
                f"--lr-grid LO:HI:N: N must be at most {MAX_GRID_POINTS}, got '{_show(n)}'"
            )
    try:
        return tuning.parse_grid(spec)
    except ValueError as e:
        raise ArgumentError(_show(str(e), 200)) from None


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads(text: str) -> int:
    """--threads: at most MAX_THREADS; more than the cores here prints a warning."""
    n = integer("--threads", text, maximum=MAX_THREADS)
    if n > cores():
        print(
            f"bench.run: warning: --threads {n} is more than the {cores()} cores here; each run "
            "gets slower, not faster",
            file=sys.stderr,
        )
    return n


def eval_period(explicit: int | None, task_default: int, steps: int, task: str = "") -> int:
    """The evaluation period of a run: --eval-every (at most MAX_EVALS evaluations per run), or
    the task's, stretched so that a long run still makes at most MAX_EVALS evaluations."""
    least = math.ceil(steps / MAX_EVALS)
    if explicit is None:
        return max(min(task_default, steps), least)
    if explicit < least:
        raise ArgumentError(
            f"--eval-every {explicit} evaluates {steps // explicit} times in the {steps} steps "
            f"of {task or 'a run'}; at most {MAX_EVALS}: use --eval-every {least} or more"
        )
    return explicit


def sweep_size(cells: int, n_seeds: int, grid_points: int = 0) -> None:
    """At most MAX_RUNS runs per command: cells x seeds, plus cells x grid points for --lr grid."""
    n = cells * (n_seeds + grid_points)
    if n > MAX_RUNS:
        raise ArgumentError(
            f"this command makes {n} runs ({cells} task x optimizer x schedule cells x "
            f"{n_seeds} seeds{f' + {grid_points} grid points' if grid_points else ''}); at most "
            f"{MAX_RUNS} per command: split it"
        )


def out_dir(text: str) -> str:
    """--out: a folder name (not empty)."""
    if not str(text).strip():
        raise ArgumentError(f"--out must name a folder, got '{text}'")
    return text


# ---------------------------------------------------------------------------- constructor args

_PLAIN = "numbers, True/False/None, quoted strings, tuples and lists of those"


def _not_plain(value: Any) -> str | None:
    """Why JSON would not keep ``value`` as it is (None: finite numbers, bools, None, strings,
    tuples and lists of those)."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_INT else "an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not finite"
    if isinstance(value, tuple | list):
        return next((why for why in map(_not_plain, value) if why), None)
    return f"a {type(value).__name__}"


def parse_kv(flag: str, items: Sequence[str] | None) -> dict[str, Any]:
    """['key=value', ...] with values as Python literals (see :func:`literal`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key.isidentifier():
            raise ArgumentError(f"{flag} expects key=value, got '{_show(item)}'")
        out[key] = literal(flag, key, text)
    return out


def literal(flag: str, key: str, text: str) -> Any:
    """A value given as a Python literal (0.9, (0.9, 0.99), True, 'name'): at most
    MAX_LITERAL_CHARS characters, finite, and of the plain kinds JSON stores."""
    text = text.strip()
    if len(text) > MAX_LITERAL_CHARS:
        raise ArgumentError(
            f"{flag} {key}: the value has {len(text)} characters; at most {MAX_LITERAL_CHARS}"
        )
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ArgumentError(
            f"{flag} {key}: '{_show(text)}' is not a Python literal ({_PLAIN})"
        ) from None
    why = _not_plain(value)
    if why:
        raise ArgumentError(f"{flag} {key}={_show(text)}: {why}; allowed are finite {_PLAIN}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _expected(default: Any) -> tuple[str, Any]:
    """(what is allowed, test) for a value replacing ``default``."""
    if isinstance(default, bool):
        return "True or False", lambda v: isinstance(v, bool)
    if default is None:  # the torch convention for optional switches (foreach, fused)
        return "True, False or None", lambda v: v is None or isinstance(v, bool)
    if _number(default):
        return "a finite number", _number
    if isinstance(default, tuple) and all(_number(d) for d in default):
        n = len(default)
        return (
            f"a tuple of {n} finite numbers such as {default!r}",
            lambda v: isinstance(v, tuple | list) and len(v) == n and all(_number(x) for x in v),
        )
    if isinstance(default, list | tuple) and all(_number(d) for d in default):
        return (
            "a list of finite numbers",
            lambda v: isinstance(v, tuple | list) and all(_number(x) for x in v),
        )
    if isinstance(default, str):
        return "a quoted string", lambda v: isinstance(v, str)
    return "", lambda v: True  # a default of another kind: the constructor judges


def check_kwargs(flag: str, owner: str, defaults: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Each value of ``kwargs`` has the kind of its key's default in ``defaults`` (keys without
    a default are left to the constructor, which names the ones it does not accept)."""
    for key, value in kwargs.items():
        if key not in defaults:
            continue
        allowed, ok = _expected(defaults[key])
        if not ok(value):
            raise ArgumentError(
                f"{flag} {key}={_show(repr(value))}: {owner}'s {key} must be {allowed}"
            )


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return _show(lines[0], 300) if lines else type(e).__name__


def optimizer_defaults(name: str) -> dict[str, Any]:
    """Every keyword of optimizer ``name``'s constructor with its default (the hyperparameters
    of ``optimizers.defaults`` and the path switches such as foreach / fused)."""
    import torch

    import optimizers

    instance = optimizers.create(name, [torch.zeros(1, requires_grad=True)], lr=1e-3)
    params = inspect.signature(type(instance).__init__).parameters
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(optimizers.defaults(name))
    return out


def check_optimizer(name: str, opt_args: dict[str, Any]) -> None:
    """--opt-arg values for optimizer ``name``: each of its default's kind, then accepted by the
    constructor (built once on a dummy parameter; whatever it raises becomes one line)."""
    import torch

    import optimizers

    check_kwargs("--opt-arg", name, optimizer_defaults(name), opt_args)
    try:
        optimizers.create(name, [torch.zeros(1, requires_grad=True)], lr=1e-3, **opt_args)
    except Exception as e:  # any refusal of the constructor is a bad value
        given = " ".join(f"{k}={v!r}" for k, v in opt_args.items())
        raise ArgumentError(f"--opt-arg {_show(given, 80)}: {_first_line(e)}") from None


def check_schedule(name: str, lengths: Iterable[int], warmup: int, sched_args: dict) -> None:
    """--sched-arg values for schedule ``name``: each of its default's kind (for the first run
    length), then accepted by the constructor for every run length."""
    import torch

    import optimizers
    import schedulers

    lengths = list(lengths)
    defaults = schedulers.defaults(name, lengths[0], 1.0) if lengths else {}
    check_kwargs("--sched-arg", name, defaults, sched_args)
    for n in lengths:
        dummy = optimizers.create("sgd", [torch.zeros(1, requires_grad=True)], lr=0.1)
        try:
            schedulers.create(name, dummy, n, warmup_steps=warmup, **sched_args)
        except Exception as e:  # any refusal of the constructor is a bad value
            given = " ".join(f"{k}={v!r}" for k, v in sched_args.items()) or name
            raise ArgumentError(f"--sched-arg {_show(given, 80)}: {_first_line(e)}") from None


# ---------------------------------------------------------------------------- data


def batch_fits(configs: Iterable[Any]) -> None:
    """Every run's batch size is at most its training set (call once the data is on disk)."""
    from bench import data as D
    from bench import tasks as T

    seen = set()
    for c in configs:
        task = T.get(c.task)
        key = (task.dataset, c.batch_size, c.data_dir)
        known = task.dataset == "mnist1d" or task.dataset in D.TRAIN_SIZES
        if not known or c.batch_size is None or key in seen:  # a user's data: its task checks
            continue
        seen.add(key)
        n = D.train_size(task.dataset, c.data_dir)
        if c.batch_size > n:
            raise ArgumentError(
                f"--batch-size {c.batch_size} exceeds the {n} training samples of {c.task}; "
                f"at most {n}"
            )
