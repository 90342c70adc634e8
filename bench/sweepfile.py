"""Sweep files: ``python -m bench.run --config sweep.toml``, a sweep's options written down.

The keys are the long option names of ``bench.run`` (``batch_size`` or ``batch-size``), with
TOML values instead of text; flags given on the command line override the file. The same sweep
written as flags or as a file is the same plan, run for run (it is turned into those flags)::

    optim = ["adam", "torch.optim.AdamW"]      # --optim adam,torch.optim.AdamW
    sched = ["constant", "staircase"]
    task = "mnist1d_mlp"
    seeds = 3                                  # seeds 0, 1, 2; a list [0, 5] gives those seeds
    steps = 1000
    lr = 1e-3                                  # or "search" / "grid"
    out = "results/adamw"
    force = false                              # on/off options are booleans

    [opt_args]                                 # --opt-arg KEY=VALUE: every optimizer taking it
    eps = 1e-8
    [opt_args."torch.optim.AdamW"]             # --opt-arg torch.optim.AdamW:weight_decay=0.1
    weight_decay = 0.1
    betas = [0.9, 0.95]                        # arrays become tuples
    [sched_args.staircase]                     # --sched-arg staircase:decay_rate=0.5
    decay_rate = 0.5

``bench.sweep(**options)`` takes the same keys as keyword arguments (``to_argv`` serves both).
Paths are relative to the current directory, as on the command line.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Keys holding per-optimizer / per-schedule constructor arguments, and their flags.
TABLES = {"opt_args": "--opt-arg", "sched_args": "--sched-arg"}
#: Keys whose value may be a list (joined with commas into the flag's text).
LISTS = ("optim", "sched", "task", "seeds")
_NOT_IN_FILES = ("config", "list", "help")


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a TOML sweep file; ValueError (one line) when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"--config {path}: is a folder, not a sweep file") from None
    except OSError as e:
        raise ValueError(f"--config {path}: cannot read it: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: not valid TOML: {e}") from None


def options() -> dict[str, tuple[str, bool]]:
    """Each settable key -> (its flag, whether it is an on/off option), from bench.run's
    parser (so a new flag is a new key)."""
    from bench import cli

    out = {}
    for action in cli.build_parser()._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs:
            continue
        key = longs[0][2:].replace("-", "_")
        if key in _NOT_IN_FILES:
            continue
        if action.dest in ("opt_arg", "sched_arg"):
            key = action.dest + "s"
        out[key] = (longs[0], action.nargs == 0)
    return out


def to_argv(
    settings: Mapping[str, Any], source: str = "sweep file", what: str = "key"
) -> list[str]:
    """``bench.run`` arguments for the settings (keys: long option names); ValueError naming
    ``source`` and the key (``what`` it is called there) for an unknown key or a value of the
    wrong type."""
    known = options()
    argv: list[str] = []
    for raw_key, value in settings.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"{source}: unknown {what} '{raw_key}'{hint} ({what}s are bench.run's long "
                "option names, see python -m bench.run --help)"
            )
        flag, is_switch = known[key]
        where = f"{source}: {key}"
        if key in TABLES:
            argv += _table(where, flag, value)
        elif is_switch:
            if not isinstance(value, bool):
                raise ValueError(f"{where} is on/off: write true or false, got {value!r}")
            argv += [flag] if value else []
        elif value is None:
            continue  # the default, as when the flag is left out
        else:
            argv += [f"{flag}={_text(where, key, value)}"]
    return argv


def _text(where: str, key: str, value: Any) -> str:
    """A value as the flag's text: lists joined with commas, numbers exactly."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: true/false is only for on/off options, got {value!r}")
    if key == "target" and isinstance(value, Mapping):
        return ",".join(f"{task}={_scalar(where, v)}" for task, v in value.items())
    if isinstance(value, Sequence) and not isinstance(value, str):
        if key not in LISTS:
            raise ValueError(f"{where} takes one value, got a list")
        items = [_scalar(where, v) for v in value]
        if not items or any(not i or "," in i for i in items):
            raise ValueError(f"{where}: give a non-empty list of names without commas")
        # one seed in a list is that seed; a bare number N means seeds 0 .. N-1
        return ",".join(items) + ("," if key == "seeds" and len(items) == 1 else "")
    return _scalar(where, value)


def _scalar(where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: expected a string or a number, got {value!r}")
    return repr(value) if isinstance(value, float) else str(value)


def _table(where: str, flag: str, table: Any) -> list[str]:
    """``{key: value}`` and ``{PREFIX: {key: value}}`` -> flag KEY=VALUE / PREFIX:KEY=VALUE."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} is a table: {{key = value}}, or [{where.split(': ')[-1]}.NAME]")
    argv = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            argv += [
                f"{flag}={key}:{k}={_literal(f'{where}.{key}.{k}', v)}" for k, v in value.items()
            ]
        else:
            argv.append(f"{flag}={key}={_literal(f'{where}.{key}', value)}")
    return argv


def _literal(where: str, value: Any) -> str:
    """A Python literal for the value (arrays become tuples) that reads back as the value."""

    def tuples(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return tuple(tuples(x) for x in v)
        if isinstance(v, Mapping):
            return {k: tuples(x) for k, x in v.items()}
        return v

    value = tuples(value)
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    finite = not (isinstance(value, float) and not math.isfinite(value))
    if not same or not finite:
        raise ValueError(f"{where}: {value!r} is not a value a constructor argument can take here")
    return text
