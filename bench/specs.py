"""Optimizer and task specs: the strings `--optim` and `--task` accept, resolved to objects.

A spec is, in this order of precedence:

* a built-in name: ``adam`` (the registry in ``optimizers/__init__.py``), ``rosenbrock``
  (``bench/tasks.py``);
* a short name registered by an installed distribution under the entry-point group
  ``optbench.optimizers`` / ``optbench.tasks`` (``lion = "mypkg.lion:Lion"`` in its pyproject);
* an import path, ``module:attr`` (``mypkg.lion:Lion``, ``mypkg.tasks:Suite.tiny``) or dotted
  (``torch.optim.AdamW``: the top-level package is imported, the rest are its attributes or
  submodules), resolved from ``sys.path`` and then the current directory.

No code is imported from a directory another user can write: the current directory is added to
``sys.path`` only when no other user can write to it, and a module or package that lives in such
a directory (``/tmp``, say, or a ``sys.path`` entry that is) is refused before any of its code
runs. Every failure is a ``ValueError`` with a one-line message.

    >>> s = resolve_optimizer("torch.optim.AdamW")
    >>> s.origin, s.distribution, s.default_lr()
    ('import', 'torch', 0.001)
    >>> split_opt_args({"torch.optim.AdamW:weight_decay": 0.1, "eps": 1e-6}, [s])
    {'torch.optim.AdamW': {'eps': 1e-06, 'weight_decay': 0.1}}
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import importlib.util
import inspect
import os
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from bench.validate import literal

OPTIMIZER_GROUP = "optbench.optimizers"
TASK_GROUP = "optbench.tasks"
Kind = Literal["optimizers", "tasks"]
_GROUPS: dict[str, str] = {"optimizers": OPTIMIZER_GROUP, "tasks": TASK_GROUP}


def _one_line(error: BaseException) -> str:
    """``TypeName: message`` on one line (a multi-line message is joined with ' | ')."""
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ---------------------------------------------------------------------------- safe imports


def writable_by_others(path: str | os.PathLike) -> bool:
    """True when a user other than this one (or root) can change what ``path`` holds: it is
    world-writable, or owned by another non-root user."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_mode & stat.S_IWOTH) or st.st_uid not in (0, os.getuid())


def _add_cwd_to_path() -> None:
    """Append the current directory to ``sys.path`` (after the installed packages, so a file
    here never shadows one) unless another user can write to it."""
    cwd = os.getcwd()
    if writable_by_others(cwd):
        return
    entries = {os.path.realpath(p or ".") for p in sys.path if isinstance(p, str)}
    if os.path.realpath(cwd) not in entries:
        sys.path.append(cwd)


class UnsafeLocation(ValueError):
    """A module that would be imported from a directory other users can write."""


def _check_location(name: str) -> None:
    """Refuse a module or package that would load from a directory other users can write
    (checked before any of its code runs; the parent package is imported already)."""
    if name in sys.modules:
        return
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return  # import_module reports it
    if found is None:
        return
    if found.submodule_search_locations:  # a package: its folder and the folder holding it
        dirs = [d for loc in found.submodule_search_locations for d in (loc, os.path.dirname(loc))]
    elif found.origin and os.path.isabs(found.origin):
        dirs = [os.path.dirname(found.origin)]
    else:
        dirs = []  # built-in or frozen module
    for d in dirs:
        if writable_by_others(d):
            raise UnsafeLocation(
                f"refusing to import '{name}' from {d}: other users can write to that directory"
            )


def _import(module: str) -> Any:
    """``importlib.import_module``, one package level at a time, each behind the location
    check; ModuleNotFoundError passes through (the caller decides whether the name was a module
    at all)."""
    importlib.invalidate_caches()
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        _check_location(".".join(parts[:i]))
        imported = importlib.import_module(".".join(parts[:i]))
    return imported


def _module_error(module: str, error: BaseException) -> ValueError:
    return ValueError(f"module '{module}' does not import: {_one_line(error)}")


def _getattr_path(obj: Any, module: str, attrs: Sequence[str]) -> Any:
    where = module
    for name in attrs:
        if not hasattr(obj, name) and inspect.ismodule(obj):
            try:  # a submodule not imported by its package
                obj = _import(f"{where}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{where}.{name}":
                    raise _module_error(f"{where}.{name}", e) from None
            except UnsafeLocation:
                raise
            except Exception as e:
                raise _module_error(f"{where}.{name}", e) from None
            else:
                where = f"{where}.{name}"
                continue
        if not hasattr(obj, name):
            raise ValueError(f"'{where}' has no attribute '{name}'")
        obj = getattr(obj, name)
        where = f"{where}.{name}"
    return obj


def import_object(path: str) -> Any:
    """The object an import path names: ``pkg.mod:Attr.sub`` or dotted ``pkg.mod.Attr``.

    Raises ValueError (one line) when the module does not import (its own error included), when
    an attribute is missing, or when the module lies where other users can write.
    """
    _add_cwd_to_path()
    if ":" in path:
        module, _, attr = path.partition(":")
        if not module or not attr or ":" in attr:
            raise ValueError(f"'{path}' is not an import path; write module:attribute")
        try:
            obj = _import(module)
        except UnsafeLocation:
            raise
        except Exception as e:
            raise _module_error(module, e) from None
        return _getattr_path(obj, module, attr.split("."))
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ValueError(f"'{path}' is not an import path; write package.module.Class")
    try:  # the top-level package; the rest are attributes or submodules, imported as reached
        obj = _import(parts[0])
    except ModuleNotFoundError as e:
        if e.name == parts[0]:
            raise ValueError(f"cannot import '{path}': no module named '{parts[0]}'") from None
        raise _module_error(parts[0], e) from None
    except UnsafeLocation:
        raise
    except Exception as e:
        raise _module_error(parts[0], e) from None
    return _getattr_path(obj, parts[0], parts[1:])


def _top_level_names(dist: metadata.Distribution) -> set[str]:
    """The top-level modules a distribution installs: its ``top_level.txt``, else the first
    path component of each ``RECORD`` line (read as text: ``Distribution.files`` builds a path
    object per file, seconds for all of site-packages)."""
    declared = dist.read_text("top_level.txt")
    if declared is not None:
        return set(declared.split())
    record = dist.read_text("RECORD") or ""
    return {
        line.split(",", 1)[0].split("/", 1)[0].removesuffix(".py") for line in record.splitlines()
    }


def distribution_of(module: str) -> tuple[str | None, str | None]:
    """``(distribution name, version)`` of the installed distribution that provides ``module``'s
    top-level package, or ``(None, None)`` (a module in the current directory, say)."""
    top = module.partition(".")[0]
    found = sorted(
        (d.metadata["Name"], d.version)
        for d in metadata.distributions()
        if top in _top_level_names(d)
    )
    return found[0] if found else (None, None)


# ---------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class Plugin:
    """One entry point of ``optbench.optimizers`` / ``optbench.tasks``."""

    name: str
    value: str  # "module:attr"
    distribution: str | None
    version: str | None
    shadowed: bool  # a built-in of the same name wins

    @property
    def origin(self) -> str:
        return f"entry-point:{self.distribution}"


def _entry_points(kind: Kind) -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=_GROUPS[kind]))


def _dist(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist is not None else (None, None)


def plugins(kind: Kind) -> list[Plugin]:
    """The installed entry points of ``kind`` ("optimizers" or "tasks"), sorted by name, for
    ``--list``; nothing is imported."""
    builtin = set(_builtin_names(kind))
    out = []
    for ep in _entry_points(kind):
        dist, version = _dist(ep)
        out.append(Plugin(ep.name, ep.value, dist, version, ep.name in builtin))
    return sorted(out, key=lambda p: (p.name, p.distribution or ""))


def _load_entry_point(kind: Kind, name: str) -> tuple[Any, str, str | None] | None:
    """``(object, origin, version)`` of the entry point ``name``, or None if there is none."""
    eps = [ep for ep in _entry_points(kind) if ep.name == name]
    if not eps:
        return None
    if len(eps) > 1:
        owners = ", ".join(f"{d} {v}" for d, v in map(_dist, eps))
        raise ValueError(
            f"{kind[:-1]} '{name}' is registered by several distributions ({owners}); "
            "give its import path instead"
        )
    (ep,) = eps
    dist, version = _dist(ep)
    try:
        obj = import_object(f"{ep.module}:{ep.attr}" if ep.attr else ep.module)
    except ValueError as e:
        raise ValueError(f"entry point '{name}' of {dist} ({ep.value}): {e}") from None
    return obj, f"entry-point:{dist}", version


def _builtin_names(kind: Kind) -> list[str]:
    if kind == "optimizers":
        import optimizers

        return optimizers.available()
    from bench import tasks

    return tasks.available()


def _unknown(kind: Kind, spec: str) -> ValueError:
    names = _builtin_names(kind) + [p.name for p in plugins(kind) if not p.shadowed]
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    example = "mypkg.lion:Lion" if kind == "optimizers" else "mypkg.tasks:tiny_cnn"
    return ValueError(
        f"unknown {kind[:-1]} '{spec}'; {hint}give one of {', '.join(names)} "
        f"or an import path such as {example}"
    )


# ---------------------------------------------------------------------------- optimizers


def _signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def default_lr(cls: type[torch.optim.Optimizer]) -> float | None:
    """The default of the constructor's ``lr`` argument, or None when it has none (or it is
    not a number)."""
    sig = _signature(cls)
    param = sig.parameters.get("lr") if sig else None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    value = param.default
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class OptimizerSpec:
    """A resolved optimizer: ``create(params, **kwargs)`` builds it.

    ``spec`` is the string the user gave (the optimizer's name in every record); ``origin`` is
    ``"builtin"``, ``"import"`` or ``"entry-point:<distribution>"``; ``distribution`` and
    ``version`` name the installed distribution the class came from (None for built-ins and for
    modules outside any distribution); ``fixed`` holds the arguments a built-in name implies
    (``nesterov`` is Momentum with ``nesterov=True``).
    """

    spec: str
    cls: type[torch.optim.Optimizer]
    origin: str
    version: str | None = None
    distribution: str | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def accepted(self) -> list[str] | None:
        """The constructor's keyword arguments (``params`` and the fixed ones excluded), or
        None when it takes ``**kwargs`` (or has no readable signature)."""
        sig = _signature(self.cls)
        if sig is None:
            return None
        names = []
        for i, (name, p) in enumerate(sig.parameters.items()):
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                return None
            if i == 0 or p.kind is inspect.Parameter.VAR_POSITIONAL or name in self.fixed:
                continue  # the first argument is the params
            names.append(name)
        return names

    def accepts(self, key: str) -> bool:
        names = self.accepted()
        return names is None or key in names

    def default_lr(self) -> float | None:
        if "lr" in self.fixed:
            return float(self.fixed["lr"])
        return default_lr(self.cls)

    def check_keys(self, kwargs: Mapping[str, Any]) -> None:
        """ValueError naming the first keyword the constructor does not take."""
        names = self.accepted()
        for key in kwargs:
            if names is not None and key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(
                    f"optimizer '{self.spec}' does not accept '{key}'; {hint}"
                    f"it accepts {', '.join(names) or 'no keyword arguments'}"
                )

    def create(self, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
        """The optimizer over ``params``; ValueError (one line) when the constructor rejects an
        argument."""
        self.check_keys(kwargs)
        try:
            return self.cls(params, **self.fixed, **kwargs)
        except Exception as e:
            shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise ValueError(
                f"optimizer '{self.spec}' rejects its arguments ({shown}): {_one_line(e)}"
            ) from None

    def check(self, kwargs: Mapping[str, Any]) -> None:
        """Build once on a dummy parameter, so a bad argument stops a sweep before it starts."""
        self.create([torch.zeros(1, requires_grad=True)], **kwargs)


def _as_optimizer_class(obj: Any, spec: str) -> type[torch.optim.Optimizer]:
    if not (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)):
        what = f"a {type(obj).__name__}" if not isinstance(obj, type) else f"class {obj.__name__}"
        raise ValueError(f"'{spec}' is {what}, not a subclass of torch.optim.Optimizer")
    return obj


def class_spec(cls: type[torch.optim.Optimizer]) -> str:
    """The import path of a class, ``module:QualName``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_optimizer(spec: str | type[torch.optim.Optimizer] | OptimizerSpec) -> OptimizerSpec:
    """Resolve ``spec`` (a built-in name, an entry-point name, an import path, or a class) to an
    :class:`OptimizerSpec`; ValueError (one line) when it does not resolve."""
    if isinstance(spec, OptimizerSpec):
        return spec
    if isinstance(spec, type):
        cls = _as_optimizer_class(spec, class_spec(spec))
        dist, version = distribution_of(cls.__module__)
        return OptimizerSpec(class_spec(cls), cls, "import", version, dist)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an optimizer spec is a name or an import path, got {spec!r}")
    spec = spec.strip()
    import optimizers

    if spec in optimizers.available():
        return _builtin_optimizer(spec)
    loaded = _load_entry_point("optimizers", spec)
    if loaded is not None:
        obj, origin, version = loaded
        cls = _as_optimizer_class(obj, spec)
        return OptimizerSpec(spec, cls, origin, version, origin.partition(":")[2])
    if "." not in spec and ":" not in spec:
        raise _unknown("optimizers", spec)
    cls = _as_optimizer_class(import_object(spec), spec)
    dist, version = distribution_of(cls.__module__)
    return OptimizerSpec(spec, cls, "import", version, dist)


def _builtin_optimizer(name: str) -> OptimizerSpec:
    """Through the registry's public API: the class is what ``create`` builds, the fixed
    arguments are the registry defaults that differ from the class's own."""
    import optimizers

    cls = type(optimizers.create(name, [torch.zeros(1, requires_grad=True)], lr=1e-3))
    sig = _signature(cls)
    own = {k: p.default for k, p in sig.parameters.items()} if sig else {}
    fixed = {k: v for k, v in optimizers.defaults(name).items() if own.get(k, v) != v}
    return OptimizerSpec(name, cls, "builtin", fixed=fixed)


# ---------------------------------------------------------------------------- --opt-arg


def parse_opt_args(
    items: Iterable[str], flag: str = "--opt-arg", owner: str = "OPTIMIZER"
) -> dict[str, Any]:
    """``["weight_decay=0.1", "torch.optim.AdamW:betas=(0.9, 0.95)"]`` -> a dict whose keys keep
    their optimizer prefix; values are Python literals (numbers, True/False, tuples, quoted
    strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        prefix, _, name = key.rpartition(":")
        if not sep or not name.isidentifier() or (":" in key and not prefix):
            raise ValueError(f"{flag} expects key=value or {owner}:key=value, got '{item}'")
        out[key] = literal(flag, key, value)
    return out


def split_opt_args(
    opt_args: Mapping[str, Any], specs: Sequence[OptimizerSpec]
) -> dict[str, dict[str, Any]]:
    """Keyword arguments per optimizer, keyed by ``spec.spec``.

    ``"SPEC:key"`` goes to that optimizer only (an error if it does not accept ``key``, or if no
    optimizer of the run is ``SPEC``); an unprefixed ``"key"`` goes to every optimizer whose
    constructor accepts it (an error if none does). A prefixed key wins over the same key
    unprefixed.
    """
    by_spec = {s.spec: s for s in specs}
    out: dict[str, dict[str, Any]] = {name: {} for name in by_spec}
    prefixed: dict[str, dict[str, Any]] = {name: {} for name in by_spec}
    for key, value in opt_args.items():
        prefix, _, name = key.rpartition(":")
        if prefix:
            if prefix not in by_spec:
                raise ValueError(
                    f"--opt-arg {key}: '{prefix}' is not an optimizer of this run "
                    f"({', '.join(by_spec)})"
                )
            by_spec[prefix].check_keys({name: value})
            prefixed[prefix][name] = value
            continue
        takers = [s for s in by_spec.values() if s.accepts(name)]
        if not takers:
            raise ValueError(
                f"--opt-arg {name}: no optimizer of this run accepts '{name}' "
                f"({', '.join(by_spec)}); prefix it with the optimizer, e.g. SPEC:{name}=..."
            )
        for s in takers:
            out[s.spec][name] = value
    for spec, kwargs in prefixed.items():
        out[spec].update(kwargs)
    return out


# ---------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskSpec:
    """A resolved task: ``task.build(seed, device, data_dir)`` gives the problem."""

    spec: str
    task: Any
    origin: str
    version: str | None = None
    distribution: str | None = None


def _is_task(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "build", None))


def _as_task(obj: Any, spec: str) -> Any:
    """The object itself when it is a task (has ``build``), else the task a function (or
    class) of no arguments returns."""
    if _is_task(obj):
        return obj
    if not callable(obj):
        raise ValueError(
            f"'{spec}' is a {type(obj).__name__}, not a task (an object with "
            "build(seed, device, data_dir)) or a function returning one"
        )
    try:
        made = obj()
    except Exception as e:
        raise ValueError(f"task factory '{spec}' raised {_one_line(e)}") from None
    if not _is_task(made):
        raise ValueError(
            f"task factory '{spec}' returned a {type(made).__name__}, not a task (an object "
            "with build(seed, device, data_dir))"
        )
    return made


def resolve_task(spec: str | Any) -> TaskSpec:
    """Resolve ``spec`` (a built-in task name, an entry-point name, an import path, or a task
    object) to a :class:`TaskSpec`; ValueError (one line) when it does not resolve."""
    if isinstance(spec, TaskSpec):
        return spec
    if not isinstance(spec, str):
        task = _as_task(spec, repr(spec))
        name = getattr(task, "name", None) or type(task).__name__
        return TaskSpec(str(name), task, "object")
    spec = spec.strip()
    from bench import tasks

    if spec in tasks.available():
        return TaskSpec(spec, tasks.TASKS[spec], "builtin")
    loaded = _load_entry_point("tasks", spec)
    if loaded is not None:
        obj, origin, version = loaded
        return TaskSpec(spec, _as_task(obj, spec), origin, version, origin.partition(":")[2])
    if "." not in spec and ":" not in spec:
        raise _unknown("tasks", spec)
    obj = import_object(spec)
    dist, version = distribution_of(spec.partition(":")[0])  # a task is often an instance
    return TaskSpec(spec, _as_task(obj, spec), "import", version, dist)


__all__ = [
    "OPTIMIZER_GROUP",
    "TASK_GROUP",
    "OptimizerSpec",
    "Plugin",
    "TaskSpec",
    "class_spec",
    "default_lr",
    "distribution_of",
    "import_object",
    "parse_opt_args",
    "plugins",
    "resolve_optimizer",
    "resolve_task",
    "split_opt_args",
    "writable_by_others",
]
