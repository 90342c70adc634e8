"""bench.specs: optimizer and task specs from built-in names, import paths and entry points."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import optimizers
from bench import specs, tasks
from bench.specs import (
    parse_opt_args,
    plugins,
    resolve_optimizer,
    resolve_task,
    split_opt_args,
)

LION = '''
import torch


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): theta -= lr * sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(b1 * m + (1 - b1) * p.grad), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


class NoDefaultLr(torch.optim.SGD):
    def __init__(self, params, lr, momentum=0.0):
        super().__init__(params, lr=lr, momentum=momentum)


class AnyKwargs(torch.optim.SGD):
    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)


def helper():
    return 1


NOT_A_CLASS = 3
'''

TASKS = """
from bench import tasks

rosen = tasks.TASKS["rosenbrock"]


def tiny():
    return tasks.TASKS["beale"]


def not_a_task():
    return 42


def broken():
    raise RuntimeError("no data")
"""


@pytest.fixture
def clean_imports(monkeypatch):
    """sys.path and sys.modules as they were, after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_package(root: Path, name: str, files: dict[str, str]) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for filename, text in files.items():
        (pkg / filename).write_text(textwrap.dedent(text))
    return pkg


@pytest.fixture
def userpkg(tmp_path, clean_imports):
    """A package ``userpkg`` (a Lion optimizer, some tasks) in a temporary sys.path entry."""
    write_package(tmp_path, "userpkg", {"lion.py": LION, "tasks.py": TASKS})
    sys.path.insert(0, str(tmp_path))
    return tmp_path


def one_line_error(fn, *args, match: str):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("name", optimizers.available())
def test_builtin_names_resolve_to_the_registry(name):
    s = resolve_optimizer(name)
    assert (s.spec, s.origin, s.version, s.distribution) == (name, "builtin", None, None)
    opt = s.create([torch.zeros(2, requires_grad=True)], lr=0.1)
    ref = optimizers.create(name, [torch.zeros(2, requires_grad=True)], lr=0.1)
    assert type(opt) is type(ref) is s.cls
    assert opt.defaults == ref.defaults
    assert s.default_lr() == optimizers.defaults(name)["lr"]


def test_nesterov_is_momentum_with_its_fixed_argument():
    s = resolve_optimizer("nesterov")
    assert s.cls is optimizers.Momentum and dict(s.fixed) == {"nesterov": True}
    assert not s.accepts("nesterov")  # fixed by the name
    assert s.create([torch.zeros(1, requires_grad=True)]).defaults["nesterov"] is True


@pytest.mark.parametrize("spec", ["torch.optim.AdamW", "torch.optim:AdamW", " torch.optim.AdamW "])
def test_import_path_of_an_installed_class(spec):
    s = resolve_optimizer(spec)
    assert s.cls is torch.optim.AdamW and s.origin == "import" and s.spec == spec.strip()
    assert (s.distribution, s.version) == ("torch", metadata.version("torch"))
    assert s.default_lr() == 1e-3


def test_class_object_resolves_to_its_import_path():
    s = resolve_optimizer(torch.optim.SGD)
    assert s.spec == "torch.optim.sgd:SGD" and s.cls is torch.optim.SGD
    assert s.version == metadata.version("torch")


def test_user_package_on_sys_path(userpkg):
    for spec in ("userpkg.lion:Lion", "userpkg.lion.Lion"):
        s = resolve_optimizer(spec)
        assert s.cls.__name__ == "Lion" and s.origin == "import"
        assert (s.distribution, s.version) == (None, None)  # not an installed distribution
        assert s.default_lr() == 1e-4
        assert s.accepted() == ["lr", "betas", "weight_decay"]
    assert resolve_optimizer("userpkg.lion:NoDefaultLr").default_lr() is None
    assert resolve_optimizer("userpkg.lion:AnyKwargs").accepted() is None


def test_current_directory_is_searched_after_sys_path(tmp_path, clean_imports, monkeypatch):
    (tmp_path / "cwd_lion.py").write_text(LION)
    monkeypatch.chdir(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(tmp_path))]
    s = resolve_optimizer("cwd_lion:Lion")
    assert s.cls.__module__ == "cwd_lion"
    assert sys.path[-1] == str(tmp_path)


def test_world_writable_current_directory_is_not_searched(tmp_path, clean_imports, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "planted_lion.py").write_text(LION)
    shared.chmod(0o777)
    monkeypatch.chdir(shared)
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    one_line_error(resolve_optimizer, "planted_lion:Lion", match="No module named 'planted_lion'")
    assert str(shared) not in sys.path


def test_world_writable_sys_path_entry_is_refused(tmp_path, clean_imports):
    shared = tmp_path / "shared"
    write_package(shared, "plantedpkg", {"lion.py": LION})
    shared.chmod(0o777)
    sys.path.insert(0, str(shared))
    msg = one_line_error(
        resolve_optimizer, "plantedpkg.lion:Lion", match="refusing to import 'plantedpkg'"
    )
    assert str(shared) in msg
    assert "plantedpkg" not in sys.modules and "plantedpkg.lion" not in sys.modules


def test_world_writable_package_directory_is_refused(tmp_path, clean_imports):
    pkg = write_package(tmp_path, "openpkg", {"lion.py": LION})
    pkg.chmod(0o777)
    sys.path.insert(0, str(tmp_path))
    one_line_error(resolve_optimizer, "openpkg.lion.Lion", match="other users can write")


def test_world_writable_subpackage_is_refused(tmp_path, clean_imports):
    write_package(tmp_path, "closedpkg", {})
    sub = write_package(tmp_path / "closedpkg", "sub", {"lion.py": LION})
    sub.chmod(0o777)
    sys.path.insert(0, str(tmp_path))
    for spec in ("closedpkg.sub.lion:Lion", "closedpkg.sub.lion.Lion"):
        one_line_error(resolve_optimizer, spec, match="refusing to import 'closedpkg.sub'")
    assert "closedpkg.sub" not in sys.modules


def test_module_that_does_not_import(userpkg):
    (userpkg / "userpkg" / "bad.py").write_text("raise RuntimeError('first line\\nsecond line')\n")
    (userpkg / "userpkg" / "needs.py").write_text("import not_installed_dep_xyz\n")
    (userpkg / "userpkg" / "valerr.py").write_text("raise ValueError('bad\\nconfig')\n")
    msg = one_line_error(resolve_optimizer, "userpkg.bad:Opt", match="'userpkg.bad' does not")
    assert "RuntimeError: first line | second line" in msg
    msg = one_line_error(resolve_optimizer, "userpkg.needs.Opt", match="'userpkg.needs' does not")
    assert "No module named 'not_installed_dep_xyz'" in msg
    (userpkg / "valerr_top.py").write_text("raise ValueError('bad\\nconfig')\n")
    one_line_error(resolve_optimizer, "valerr_top.Opt", match="'valerr_top' does not import")
    for spec in ("userpkg.valerr:Opt", "userpkg.valerr.Opt", "userpkg:valerr.Opt"):
        msg = one_line_error(resolve_optimizer, spec, match="'userpkg.valerr' does not import")
        assert msg.endswith("ValueError: bad | config")
    (userpkg / "userpkg" / "syntax.py").write_text("def f(:\n")
    one_line_error(resolve_optimizer, "userpkg.syntax:Opt", match="SyntaxError")
    one_line_error(resolve_optimizer, "nopkg_xyz.mod.Opt", match="no module named 'nopkg_xyz'")
    one_line_error(resolve_optimizer, "nopkg_xyz.mod:Opt", match="No module named 'nopkg_xyz'")


def test_missing_attribute(userpkg):
    one_line_error(resolve_optimizer, "userpkg.lion:Lino", match="'userpkg.lion' has no attribute")
    one_line_error(resolve_optimizer, "torch.optim.AdamX", match="'torch.optim' has no attribute")
    one_line_error(resolve_optimizer, "userpkg.lion:Lion.inner", match="has no attribute 'inner'")


@pytest.mark.parametrize(
    ("spec", "what"),
    [
        ("userpkg.lion:helper", "a function"),
        ("userpkg.lion:NOT_A_CLASS", "a int"),
        ("torch.nn.Linear", "class Linear"),
        ("userpkg.lion", "a module"),
    ],
)
def test_not_an_optimizer_subclass(userpkg, spec, what):
    msg = one_line_error(resolve_optimizer, spec, match="not a subclass of torch.optim.Optimizer")
    assert what in msg


@pytest.mark.parametrize("spec", ["adm", "a:b:c", ":Lion", "mod:", "torch..optim.Adam", ""])
def test_malformed_or_unknown_specs(spec):
    one_line_error(resolve_optimizer, spec, match=".")


def test_unknown_name_suggests_a_close_one():
    msg = one_line_error(resolve_optimizer, "adm", match="unknown optimizer 'adm'")
    assert "did you mean 'adam'?" in msg and "import path" in msg


def test_constructor_rejects_an_argument():
    s = resolve_optimizer("torch.optim.Adam")
    with pytest.raises(ValueError, match=r"'torch.optim.Adam' rejects its arguments \(lr=-1.0\)"):
        s.create([torch.zeros(1, requires_grad=True)], lr=-1.0)
    with pytest.raises(ValueError, match=r"Invalid beta parameter") as info:
        s.check({"betas": (1.5, 0.9)})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"does not accept 'beta'; did you mean 'betas'\?"):
        s.check({"beta": 0.9})
    with pytest.raises(ValueError, match="does not accept 'nesterov'"):
        resolve_optimizer("nesterov").check({"nesterov": False})


def test_default_lr():
    assert specs.default_lr(torch.optim.SGD) == 1e-3
    assert specs.default_lr(torch.optim.Adadelta) == 1.0
    assert specs.default_lr(torch.optim.LBFGS) == 1.0

    class NoLr(torch.optim.Optimizer):
        def __init__(self, params, beta=0.9):
            super().__init__(params, {"beta": beta})

    class LrNone(torch.optim.SGD):
        def __init__(self, params, lr=None):
            super().__init__(params, lr=lr or 0.1)

    assert specs.default_lr(NoLr) is None and specs.default_lr(LrNone) is None


# ---------------------------------------------------------------------------- --opt-arg


def test_parse_opt_args():
    parsed = parse_opt_args(
        ["weight_decay=0.1", "torch.optim.AdamW:betas=(0.9, 0.95)", "mypkg.lion:Lion:eps=1e-6"]
    )
    assert parsed == {
        "weight_decay": 0.1,
        "torch.optim.AdamW:betas": (0.9, 0.95),
        "mypkg.lion:Lion:eps": 1e-6,
    }
    for bad in ["weight_decay", "=1", "torch.optim.AdamW:=1", ":eps=1", "a b=1", "eps=1e-"]:
        with pytest.raises(ValueError) as info:
            parse_opt_args([bad])
        assert "\n" not in str(info.value) and "--opt-arg" in str(info.value)


def test_split_opt_args_per_optimizer_and_shared(userpkg):
    run = [resolve_optimizer(s) for s in ("adam", "sgd", "torch.optim.AdamW", "userpkg.lion:Lion")]
    got = split_opt_args(
        {
            "weight_decay": 0.01,  # all four accept it
            "momentum": 0.9,  # sgd only
            "torch.optim.AdamW:weight_decay": 0.1,  # wins over the shared value
            "userpkg.lion:Lion:betas": (0.95, 0.98),
        },
        run,
    )
    assert got == {
        "adam": {"weight_decay": 0.01},
        "sgd": {"weight_decay": 0.01, "momentum": 0.9},
        "torch.optim.AdamW": {"weight_decay": 0.1},
        "userpkg.lion:Lion": {"weight_decay": 0.01, "betas": (0.95, 0.98)},
    }
    assert split_opt_args({}, run) == {s.spec: {} for s in run}


def test_split_opt_args_errors():
    run = [resolve_optimizer("adam"), resolve_optimizer("torch.optim.AdamW")]
    msg = one_line_error(split_opt_args, {"momentum": 0.9}, run, match="no optimizer of this run")
    assert "adam, torch.optim.AdamW" in msg
    one_line_error(
        split_opt_args, {"torch.optim.SGD:momentum": 0.9}, run, match="not an optimizer of this"
    )
    one_line_error(
        split_opt_args,
        {"torch.optim.AdamW:momentum": 0.9},
        run,
        match="'torch.optim.AdamW' does not accept 'momentum'",
    )


def test_split_opt_args_with_a_class_taking_any_keyword(userpkg):
    run = [resolve_optimizer("adam"), resolve_optimizer("userpkg.lion:AnyKwargs")]
    assert split_opt_args({"momentum": 0.9}, run) == {
        "adam": {},
        "userpkg.lion:AnyKwargs": {"momentum": 0.9},
    }


# ---------------------------------------------------------------------------- entry points


def write_distribution(root: Path, name: str, version: str, entry_points: str, top: str) -> None:
    """An installed distribution as importlib.metadata sees it: a ``*.dist-info`` folder."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (info / "top_level.txt").write_text(top + "\n")


PLUGIN_ENTRY_POINTS = """
    [optbench.optimizers]
    lion = demo_plugin.lion:Lion
    adam = demo_plugin.lion:Lion
    broken = demo_plugin.missing:Lion
    notopt = demo_plugin.lion:helper

    [optbench.tasks]
    tiny = demo_plugin.tasks:tiny
    rosen = demo_plugin.tasks:rosen
"""


@pytest.fixture
def plugin(tmp_path, clean_imports):
    write_package(tmp_path, "demo_plugin", {"lion.py": LION, "tasks.py": TASKS})
    write_distribution(
        tmp_path, "optbench-demo-plugin", "1.2.3", PLUGIN_ENTRY_POINTS, "demo_plugin"
    )
    sys.path.insert(0, str(tmp_path))
    return tmp_path


def test_plugins_lists_entry_points_with_their_origin(plugin):
    listed = {p.name: p for p in plugins("optimizers")}
    lion = listed["lion"]
    assert (lion.value, lion.distribution, lion.version) == (
        "demo_plugin.lion:Lion",
        "optbench-demo-plugin",
        "1.2.3",
    )
    assert lion.origin == "entry-point:optbench-demo-plugin" and not lion.shadowed
    assert listed["adam"].shadowed  # the built-in wins
    assert "demo_plugin.lion" not in sys.modules  # listing imports nothing
    assert {p.name for p in plugins("tasks")} >= {"tiny", "rosen"}


def test_entry_point_optimizer_resolves_with_its_distribution(plugin):
    s = resolve_optimizer("lion")
    assert s.cls.__name__ == "Lion" and s.spec == "lion"
    assert (s.origin, s.distribution, s.version) == (
        "entry-point:optbench-demo-plugin",
        "optbench-demo-plugin",
        "1.2.3",
    )
    assert resolve_optimizer("adam").origin == "builtin"
    # the same class by import path: version from the distribution that installs the package
    s = resolve_optimizer("demo_plugin.lion:Lion")
    assert (s.origin, s.distribution, s.version) == ("import", "optbench-demo-plugin", "1.2.3")


def test_entry_point_errors(plugin):
    msg = one_line_error(resolve_optimizer, "broken", match="entry point 'broken'")
    assert "demo_plugin.missing" in msg and "optbench-demo-plugin" in msg
    one_line_error(resolve_optimizer, "notopt", match="not a subclass")


def test_two_distributions_registering_one_name(plugin):
    write_distribution(
        plugin, "other-plugin", "0.1", "[optbench.optimizers]\nlion = demo_plugin.lion:Lion\n", "x"
    )
    msg = one_line_error(resolve_optimizer, "lion", match="several distributions")
    assert "optbench-demo-plugin 1.2.3" in msg and "other-plugin 0.1" in msg


def test_entry_point_task(plugin):
    t = resolve_task("tiny")
    assert t.task is tasks.TASKS["beale"]  # a factory of no arguments, called
    assert (t.origin, t.version) == ("entry-point:optbench-demo-plugin", "1.2.3")
    assert resolve_task("rosen").task is tasks.TASKS["rosenbrock"]
    t = resolve_task("demo_plugin.tasks:rosen")  # by import path: the package's distribution
    assert (t.origin, t.distribution, t.version) == ("import", "optbench-demo-plugin", "1.2.3")


@pytest.mark.slow
def test_pip_installed_distribution(tmp_path, clean_imports):
    """The real thing: a package built and installed by pip into a --target folder."""
    src = tmp_path / "src"
    write_package(src, "pip_demo_plugin", {"lion.py": LION})
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "pip-demo-plugin"
            version = "0.4.2"
            [project.entry-points."optbench.optimizers"]
            piplion = "pip_demo_plugin.lion:Lion"
            [tool.setuptools]
            packages = ["pip_demo_plugin"]
            """
        )
    )
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, cwd=tmp_path, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    sys.path.insert(0, str(target))
    s = resolve_optimizer("piplion")
    assert (s.origin, s.version) == ("entry-point:pip-demo-plugin", "0.4.2")
    assert "piplion" in {p.name for p in plugins("optimizers")}


# ---------------------------------------------------------------------------- tasks


def test_builtin_task():
    t = resolve_task("rosenbrock")
    assert t.task is tasks.TASKS["rosenbrock"] and t.origin == "builtin"


def test_task_by_import_path(userpkg):
    t = resolve_task("userpkg.tasks:rosen")  # a Task instance: its class is optbench's
    assert t.task is tasks.TASKS["rosenbrock"] and (t.distribution, t.version) == (None, None)
    t = resolve_task("userpkg.tasks.tiny")
    assert t.task is tasks.TASKS["beale"] and (t.origin, t.version) == ("import", None)
    assert resolve_task(tasks.TASKS["saddle"]).spec == "saddle"


def test_task_errors(userpkg):
    one_line_error(resolve_task, "rosenbrok", match="did you mean 'rosenbrock'")
    one_line_error(resolve_task, "userpkg.tasks:not_a_task", match="returned a int, not a task")
    one_line_error(resolve_task, "userpkg.tasks:broken", match="raised RuntimeError: no data")
    one_line_error(resolve_task, "userpkg.lion:NOT_A_CLASS", match="is a int, not a task")
    one_line_error(resolve_task, "userpkg.tasks:missing", match="has no attribute 'missing'")
