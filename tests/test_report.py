"""bench.report: the page and the CSV files from a synthetic store (known verdicts, tuning data, a
diverged and a failed run), bad input, and the page opened in headless Chromium (the reference
store's page too: its size and load time)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly", reason="the report's figures: pip install -e '.[report]'")

from bench import figures, stats
from bench import report as R

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"
OPTIMS = {"adam": 0.70, "momentum": 0.70, "sgd": 0.55}  # final accuracy level per optimizer
SCHEDS = ("constant", "staircase")
SEEDS = range(4)
STEPS = 2000  # logged every step: the page must thin the curves


def write_store(root: Path, tuning: bool = True) -> Path:
    """A store as bench.run writes it: a classifier task 'clf' (4 seeds; adam and momentum equal up
    to noise, sgd far behind; one momentum run diverged), a surface 'surf' (1 seed, one failed run),
    steps to a target, run records, and tuning.csv for clf."""
    curves, summary, records = [], [], []
    for task in ("clf", "surf"):
        for optim, level in OPTIMS.items():
            for sched in SCHEDS:
                for seed in SEEDS if task == "clf" else [0]:
                    rng = np.random.default_rng([seed, len(optim), len(sched), len(task)])
                    run_id = f"{task}-{optim}-{sched}-{seed}"
                    status = "ok"
                    if (task, optim, sched, seed) == ("clf", "momentum", "staircase", 3):
                        status = "diverged"
                    if (task, optim, sched, seed) == ("surf", "sgd", "constant", 0):
                        status = "failed"
                    stop = 800 if status != "ok" else STEPS
                    step = np.arange(0, stop + 1, 1 if task == "clf" else 10)
                    seed_effect = 0.02 * (seed - 1.5)  # shared by every optimizer: pairing helps
                    acc = (level + seed_effect) * (1 - np.exp(-step / 300)) + 0.1
                    acc += rng.normal(0, 0.002, len(step))
                    loss = 2.0 * np.exp(-step / (400 if optim != "sgd" else 900)) + 0.01
                    if status == "diverged":
                        loss[-1] = np.inf
                    frame = pd.DataFrame({
                        "run_id": run_id, "task": task, "optim": optim, "sched": sched,
                        "seed": seed, "step": step, "lr": 0.01, "train_loss": loss,
                        "test_loss": loss * 1.1 if task == "clf" else np.nan,
                        "test_acc": acc if task == "clf" else np.nan,
                        "elapsed_s": step * 0.001, "x": np.nan, "y": np.nan, "lr0": 0.01,
                    })  # fmt: skip
                    curves.append(frame)
                    reached = frame["step"][frame["test_acc"] >= 0.6] if task == "clf" else []
                    summary.append({
                        "run_id": run_id, "task": task, "optim": optim, "sched": sched,
                        "seed": seed, "lr0": 0.01, "steps": STEPS, "status": status,
                        "final_train_loss": loss[-1] if status == "ok" else np.nan,
                        "final_test_loss": loss[-1] * 1.1 if task == "clf" else np.nan,
                        "final_test_acc": acc[-1] if task == "clf" else np.nan,
                        "device": "cpu", "threads": 1, "batch_size": 10 if task == "clf" else None,
                        "warmup": 0, "opt_args": "{}", "sched_args": "{}",
                        "lr_source": "grid" if task == "clf" else "default",
                        "target_metric": "test_acc" if task == "clf" else "train_loss",
                        "steps_to_target": reached.iloc[0] if len(reached) else np.nan,
                    })  # fmt: skip
                    records.append({
                        "run_id": run_id, "status": status, "started_at": "2026-01-02T03:04:05",
                        "versions": {"python": "3.11", "torch": "2.14"}, "device": "cpu",
                        "device_name": "cpu (x86_64)", "threads": 1, "curves": {"step": [0]},
                    })  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    pd.concat(curves).to_csv(root / "curves.csv", index=False)
    pd.DataFrame(summary).to_csv(root / "summary.csv", index=False)
    (root / "runs").mkdir(exist_ok=True)
    for record in records:
        (root / "runs" / f"{record['run_id']}.json").write_text(json.dumps(record))
    if tuning:
        rows = []
        for optim, level in OPTIMS.items():
            for sched in SCHEDS:
                for k, lr in enumerate([1e-3, 1e-2, 1e-1, 1.0]):
                    diverged = lr == 1.0 and optim != "adam"
                    acc = 0.1 if diverged else level - 0.05 * abs(k - 1)
                    rows.append({
                        "task": "clf", "optim": optim, "sched": sched, "steps": STEPS,
                        "batch_size": 10, "warmup": 0, "opt_args": "{}", "sched_args": "{}",
                        "lr": lr, "seed": 0, "metric": "final_test_acc",
                        "value": np.nan if diverged else acc,
                        "status": "diverged" if diverged else "ok", "final_train_loss": 1.0,
                        "final_test_loss": 1 - acc, "final_test_acc": acc,
                        "run_id": f"t{optim}{sched}{k}",
                    })  # fmt: skip
        pd.DataFrame(rows).to_csv(root / "tuning.csv", index=False)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("store") / "results")


@pytest.fixture(scope="module")
def written(store: Path) -> Path:
    assert R.main(["--results", str(store)]) == 0
    return store / "report"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bench.report", *args], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip


# ---------------------------------------------------------------------------- the files


def test_writes_the_page_and_the_statistics(written: Path):
    names = sorted(p.name for p in written.iterdir())
    assert names == sorted([*R.REPORT_FILES, *R.TUNING_FILES])
    comp = pd.read_csv(written / "comparisons.csv")
    rank = pd.read_csv(written / "rankings.csv")
    assert comp.columns[:12].tolist() == stats.COMPARISON_COLUMNS[:12]
    assert rank.columns[:9].tolist() == stats.RANKING_COLUMNS[:9]
    acc = comp[(comp["task"] == "clf") & (comp["metric"] == "final_test_acc")]
    verdict = {(r.sched, r.optim_a, r.optim_b): r.verdict for r in acc.itertuples()}
    # sgd is 0.15 behind on every seed: significant; adam and momentum differ by noise only
    for sched in SCHEDS:
        assert (
            verdict[(sched, "adam", "sgd")] == "a_better"
            or verdict[(sched, "momentum", "sgd")] == "a_better"
        )
        assert {v for k, v in verdict.items() if k[0] == sched and "sgd" not in k} == {"tie"}
    stair = rank[(rank["task"] == "clf") & (rank["sched"] == "staircase")
                 & (rank["metric"] == "final_test_acc")].set_index("optim")  # fmt: skip
    assert stair.loc["momentum", "n_worst"] == 1  # the diverged run is the worst, not dropped
    assert stair.loc["sgd", "group"] > 1 and stair.loc["adam", "group"] == 1
    surf = rank[rank["task"] == "surf"]
    assert set(surf["n"]) == {1} and "sgd" not in set(surf[surf["sched"] == "constant"]["optim"])
    budget = pd.read_csv(written / "tuning_budget.csv")
    assert set(budget["k"]) == {1, 2, 3, 4}


def test_the_statistics_are_those_of_bench_stats_on_the_labelled_runs(store: Path, written):
    summary = pd.read_csv(store / "summary.csv")
    labelled = pd.concat(figures.label_runs(summary[summary["task"] == t]) for t in ("clf", "surf"))
    comp, _ = stats.compare(labelled.assign(optim=labelled["label"]))
    pd.testing.assert_frame_equal(
        pd.read_csv(written / "comparisons.csv"), pd.read_csv(pd.io.common.StringIO(
            comp.to_csv(index=False))), check_dtype=False,
    )  # fmt: skip


def test_the_page_is_self_contained_with_plotly_inlined_once(written: Path):
    from plotly.offline import get_plotlyjs

    page = (written / "index.html").read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()[:200]) == 1
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page.split("</style>")[0])
    for task in ("clf", "surf"):
        assert f'id="task-{task}"' in page
    assert page.count('class="fig"') == 2 * 2 + 2 + 1  # per task 2, clf's tuning 2, the profile
    assert "python -m bench.run --task clf" in page and "--lr grid" in page
    assert "runs started" in page and "2026-01-02T03:04:05" in page  # from runs/*.json
    commit = r"code commit</dt><dd><code>([0-9a-f]{12}( \+ uncommitted code)?|unknown)</code>"
    assert re.search(commit, page)
    assert "diverged" in page and "failed" in page


def test_curves_are_thinned_for_display_only(written: Path):
    page = (written / "index.html").read_text(encoding="utf-8")
    specs = re.findall(r'<script type="application/json" id="fig\d+-data">(.*?)</script>', page)
    convergence = json.loads(specs[0].replace("<\\/", "</"))
    for trace in convergence["data"]:
        x = trace["x"]
        n = len(x) if isinstance(x, list) else len(__import__("base64").b64decode(x["bdata"])) // 4
        # the runs of one line are joined with gaps: at most DISPLAY_POINTS + 2 points per run
        assert n <= len(SEEDS) * (R.DISPLAY_POINTS + 2) * 2
    assert len(R._thin(np.arange(STEPS + 1))) == R.DISPLAY_POINTS
    assert R._thin(np.arange(STEPS + 1))[[0, -1]].tolist() == [0, STEPS]


def test_tuned_lrs_that_differ_between_schedules_do_not_split_an_optimizer():
    summary = pd.DataFrame({"optim": ["adam"] * 4, "sched": ["c", "c", "s", "s"],
                            "lr0": [0.1, 0.1, 0.01, 0.01], "steps": 10})  # fmt: skip
    assert figures.label_runs(summary)["label"].tolist() == ["adam"] * 4
    mixed = summary.assign(lr0=[0.1, 0.2, 0.01, 0.01])  # two lrs within schedule c
    assert figures.label_runs(mixed)["label"].tolist() == [
        "adam lr0=0.1", "adam lr0=0.2", "adam lr0=0.01", "adam lr0=0.01",
    ]  # fmt: skip


def test_equivalent_commands_rebuild_the_sweep(store: Path):
    runs = pd.read_csv(store / "summary.csv")
    lines = {c.split(" --optim")[0]: (c, n, full) for c, n, full in
             R.equivalent_commands(runs, "results")}  # fmt: skip
    clf, n, full = lines["python -m bench.run --task clf"]
    assert "--seeds 4" in clf and "--lr grid" in clf and "--batch-size 10" in clf
    assert "--sched constant,staircase" in clf and (n, full) == (24, True)
    surf = lines["python -m bench.run --task surf"][0]
    assert "--lr" not in surf and "--seeds 1" in surf


def test_odd_stores_still_give_a_page(tmp_path: Path):
    # an older summary.csv without the optional columns, a task whose every run failed, and a
    # store with one optimizer (no pair to compare)
    old = write_store(tmp_path / "old", tuning=False)
    summary = pd.read_csv(old / "summary.csv")
    summary = summary[["run_id", "task", "optim", "sched", "seed", "lr0", "steps", "status",
                       "final_train_loss", "final_test_loss", "final_test_acc"]]  # fmt: skip
    summary.loc[summary["task"] == "surf", "status"] = "failed"
    summary.to_csv(old / "summary.csv", index=False)
    assert R.main(["--results", str(old)]) == 0
    page = (old / "report" / "index.html").read_text(encoding="utf-8")
    assert "Every run of this task failed" in page and 'id="profile"' not in page
    single = write_store(tmp_path / "single", tuning=False)
    summary = pd.read_csv(single / "summary.csv")
    summary[summary["optim"] == "adam"].to_csv(single / "summary.csv", index=False)
    assert R.main(["--results", str(single)]) == 0
    assert pd.read_csv(single / "report" / "comparisons.csv").empty
    assert "nothing to show here" in (single / "report" / "index.html").read_text("utf-8")


# ---------------------------------------------------------------------------- bad input


def _main_fails(capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        R.main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    missing = _run("--results", str(tmp_path / "nope"))  # the real command line, once
    assert missing.returncode == 2 and "no results store" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "summary.csv").write_text("run_id,task,optim,sched,seed,lr0,steps,status\n")
    (empty / "curves.csv").write_text("")
    assert "is empty" in _main_fails(capsys, "--results", str(empty))
    assert "--results" in _main_fails(capsys)


def test_a_failing_command_keeps_what_the_user_has(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert R.main(["--results", str(store), "--out", str(out)]) == 0
    before = (out / "index.html").read_bytes()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    err = _main_fails(capsys, "--results", str(store), "--out", str(blocked / "report"))
    assert "cannot write the report" in err and blocked.read_text() == "not a folder"
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    (broken / "tuning.csv").write_bytes(b'"unclosed\n')
    assert "tuning.csv" in _main_fails(capsys, "--results", str(broken), "--out", str(out))
    assert (out / "index.html").read_bytes() == before and (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- in a browser


def _browser() -> str:
    """The chromium binary; skip when it or playwright is missing here (CI installs both and
    must not skip)."""
    chromium = shutil.which("chromium") or R.CHROMIUM
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package"
    else:
        missing = "" if Path(chromium).is_file() else f"chromium ({chromium})"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is not installed; .ci/run installs it")
        pytest.skip(f"{missing} is not installed (pip install -e .[browser]; apt-get install "
                    "chromium)")  # fmt: skip
    return chromium


def _check_rendered(check: R.PageCheck, tasks: list[str]) -> None:
    assert check.console_errors == [] and check.failed_requests == []
    assert check.outside_requests == []
    headings = {s["id"]: s for s in check.sections}
    for task in tasks:
        section = headings[f"task-{task}"]
        assert section["visible"] and section["heading"] == task
    assert all(s["visible"] for s in check.sections)
    assert check.figures and all(
        f["visible"] and f["drawn"] and f["svg"] > 0 and f["traces"] > 0 and f["height"] > 200
        for f in check.figures
    ), check.figures
    assert check.tables and all(t["visible"] and t["rows"] > 0 for t in check.tables), check.tables


def test_the_page_renders_in_chromium(written: Path, tmp_path: Path):
    chromium = _browser()
    shot = tmp_path / "report.png"
    check = R.check_page(written / "index.html", screenshot=shot, chromium=chromium)
    _check_rendered(check, ["clf", "surf"])
    assert len(check.figures) == 7 and shot.stat().st_size > 50_000
    print(f"synthetic page: first screen {check.first_view_ms:.0f} ms, every figure "
          f"{check.all_drawn_ms:.0f} ms; screenshot {shot}")  # fmt: skip


def test_the_reference_page_is_small_and_renders_in_chromium(tmp_path: Path):
    chromium = _browser()
    out = tmp_path / "report"
    assert R.main(["--results", str(REFERENCE), "--out", str(out)]) == 0
    size = (out / "index.html").stat().st_size
    assert size < 15e6, f"the reference page is {size / 1e6:.1f} MB"
    shot = tmp_path / "reference.png"
    check = R.check_page(out / "index.html", screenshot=shot, chromium=chromium)
    tasks = sorted(pd.read_csv(REFERENCE / "summary.csv")["task"].unique())
    _check_rendered(check, tasks)
    # not a speed test (the machine may be busy): a bound that only a hang or a pathological
    # page would break; scripts/report_reference.py measures the load time on a quiet machine
    assert check.first_view_ms < 60_000
    print(f"reference page {size / 1e6:.1f} MB: first screen {check.first_view_ms:.0f} ms, "
          f"every figure {check.all_drawn_ms:.0f} ms; screenshot {shot}")  # fmt: skip
