"""bench.stats: paired tests against scipy and brute force, known answers, coverage by simulation,
Holm, groups, power, and the tuning-budget curves against enumeration of every order."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import stats as S

DRAWS = 2000


def _cell(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [(o, seed, v) for o, vs in values.items() for seed, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=["optim", "seed", "value"])


# ---------------------------------------------------------------------------- known answers


def test_identical_runs_give_a_tie_with_mean_zero():
    x = [0.61, 0.64, 0.66, 0.60]
    t = S.paired_test(x, x)
    assert (t.mean_diff, t.ci_low, t.ci_high, t.p_value) == (0.0, 0.0, 0.0, 1.0)
    comp, rank = S.compare_cell(_cell({"a": x, "b": x}), higher=True)
    assert comp["verdict"].tolist() == ["tie"] and comp["mean_diff"].tolist() == [0.0]
    assert rank["group"].tolist() == [1, 1] and rank["rank"].tolist() == [1, 1]


@pytest.mark.parametrize("higher", [True, False])
def test_a_constant_shift_gives_its_size_and_a_tiny_p_value(higher):
    rng = np.random.default_rng(0)
    b = rng.normal(0.6, 0.05, 5)
    a = b + 0.02
    t = S.paired_test(a, b)
    assert t.mean_diff == pytest.approx(0.02, abs=1e-12)
    assert t.ci_low == pytest.approx(0.02, abs=1e-9) and t.ci_high == pytest.approx(0.02, abs=1e-9)
    assert t.p_value < 1e-9 and t.test == S.T_TEST
    comp, rank = S.compare_cell(_cell({"a": list(a), "b": list(b)}), higher=higher)
    row = comp.iloc[0]
    # a is better when higher is better; otherwise b is, and the better one is listed first
    assert (row["optim_a"], row["verdict"]) == (("a", "a_better") if higher else ("b", "a_better"))
    assert row["mean_diff"] == pytest.approx(0.02 if higher else -0.02, abs=1e-12)
    assert rank["group"].tolist() == [1, 2]


def test_t_test_matches_scipy_and_the_textbook_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(1.2, 1.0, 7)
    t = S.paired_test(a, b)
    ref = sps.ttest_rel(a, b)
    assert t.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    d = a - b
    half = sps.t.ppf(0.975, 6) * d.std(ddof=1) / math.sqrt(7)
    assert (t.ci_low, t.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
    assert t.ci_of == "mean" and t.n == 7


def test_one_pair_is_no_test_and_a_tie():
    t = S.paired_test([0.5], [0.7])
    assert t.test == S.NO_TEST and math.isnan(t.p_value) and t.mean_diff == pytest.approx(-0.2)
    comp, _ = S.compare_cell(_cell({"a": [0.5], "b": [0.7]}), higher=True)
    assert comp["verdict"].tolist() == ["tie"] and math.isnan(comp["p_holm"].iloc[0])


def test_signed_rank_matches_scipy_without_ties():
    rng = np.random.default_rng(2)
    for n in (5, 9, 14):
        d = rng.normal(0.3, 1.0, n)
        p, _ = S.signed_rank_p(d)
        assert p == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-9)


def test_signed_rank_with_ties_zeros_and_infinities_matches_enumeration():
    d = np.array([0.0, 1.0, -1.0, 2.0, np.inf, np.inf, -3.0, 2.0, 0.5])
    ranks, signs = S.signed_ranks(d)
    total, w = ranks.sum(), ranks[signs > 0].sum()
    flips = [sum(r for r, s in zip(ranks, f, strict=True) if s) for f in
             itertools.product([0, 1], repeat=len(ranks))]  # fmt: skip
    expected = np.mean([abs(2 * x - total) >= abs(2 * w - total) - 1e-9 for x in flips])
    p, direction = S.signed_rank_p(d)
    assert p == pytest.approx(expected, rel=1e-12) and direction == 1
    assert ranks[np.isinf(d[d != 0])].min() > ranks[np.isfinite(d[d != 0])].max()


def test_never_reaching_the_target_is_worse_than_any_reached_step_count():
    # 8 seeds: a reaches the target every time, b never: every difference is -inf, so the
    # signed-rank p-value is its smallest, 2 / 2^8
    summary = pd.DataFrame(
        {
            "task": "t", "sched": "constant", "optim": ["a"] * 8 + ["b"] * 8,
            "seed": list(range(8)) * 2, "status": "ok", "target_metric": "test_acc",
            "steps_to_target": [100.0 + 50 * s for s in range(8)] + [np.nan] * 8,
        }
    )  # fmt: skip
    comp, rank = S.compare(summary, ["steps_to_target"])
    row = comp.iloc[0]
    assert (row["optim_a"], row["test"], row["ci_of"]) == ("a", S.RANK_TEST, "median")
    assert row["p_value"] == pytest.approx(2 / 2**8) and row["verdict"] == "a_better"
    assert row["mean_diff"] == -math.inf and row["ci_high"] == -math.inf
    assert rank.set_index("optim")["n_worst"].to_dict() == {"a": 0, "b": 8}
    assert rank["mean"].iloc[1] == math.inf and math.isnan(rank["seeds_needed"].iloc[0])


def test_metric_values_drop_failed_runs_and_make_diverged_runs_the_worst():
    summary = pd.DataFrame(
        {
            "task": ["c"] * 4 + ["s"] * 2, "sched": "constant",
            "optim": ["a", "a", "b", "b", "a", "b"], "seed": [0, 1, 0, 1, 0, 0],
            "status": ["ok", "failed", "diverged", "ok", "ok", "ok"],
            "final_test_acc": [0.7, 0.8, np.nan, 0.6, np.nan, np.nan],
            "final_train_loss": [0.3, 0.2, 1e9, 0.5, 1.0, np.inf],
        }
    )  # fmt: skip
    acc = S.metric_values(summary, "final_test_acc")
    assert acc["task"].unique().tolist() == ["c"]  # task s has no accuracy at all
    assert acc["value"].tolist() == [0.7, -math.inf, 0.6]
    loss = S.metric_values(summary, "final_train_loss")
    assert loss["value"].tolist() == [0.3, math.inf, 0.5, 1.0, math.inf]
    with pytest.raises(ValueError, match="metric must be one of"):
        S.metric_values(summary, "best_test_acc")


def test_median_ci_uses_the_sign_test_order_statistics():
    d = np.arange(10.0)
    assert S.median_ci(d) == (1.0, 8.0)  # P(Bin(10, 1/2) <= 1) = 11/1024 <= 2.5% < 56/1024
    assert S.median_ci(np.arange(5.0)) == (-math.inf, math.inf)  # 2/32 > 5%
    assert S.median_ci(np.arange(6.0)) == (0.0, 5.0)  # 2/64 <= 5%


def test_holm_adjusts_step_down_and_keeps_nan():
    p = S.holm([0.01, 0.04, np.nan, 0.03])
    assert p[[0, 1, 3]].tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(p[2])
    assert S.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_verdict_follows_the_metric_direction():
    assert S.verdict(0.01, +1, higher_is_better=True) == "a_better"
    assert S.verdict(0.01, +1, higher_is_better=False) == "b_better"
    assert S.verdict(0.01, -1, higher_is_better=False) == "a_better"
    assert S.verdict(0.2, -1, higher_is_better=False) == "tie"
    assert S.verdict(math.nan, 1, higher_is_better=True) == "tie"


# ---------------------------------------------------------------------------- groups and power


def test_groups_collect_what_cannot_be_told_apart_from_the_best_left():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 0.05, 10)
    values = {
        "a": 0.70 + seed_effect + rng.normal(0, 0.002, 10),
        "b": 0.70 + seed_effect + rng.normal(0, 0.002, 10),  # same as a
        "c": 0.60 + seed_effect + rng.normal(0, 0.002, 10),
        "d": 0.60 + seed_effect + rng.normal(0, 0.002, 10),  # same as c
    }
    comp, rank = S.compare_cell(_cell({k: list(v) for k, v in values.items()}), higher=True)
    assert dict(zip(rank["optim"], rank["group"], strict=True)) == {"a": 1, "b": 1, "c": 2, "d": 2}
    assert rank["rank"].tolist() == [1, 2, 3, 4]
    verdicts = {(r.optim_a, r.optim_b): r.verdict for r in comp.itertuples()}
    assert sorted(verdicts.values()).count("a_better") == 4
    assert len(comp) == 6 and (comp["p_holm"] >= comp["p_value"]).all()
    assert rank["seeds_needed"].iloc[0] > 10  # a and b only differ by noise
    d = np.asarray(values["a"]) - np.asarray(values["b"])
    top = rank["optim"].iloc[:2].tolist()
    sign = 1 if top == ["a", "b"] else -1
    # at the level of Holm's first step over the cell's 6 tests
    expected = S.seeds_needed(sign * d.mean(), d.std(ddof=1), alpha=S.ALPHA / 6)
    assert rank["seeds_needed"].iloc[0] == expected


def test_seeds_needed_of_a_two_optimizer_cell_is_the_power_table_value():
    z = np.array([-1.5, -0.5, 0.5, 1.5])
    z = z / z.std(ddof=1)  # mean 0, sd 1
    b = np.array([0.60, 0.62, 0.64, 0.66])
    _, rank = S.compare_cell(_cell({"a": list(b + 0.01 + 0.01 * z), "b": list(b)}), higher=True)
    assert rank["seeds_needed"].tolist() == [10.0, 10.0]  # effect 1, one test: alpha 0.05


def test_seeds_needed_matches_the_power_tables():
    # one-sample / paired t-test, alpha 0.05 two-sided, power 0.8: effect 1 -> n 9.94 -> 10,
    # effect 0.5 -> n 33.37 -> 34 (Cohen's tables; pwr::pwr.t.test)
    assert S.seeds_needed(1.0, 1.0) == 10
    assert S.seeds_needed(-0.5, 1.0) == 34
    assert S.seeds_needed(0.0, 1.0) == math.inf
    assert S.seeds_needed(0.3, 0.0) == 2
    assert S.seeds_needed(1e-9, 1.0) == math.inf
    assert math.isnan(S.seeds_needed(math.inf, 1.0))
    # a large effect at Holm's first level over 28 tests: 3 seeds give 21% power, 4 give 81%
    # (checked by simulation below); scipy's lower tail is NaN there and must count as 0
    assert S.seeds_needed(6.7, 1.0, alpha=S.ALPHA / 28) == 4


def test_seeds_needed_for_a_large_effect_matches_simulation():
    rng = np.random.default_rng(7)
    alpha, effect = S.ALPHA / 28, 6.7
    for n, low, high in ((3, 0.18, 0.25), (4, 0.78, 0.83)):
        d = rng.normal(effect, 1.0, (20 * DRAWS, n))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
        assert low <= np.mean(2 * sps.t.sf(np.abs(t), n - 1) < alpha) <= high


def test_seeds_needed_gives_the_stated_power_by_simulation():
    rng = np.random.default_rng(4)
    n = int(S.seeds_needed(0.5, 1.0))
    d = rng.normal(0.5, 1.0, (DRAWS, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(2 * sps.t.sf(np.abs(t), n - 1) < S.ALPHA)
    assert 0.78 <= power <= 0.84
    d = rng.normal(0.5, 1.0, (DRAWS, n - 3))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n - 3))
    assert np.mean(2 * sps.t.sf(np.abs(t), n - 4) < S.ALPHA) < 0.8


# ---------------------------------------------------------------------------- simulation


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("shift", [0.0, 0.03])
def test_the_95_percent_interval_covers_the_true_difference_95_percent_of_the_time(n, shift):
    rng = np.random.default_rng([n, int(shift * 100)])
    covered = 0
    for _ in range(DRAWS):
        seed_effect = rng.normal(0.65, 0.05, n)  # shared by the pair: the seed's data and init
        a = seed_effect + shift + rng.normal(0, 0.01, n)
        b = seed_effect + rng.normal(0, 0.01, n)
        t = S.paired_test(a, b)
        covered += t.ci_low <= shift <= t.ci_high
    assert 0.93 <= covered / DRAWS <= 0.97


def test_a_cell_without_a_true_difference_is_a_tie_in_95_percent_of_draws():
    # compare_cell's verdict of a two-optimizer cell, composed from its parts for speed; the
    # first draws check that the composition is what compare_cell returns
    rng = np.random.default_rng(5)
    ties = 0
    for i in range(DRAWS):
        seed_effect = rng.normal(0.65, 0.05, 5)
        a, b = (seed_effect + rng.normal(0, 0.01, 5) for _ in range(2))
        first, second = (a, b) if a.mean() >= b.mean() else (b, a)  # the better-ranked is a
        t = S.paired_test(first, second)
        v = S.verdict(S.holm([t.p_value])[0], t.sign, higher_is_better=True)
        if i < 50:
            comp, _ = S.compare_cell(_cell({"a": list(a), "b": list(b)}), higher=True)
            assert comp["verdict"].iloc[0] == v
            assert comp["p_holm"].iloc[0] == pytest.approx(t.p_value, rel=1e-12)
        ties += v == "tie"
    assert 0.93 <= ties / DRAWS <= 0.97


# ---------------------------------------------------------------------------- whole summaries


def test_compare_writes_the_agreed_columns_per_cell():
    rng = np.random.default_rng(6)
    rows = []
    for sched in ("constant", "staircase"):
        for optim, level in (("adam", 0.7), ("sgd", 0.6), ("rprop", 0.3)):
            for seed in range(4):
                acc = level + rng.normal(0, 0.01)
                rows.append({"task": "t", "sched": sched, "optim": optim, "seed": seed,
                             "status": "ok", "final_test_acc": acc, "final_test_loss": 1 - acc,
                             "final_train_loss": 1 - acc, "steps_to_target": 100 * seed + 1,
                             "target_metric": "test_acc"})  # fmt: skip
    comp, rank = S.compare(pd.DataFrame(rows))
    required = ["task", "sched", "metric", "optim_a", "optim_b", "n_pairs", "mean_diff", "ci_low",
                "ci_high", "p_value", "p_holm", "verdict"]  # fmt: skip
    assert comp.columns[: len(required)].tolist() == required
    assert rank.columns[:9].tolist() == [
        "task", "sched", "metric", "optim", "mean", "std", "n", "rank", "group",
    ]  # fmt: skip
    assert len(comp) == 2 * 4 * 3 and len(rank) == 2 * 4 * 3
    acc = rank[(rank["metric"] == "final_test_acc") & (rank["sched"] == "constant")]
    assert acc["optim"].tolist() == ["adam", "sgd", "rprop"]
    loss = rank[(rank["metric"] == "final_test_loss") & (rank["sched"] == "constant")]
    assert loss["optim"].tolist() == ["adam", "sgd", "rprop"]  # lower loss first
    assert set(comp["verdict"]) <= set(S.VERDICTS)


# ---------------------------------------------------------------------------- tuning


@pytest.mark.parametrize("higher", [True, False])
def test_expected_best_equals_the_average_over_every_order(higher):
    scores = [0.3, 0.7, 0.5, 0.7, 0.1, 0.6]
    pick = max if higher else min
    perms = list(itertools.permutations(scores))
    expected = [np.mean([pick(p[:k]) for p in perms]) for k in range(1, len(scores) + 1)]
    got = S.expected_best(scores, higher)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(np.mean(scores)) and got[-1] == pick(scores)


def _tuning(values: dict[str, list[tuple[float, str, float]]]) -> pd.DataFrame:
    rows = []
    for optim, points in values.items():
        for lr, status, acc in points:
            rows.append({"task": "t", "optim": optim, "sched": "constant", "steps": 100,
                         "batch_size": 10, "warmup": 0, "opt_args": "{}", "sched_args": "{}",
                         "lr": lr, "seed": 0, "metric": "final_test_acc",
                         "value": acc if status == "ok" else np.nan, "status": status,
                         "final_train_loss": 1.0, "final_test_loss": 1 - acc,
                         "final_test_acc": acc, "run_id": f"{optim}{lr}"})  # fmt: skip
    return pd.DataFrame(rows)


def test_tuning_budget_scores_diverged_points_by_what_they_measured():
    tuning = _tuning(
        {
            "a": [(0.01, "ok", 0.5), (0.1, "ok", 0.7), (1.0, "diverged", 0.1)],
            "b": [(0.01, "ok", 0.6), (0.1, "failed", np.nan), (1.0, "ok", 0.65)],
        }
    )
    budget = S.tuning_budget(tuning)
    a = budget[budget["optim"] == "a"]["expected_best"].tolist()
    assert a == pytest.approx(S.expected_best([0.5, 0.7, 0.1], True))
    b = budget[budget["optim"] == "b"]["expected_best"].tolist()
    # the failed point has no value: it scores the task's worst measured value, 0.1
    assert b == pytest.approx(S.expected_best([0.6, 0.1, 0.65], True))
    assert budget["k"].tolist() == [1, 2, 3, 1, 2, 3] and set(budget["n_grid"]) == {3}


def test_lr_robustness_is_the_contiguous_range_within_the_tolerance():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    accs = [0.5, 0.68, 0.70, 0.69, 0.5, 0.67]  # 10.0 is within 5% but not contiguous
    tuning = _tuning({"a": [(lr, "ok", v) for lr, v in zip(lrs, accs, strict=True)]})
    row = S.lr_robustness(tuning, tol=0.05).iloc[0]
    assert (row["lr_best"], row["lr_low"], row["lr_high"], row["n_within"]) == (1e-2, 1e-3, 0.1, 3)
    assert row["width_decades"] == pytest.approx(2.0)
    tight = S.lr_robustness(tuning, tol=0.0).iloc[0]
    assert (tight["lr_low"], tight["lr_high"], tight["width_decades"]) == (1e-2, 1e-2, 0.0)
    diverged = _tuning({"a": [(0.1, "diverged", 0.1)]})
    assert S.lr_robustness(diverged)["n_ok"].tolist() == [0]
    with pytest.raises(ValueError, match="tol must be"):
        S.lr_robustness(tuning, tol=1.5)
