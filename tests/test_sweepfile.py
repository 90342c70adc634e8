"""Sweep files (``bench.run --config sweep.toml``): keys are the long option names, flags override
the file, unknown keys and wrong types are one-line usage errors, the same sweep as flags or as a
file is the same plan (run ids), and the committed reference sweep files plan exactly the runs of
the committed reference results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from bench import cli
from bench import sweepfile as F
from bench.plan import UsageError
from bench.run import main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"
SWEEPS = ROOT / "scripts" / "sweeps"


def plan_of(argv: list[str], out: Path):
    return cli.parse([*argv, "--out", str(out)])


def run_ids(plan) -> list[str]:
    return [c.run_id for c in plan.configs]


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- conversion


def test_settings_become_the_flags():
    argv = F.to_argv(
        {
            "optim": ["adam", "torch.optim.AdamW"],
            "sched": "constant",
            "seeds": 3,
            "steps": 10,
            "lr": 1e-3,
            "batch-size": 32,
            "force": True,
            "quiet": False,
            "target": {"beale": 0.5, "saddle": -1},
            "opt_args": {"eps": 1e-8, "torch.optim.AdamW": {"betas": [0.9, 0.95], "name": "x"}},
            "sched_args": {"staircase": {"decay_rate": 0.5}},
            "data_dir": None,
        }
    )
    assert argv == [
        "--optim=adam,torch.optim.AdamW",
        "--sched=constant",
        "--seeds=3",
        "--steps=10",
        "--lr=0.001",
        "--batch-size=32",
        "--force",
        "--target=beale=0.5,saddle=-1",
        "--opt-arg=eps=1e-08",
        "--opt-arg=torch.optim.AdamW:betas=(0.9, 0.95)",
        "--opt-arg=torch.optim.AdamW:name='x'",
        "--sched-arg=staircase:decay_rate=0.5",
    ]


@pytest.mark.parametrize(
    "seeds, expected", [(3, [0, 1, 2]), ([3], [3]), ([0, 5, 7], [0, 5, 7]), ("2", [0, 1])]
)
def test_seeds_a_count_or_a_list(tmp_path, seeds, expected):
    (flag,) = F.to_argv({"seeds": seeds})
    assert cli.parse_options([flag]).seeds == expected


def test_floats_are_passed_exactly(tmp_path):
    lr = 0.1 + 0.2  # 0.30000000000000004
    (flag,) = F.to_argv({"lr": lr})
    assert plan_of([flag, "--task", "beale"], tmp_path / "s").configs[0].lr == lr


UNKNOWN = [
    ({"optimm": "adam"}, "unknown key 'optimm'; did you mean 'optim'?"),
    ({"opt_arg": {"eps": 1}}, "unknown key 'opt_arg'; did you mean 'opt_args'?"),
    ({"config": "x.toml"}, "unknown key 'config'"),
    ({"list": True}, "unknown key 'list'"),
    ({"zzz": 1}, "unknown key 'zzz' (keys are bench.run's long option names"),
]


@pytest.mark.parametrize("settings, message", UNKNOWN, ids=[next(iter(s)) for s, _ in UNKNOWN])
def test_unknown_keys_name_the_nearest_valid_one(settings, message):
    with pytest.raises(ValueError, match=r"^sweep\.toml: ") as e:
        F.to_argv(settings, source="sweep.toml")
    assert message in str(e.value) and "\n" not in str(e.value)


WRONG = [
    ({"force": "yes"}, "sweep.toml: force is on/off: write true or false"),
    ({"steps": True}, "sweep.toml: steps: true/false is only for on/off options"),
    ({"steps": [1, 2]}, "sweep.toml: steps takes one value, got a list"),
    ({"optim": []}, "sweep.toml: optim: give a non-empty list of names"),
    (
        {"optim": ["adam", "a,b"]},
        "sweep.toml: optim: give a non-empty list of names without commas",
    ),
    ({"steps": {"a": 1}}, "sweep.toml: steps: expected a string or a number"),
    ({"opt_args": 3}, "sweep.toml: opt_args is a table"),
    ({"opt_args": {"eps": float("inf")}}, "sweep.toml: opt_args.eps: inf is not a value"),
]


@pytest.mark.parametrize("settings, message", WRONG, ids=[str(s) for s, _ in WRONG])
def test_values_of_the_wrong_type_name_their_key(settings, message):
    with pytest.raises(ValueError) as e:
        F.to_argv(settings, source="sweep.toml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------- the command line


def test_same_sweep_as_flags_or_file_gives_the_same_run_ids(tmp_path):
    flags = [
        "--optim", "adam,sgd,torch.optim.AdamW", "--sched", "constant,staircase",
        "--task", "beale,saddle", "--seeds", "0,5", "--steps", "40", "--lr", "0.01",
        "--warmup", "3", "--opt-arg", "eps=1e-06",
        "--opt-arg", "torch.optim.AdamW:betas=(0.8, 0.9)", "--opt-arg", "sgd:momentum=0.5",
        "--sched-arg", "staircase:decay_rate=0.5",
        "--device", "cpu",
    ]  # fmt: skip
    path = write(
        tmp_path,
        """
        optim = ["adam", "sgd", "torch.optim.AdamW"]
        sched = ["constant", "staircase"]
        task = ["beale", "saddle"]
        seeds = [0, 5]
        steps = 40
        lr = 0.01
        warmup = 3
        device = "cpu"

        [opt_args]
        eps = 1e-6

        [opt_args."torch.optim.AdamW"]
        betas = [0.8, 0.9]

        [opt_args.sgd]
        momentum = 0.5

        [sched_args.staircase]
        decay_rate = 0.5
        """.replace("\n        ", "\n"),
    )
    by_flags = plan_of(flags, tmp_path / "a")
    by_file = plan_of(["--config", str(path)], tmp_path / "b")
    assert len(by_flags.configs) == 3 * 2 * 2 * 2
    assert run_ids(by_file) == run_ids(by_flags)
    assert by_file.configs == by_flags.configs  # betas a tuple either way
    adamw = next(c for c in by_file.configs if c.optim == "torch.optim.AdamW")
    assert adamw.opt_args == {"eps": 1e-6, "betas": (0.8, 0.9)}
    sgd = next(c for c in by_file.configs if c.optim == "sgd" and c.sched == "staircase")
    assert sgd.opt_args == {"momentum": 0.5} and sgd.sched_args == {"decay_rate": 0.5}


def test_flags_override_the_file(tmp_path):
    path = write(
        tmp_path,
        'optim = ["adam", "sgd"]\ntask = "beale"\nsteps = 30\nseeds = 2\n'
        "[opt_args.sgd]\nmomentum = 0.5\nnesterov = true\n",
    )
    plan = plan_of(
        ["--config", str(path), "--steps", "7", "--opt-arg", "sgd:momentum=0.9"], tmp_path
    )
    assert {c.steps for c in plan.configs} == {7}
    assert {c.seed for c in plan.configs} == {0, 1}  # the file's, where no flag says otherwise
    sgd = next(c for c in plan.configs if c.optim == "sgd")
    assert sgd.opt_args == {"momentum": 0.9, "nesterov": True}
    flags = ["--optim", "adam,sgd", "--task", "beale", "--steps", "7", "--seeds", "2"]
    flags += ["--opt-arg", "sgd:nesterov=True", "--opt-arg", "sgd:momentum=0.9"]
    assert run_ids(plan) == run_ids(plan_of(flags, tmp_path))


def test_a_sweep_file_runs(tmp_path, capsys):
    path = write(tmp_path, f'task = "saddle"\nsteps = 3\nquiet = true\nout = "{tmp_path / "s"}"\n')
    assert main(["--config", str(path)]) == 0
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert list(summary["optim"]) == ["adam"] and list(summary["steps"]) == [3]
    assert capsys.readouterr().out == ""


FILE_ERRORS = [
    ("optimm = 'adam'\n", "sweep.toml: unknown key 'optimm'; did you mean 'optim'?"),
    ("steps = 'ten'\n", "sweep.toml: --steps must be a positive integer, got 'ten'"),
    ("optim = 'adamm'\n", "unknown optimizer 'adamm'; did you mean 'adam'?"),
    ("optim = [\n", "not valid TOML"),
    ("[opt_args.adam]\nmomentum = 0.9\n", "optimizer 'adam' does not accept 'momentum'"),
]


@pytest.mark.parametrize("text, message", FILE_ERRORS, ids=[m for _, m in FILE_ERRORS])
def test_bad_files_exit_2_one_line_store_intact(tmp_path, capsys, text, message):
    out = tmp_path / "s"
    assert main(["--task", "saddle", "--steps", "3", "--quiet", "--out", str(out)]) == 0
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    path = write(tmp_path, text)
    capsys.readouterr()
    assert main(["--config", str(path), "--task", "saddle", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench.run: error: ") and err.count("\n") == 1, err
    assert message in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_a_config_that_is_not_a_file(tmp_path, what):
    path = tmp_path / "sweep.toml"
    if what == "folder":
        path.mkdir()
    with pytest.raises(UsageError, match=r"^--config .*sweep\.toml: (no such file|is a folder)"):
        cli.parse(["--config", str(path)])


# ---------------------------------------------------------------------------- the reference


def test_reference_sweep_files_plan_the_committed_reference_runs(tmp_path):
    """scripts/sweeps/reference_*.toml are the sweeps behind results/reference: planned now,
    they give the run ids of the committed results (so those results are still this code's)."""
    text = {"run_id": str}
    main_ids = set(pd.read_csv(REFERENCE / "summary.csv", dtype=text)["run_id"])
    planned = [
        plan_of(["--config", str(SWEEPS / name)], tmp_path)
        for name in ("reference_mnist1d_mlp.toml", "reference_surfaces.toml")
    ]
    assert set(run_ids(planned[0]) + run_ids(planned[1])) == main_ids
    assert len(main_ids) == 224

    shared = plan_of(["--config", str(SWEEPS / "reference_fair_shared.toml")], tmp_path)
    fair = REFERENCE / "fair"
    assert set(run_ids(shared)) == set(pd.read_csv(fair / "shared/summary.csv", dtype=text).run_id)

    tuned = plan_of(["--config", str(SWEEPS / "reference_fair_tuned.toml")], tmp_path)
    grid = {
        replace(c, lr=lr).run_id for c in tuned.configs if c.seed == 0 for lr in tuned.lr_mode.grid
    }
    assert grid == set(pd.read_csv(fair / "tuned/tuning.csv", dtype=text)["run_id"])
    final = pd.read_csv(fair / "tuned/summary.csv", dtype=text)
    chosen = {(r.optim, r.sched): r.lr0 for r in final.itertuples()}
    at_chosen = {replace(c, lr=chosen[(c.optim, c.sched)]).run_id for c in tuned.configs}
    assert at_chosen == set(final["run_id"])
