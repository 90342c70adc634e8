"""bench.docs_tables: the committed tables equal a fresh generation and say what the data say."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import docs_tables as D
from bench import tasks as T


def test_committed_tables_are_up_to_date() -> None:
    # the generation commit differs between generations; everything else must match
    for path, text in D.outputs().items():
        assert D.without_commit(path.read_text()) == D.without_commit(text), (
            f"{path.relative_to(D.ROOT)} is out of date: run python -m bench.docs_tables"
        )


def test_time_to_target_table_is_generated_from_the_reference_results() -> None:
    committed = D.TARGETS_TABLE.read_text()
    assert D.without_commit(committed) == D.without_commit(D.targets_page()), (
        "docs/generated/time_to_target.md is out of date: run python -m bench.docs_tables"
    )
    assert "| `mnist_mlp` | test accuracy >= 0.97 | not calibrated here (no data offline) |" in (
        committed
    )


def test_targets_table_every_some_never_and_what_does_not_count() -> None:
    beale = T.TASKS["beale"]  # train loss <= 0.01 in 500 steps

    def run(optim, seed, reached, loss, **over):
        row = dict(task="beale", optim=optim, sched="constant", seed=seed, lr_source="default",
                   steps=500, target_metric="train_loss", target=0.01, steps_to_target=reached,
                   final_train_loss=loss)  # fmt: skip
        return {**row, **over}

    nan = float("nan")
    summary = pd.DataFrame(
        [
            run("a", 0, 10.0, 0.001),
            run("a", 1, 30.0, 0.002),
            run("b", 0, 50.0, 0.005),
            run("b", 1, nan, 0.02),
            run("c", 0, nan, 0.5),
            run("c", 1, nan, 0.7),
            run("d", 0, nan, 0.2),
            run("c", 2, 5.0, 0.001, sched="cosine"),  # another schedule
            run("e", 0, 5.0, 0.001, target=0.5),  # measured against another target
            run("e", 1, 5.0, 0.001, lr_source="grid"),  # a tuned lr
            run("e", 2, 5.0, 0.001, steps=100),  # not the task's steps
        ]
    )
    tasks = [beale, T.TASKS["rastrigin"], T.TASKS["mnist_mlp"]]
    rows = D.targets_table(summary, tasks).splitlines()[2:]
    assert rows == [
        "| `beale` | train loss <= 0.01 | a 20 | b 1/2 | final train loss: d 0.2, c 0.6 |",
        "| `rastrigin` | train loss <= 1 | not in the reference results | – | – |",
        "| `mnist_mlp` | test accuracy >= 0.97 | not calibrated here (no data offline) | – | – |",
    ]


def test_stamp_carries_the_reference_provenance() -> None:
    page = D.docs_page(commit="abc1234")
    assert "at commit abc1234" in page
    readme = (D.ROOT / "results" / "reference" / "README.md").read_text()
    date = next(line[2:].strip() for line in readme.splitlines() if line.startswith("* date:"))
    assert date.startswith("date: 20") and "commit " in date
    assert date in page  # the regeneration's date and commit, as its README states them


def _summary(rows: list[tuple[str, str, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(task="t", optim=o, sched=s, seed=k, status=st, final_test_acc=a, lr0=0.1, steps=10)
            for o, s, k, st, a in rows
        ]
    )


def test_accuracy_table_mean_std_and_left_out_seeds() -> None:
    summary = _summary(
        [
            ("a", "c", 0, "ok", 0.5),
            ("a", "c", 1, "ok", 0.7),
            ("b", "c", 0, "ok", 0.9),
            ("b", "c", 1, "diverged", 0.1),
        ]
    )
    table = D.accuracy_table(summary, task="t").splitlines()
    assert table[2] == "| a | 0.600 ± 0.141 |"  # sample std of 0.5, 0.7
    assert table[3] == "| b | **0.900 ± 0.000** (1/2 seeds) |"  # the diverged seed is left out


def test_fair_table_orders_by_tuned_accuracy() -> None:
    shared = _summary([("a", "c", 0, "ok", 0.6), ("b", "c", 0, "ok", 0.2)])
    tuned = _summary([("a", "c", 0, "ok", 0.6), ("b", "c", 0, "ok", 0.8)]).assign(lr0=[0.1, 1.0])
    rows = D.fair_table(shared, tuned, sched="c").splitlines()[2:]
    assert rows == [
        "| b | 0.1 | 0.200 ± 0.000 | 1 | 0.800 ± 0.000 |",
        "| a | 0.1 | 0.600 ± 0.000 | 0.1 | 0.600 ± 0.000 |",
    ]


def test_replace_block_touches_only_the_marked_part() -> None:
    text = f"intro\n{D.BEGIN}\nold\n{D.END}\noutro\n"
    assert (
        D.replace_block(text, f"{D.BEGIN}\nnew\n{D.END}")
        == f"intro\n{D.BEGIN}\nnew\n{D.END}\noutro\n"
    )
    with pytest.raises(ValueError, match="markers"):
        D.replace_block("no markers\n", "x")


def test_provenance_needs_the_bullets() -> None:
    with pytest.raises(ValueError, match="date"):
        D.provenance("# Reference results\n")


def test_check_reports_a_stale_file(tmp_path, monkeypatch, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{D.BEGIN}\nstale\n{D.END}\n")
    monkeypatch.setattr(D, "ROOT", tmp_path)
    monkeypatch.setattr(D, "README", readme)
    monkeypatch.setattr(D, "DOCS_TABLES", tmp_path / "docs" / "generated" / "reference_tables.md")
    monkeypatch.setattr(D, "TARGETS_TABLE", tmp_path / "docs" / "generated" / "time_to_target.md")
    assert D.main(["--check"]) == 1
    assert "README.md is out of date" in capsys.readouterr().err
    assert D.main([]) == 0
    assert "stale" not in readme.read_text() and readme.read_text().startswith("x\n")
    assert D.main(["--check"]) == 0
