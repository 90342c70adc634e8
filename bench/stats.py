"""Paired statistics on a results store: which differences between optimizers are real.

A seed fixes the initialisation and the minibatch order, so in one (task, schedule) cell the runs of
two optimizers with the same seed are *paired*. For a metric m and optimizers a, b with common
seeds S (n = |S|):

    d_s = m_a(s) - m_b(s),   mean_diff = mean(d),   sd = std(d, ddof=1)

* Paired t-test (every value finite): t = mean_diff / (sd / sqrt(n)), p = 2 P(T_{n-1} >= |t|) and
  CI = mean_diff +- t_{0.975, n-1} sd / sqrt(n). This interval is exact (coverage exactly 95%) when
  the differences are normal, and needs no resampling; a bootstrap interval over 3 seeds (the
  usual count here) can take only 10 distinct resamples and covers far less than 95%. sd = 0 (a
  deterministic difference): p = 0 and CI = [mean_diff, mean_diff], or p = 1 when mean_diff = 0.
* Wilcoxon signed-rank test (some run is *worse than any finished value*: it diverged, or never
  reached the target for steps_to_target). Such a run's value is -inf (accuracy) or +inf (losses,
  steps), so d is infinite and a t-test undefined; a rank test only needs the order, which is
  known: the ranks of |d| put infinite differences above every finite one, d = 0 where both runs
  are equally "worst", zeros are dropped (Wilcoxon's convention) and ties get average ranks. The
  p-value is exact (the distribution of the positive rank sum over the 2^m sign flips, by dynamic
  programming) up to 200 non-zero pairs, normal with tie correction beyond. The CI is then that of
  the *median* difference (``ci_of = "median"``): the order statistics [d_(k), d_(n+1-k)] that
  invert the sign test, infinite when n < 6 (no pair of order statistics reaches 95%).
* Holm's step-down correction over the tests of one (task, sched, metric) cell: with the m p-values
  sorted, p_holm_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); the chance of calling any difference
  of the cell real when none is stays <= ALPHA. Verdict: ``a_better`` / ``b_better`` when
  p_holm < ALPHA, in the metric's own direction (higher accuracy, lower loss or steps), else
  ``tie``; one pair gives ``tie`` (no test).

Ranking of a cell: optimizers sorted by (fraction of worst runs, mean of the finite values in the
metric's direction). Groups: group 1 is the best optimizer with every optimizer not significantly
different from it (Holm verdict ``tie``); group 2 is the best of the rest with every remaining one
not significantly different from it; and so on. An optimizer outside group 1 is significantly worse
than the best. Power: the seeds a paired t-test needs to separate the top two with probability POWER
when their paired differences keep the observed mean and sd (noncentral t), at level ALPHA / m for
the m tests of the cell: the level of Holm's first step, enough whatever the other pairs do.

Tuning budget (``tuning.csv``): the expected best score after k grid trials in a uniformly random
order. With the G scores sorted worst first, the best of a random k-subset is s_(i) with probability
C(i-1, k-1) / C(G, k), so E[best_k] = sum_i s_(i) C(i-1, k-1) / C(G, k), exactly (no sampling). A
diverged grid point scores what it measured (a diverged classifier ends near chance accuracy), one
without a finite value the worst value measured on its task's grid. LR robustness: the contiguous
range of grid lrs around the chosen lr whose score is within ``tol`` (relative) of the best, and its
width in decades, log10(lr_high / lr_low).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10**6  # seeds_needed beyond this is reported as infinite
EXACT_RANK_LIMIT = 200  # exact signed-rank distribution up to this many non-zero pairs

# The summary.csv columns compared, and whether higher is better.
METRICS: dict[str, bool] = {
    "final_test_acc": True,
    "final_test_loss": False,
    "final_train_loss": False,
    "steps_to_target": False,
}
CELL = ["task", "sched", "metric"]
COMPARISON_COLUMNS = [
    *CELL, "optim_a", "optim_b", "n_pairs", "mean_diff", "ci_low", "ci_high", "p_value", "p_holm",
    "verdict", "test", "ci_of", "mean_a", "mean_b",
]  # fmt: skip
RANKING_COLUMNS = [
    *CELL, "optim", "mean", "std", "n", "rank", "group", "n_worst", "seeds_needed",
]  # fmt: skip
VERDICTS = ("a_better", "b_better", "tie")
T_TEST, RANK_TEST, NO_TEST = "paired t", "wilcoxon signed-rank", "none"


# ---------------------------------------------------------------------------- one pair


@dataclass(frozen=True)
class PairTest:
    """A paired comparison of a against b: ``sign`` is +1 when a's values are larger, -1 when
    smaller, 0 when neither (in the metric's units; the verdict applies the direction)."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    ci_of: str
    sign: int


def differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d = a - b, with 0 where both are the same infinity (equally bad runs)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(a == b, 0.0, a - b)


def t_test(d: np.ndarray, level: float = 1 - ALPHA) -> PairTest:
    """Paired t-test and t interval on finite differences d (n >= 2)."""
    n = len(d)
    mean = float(np.mean(d))
    sd = float(np.std(d, ddof=1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return PairTest(n, mean, mean, mean, p, T_TEST, "mean", int(np.sign(mean)))
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * sps.t.sf(abs(mean / se), n - 1))
    return PairTest(n, mean, mean - half, mean + half, p, T_TEST, "mean", int(np.sign(mean)))


def signed_ranks(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of |d| over the non-zero d (ties: average ranks; infinities highest), and signs."""
    d = d[d != 0]
    return sps.rankdata(np.abs(d)), np.sign(d)


def signed_rank_p(d: np.ndarray) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value (zeros dropped) and the sign of W+ - W-."""
    ranks, signs = signed_ranks(d)
    m = len(ranks)
    if m == 0:
        return 1.0, 0
    doubled = np.rint(2 * ranks).astype(np.int64)  # average ranks are multiples of 1/2
    total = int(doubled.sum())
    w = int(doubled[signs > 0].sum())
    direction = int(np.sign(2 * w - total))
    if m <= EXACT_RANK_LIMIT:
        prob = np.zeros(total + 1)
        prob[0] = 1.0
        for r in doubled:  # each rank is + or - with probability 1/2 under H0
            shifted = np.zeros_like(prob)
            shifted[r:] = prob[:-r]
            prob = 0.5 * (prob + shifted)
        dev = np.abs(2 * np.arange(total + 1) - total)
        p = float(prob[dev >= abs(2 * w - total)].sum())
        return min(1.0, p), direction
    var = float((doubled.astype(float) ** 2).sum()) / 4  # Var(W+) in doubled units, ties included
    z = abs(w - total / 2) / math.sqrt(var)
    return float(min(1.0, 2 * sps.norm.sf(z))), direction


def median_ci(d: np.ndarray, level: float = 1 - ALPHA) -> tuple[float, float]:
    """Distribution-free CI of the median of d: [d_(k), d_(n+1-k)] for the largest k with
    P(Bin(n, 1/2) <= k - 1) <= (1 - level) / 2; (-inf, inf) when no k qualifies (n < 6 at 95%)."""
    n, k = len(d), 0
    for j in range(1, n // 2 + 1):
        if sps.binom.cdf(j - 1, n, 0.5) > (1 - level) / 2:
            break
        k = j
    if k == 0:
        return -math.inf, math.inf
    s = np.sort(d)
    return float(s[k - 1]), float(s[n - k])


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairTest:
    """Compare paired values a[i], b[i] (non-finite values: runs worse than any finished one)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = differences(a, b)
    n = len(d)
    with np.errstate(invalid="ignore"):
        mean = float(np.mean(d)) if n else math.nan
    if n < 2:
        return PairTest(n, mean, math.nan, math.nan, math.nan, NO_TEST, "", 0)
    if np.isfinite(a).all() and np.isfinite(b).all():
        return t_test(d)
    p, direction = signed_rank_p(d)
    low, high = median_ci(d)
    return PairTest(n, mean, low, high, p, RANK_TEST, "median", direction)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries (no test) stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def verdict(p_holm: float, sign: int, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """a_better / b_better when the corrected p-value is below alpha, in the metric's direction."""
    if not (np.isfinite(p_holm) and p_holm < alpha) or sign == 0:
        return "tie"
    return "a_better" if (sign > 0) == higher_is_better else "b_better"


def seeds_needed(mean_diff: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest n >= 2 with P(paired t-test at alpha rejects) >= power when the paired differences
    have this mean and sd (noncentral t with n - 1 degrees of freedom and noncentrality
    mean_diff sqrt(n) / sd); inf when mean_diff = 0 or more than MAX_SEEDS would be needed."""
    if not (np.isfinite(mean_diff) and np.isfinite(sd)):
        return math.nan
    if mean_diff == 0:
        return math.inf
    if sd == 0:
        return 2.0
    effect = abs(mean_diff) / sd

    def achieved(n: int) -> float:
        crit = sps.t.ppf(1 - alpha / 2, n - 1)
        nc = effect * math.sqrt(n)
        tails = [sps.nct.sf(crit, n - 1, nc), sps.nct.cdf(-crit, n - 1, nc)]
        return float(np.nan_to_num(tails, nan=0.0).sum())  # scipy gives NaN for tails ~ 0

    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(2, math.ceil((z / effect) ** 2))  # the normal approximation; the t needs a bit more
    if n > MAX_SEEDS:
        return math.inf
    while achieved(n) < power:
        n += 1
    while n > 2 and achieved(n - 1) >= power:
        n -= 1
    return float(n)


# ---------------------------------------------------------------------------- run values


def metric_values(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Columns task, sched, optim, seed, value: one row per run that counts for ``metric``.

    Failed runs are left out (they have no result; bench.run retries them). A diverged run, and for
    steps_to_target a run that never reached the target, gets the worst value (-inf for accuracy,
    +inf otherwise). Runs of a task where the metric was never measured (no finite value in any
    run, e.g. test accuracy on a 2-D surface; no target) are left out, as are other missing values.
    Several runs of one optimizer with one seed (they should not exist) are averaged."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got '{metric}'")
    cols = ["task", "sched", "optim", "seed", "value"]
    if metric not in summary.columns:
        return pd.DataFrame(columns=cols)
    worst = -math.inf if METRICS[metric] else math.inf
    df = summary[summary["status"] != "failed"].copy()
    df["value"] = pd.to_numeric(df[metric], errors="coerce").astype(float)
    applies = np.isfinite(df["value"])
    if metric == "steps_to_target":
        if "target_metric" in df.columns:
            applies |= df["target_metric"].notna()
        df.loc[df["value"].isna() & (df["status"] == "ok"), "value"] = worst  # never reached
    df = df[applies.groupby(df["task"]).transform("any").astype(bool)]
    df.loc[(df["status"] == "diverged") | np.isinf(df["value"]), "value"] = worst
    df = df[df["value"].notna()]
    out = df.groupby(cols[:4], as_index=False, sort=True)["value"].mean()
    return out[cols]


# ---------------------------------------------------------------------------- one cell


def _ranking_key(v: np.ndarray, higher: bool) -> tuple[float, float]:
    finite = v[np.isfinite(v)]
    mean = float(finite.mean()) if len(finite) else math.inf
    return (1 - len(finite) / len(v), -mean if higher else mean)


def compare_cell(values: pd.DataFrame, higher: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Comparisons and ranking of one cell; ``values``: columns optim, seed, value.

    Returns (comparisons: a row per pair with common seeds, a = the better-ranked optimizer;
    ranking: a row per optimizer in rank order). Cell columns are added by :func:`compare`."""
    by_optim = {
        o: (g["seed"].to_numpy(), g["value"].to_numpy(dtype=float))
        for o, g in values.groupby("optim", sort=True)
    }
    keys = {o: _ranking_key(v, higher) for o, (_, v) in by_optim.items()}
    order = sorted(by_optim, key=lambda o: (keys[o], o))
    rows, tests = [], {}
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            (seeds_a, all_a), (seeds_b, all_b) = by_optim[a], by_optim[b]
            _, ia, ib = np.intersect1d(seeds_a, seeds_b, return_indices=True)
            if len(ia) == 0:
                continue
            va, vb = all_a[ia], all_b[ib]
            t = paired_test(va, vb)
            tests[(a, b)] = (t, differences(va, vb))
            rows.append(
                {
                    "optim_a": a, "optim_b": b, "n_pairs": t.n, "mean_diff": t.mean_diff,
                    "ci_low": t.ci_low, "ci_high": t.ci_high, "p_value": t.p_value,
                    "test": t.test, "ci_of": t.ci_of, "mean_a": _mean(va), "mean_b": _mean(vb),
                    "_sign": t.sign,
                }
            )  # fmt: skip
    comp = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS[3:], "_sign"])
    comp["p_holm"] = holm(comp["p_value"].to_numpy())
    comp["verdict"] = [
        verdict(p, s, higher) for p, s in zip(comp["p_holm"], comp["_sign"], strict=True)
    ]
    different = {frozenset((r.optim_a, r.optim_b)) for r in comp.itertuples() if r.verdict != "tie"}
    groups: dict[str, int] = {}
    remaining = list(order)
    while remaining:  # the best left, with all that are not significantly different from it
        head = remaining[0]
        members = [o for o in remaining if o == head or frozenset((head, o)) not in different]
        groups.update(dict.fromkeys(members, max(groups.values(), default=0) + 1))
        remaining = [o for o in remaining if o not in members]
    needed = math.nan
    if len(order) >= 2 and (order[0], order[1]) in tests:
        t, d = tests[(order[0], order[1])]
        if t.test == T_TEST:
            m = int(np.isfinite(comp["p_value"]).sum())
            needed = seeds_needed(t.mean_diff, float(np.std(d, ddof=1)), alpha=ALPHA / m)
    ranks = _ranks([keys[o] for o in order])
    ranking = pd.DataFrame(
        {
            "optim": order,
            "mean": [_mean(by_optim[o][1]) for o in order],
            "std": [_std(by_optim[o][1]) for o in order],
            "n": [len(by_optim[o][1]) for o in order],
            "rank": ranks,
            "group": [groups[o] for o in order],
            "n_worst": [int((~np.isfinite(by_optim[o][1])).sum()) for o in order],
            "seeds_needed": needed,
        }
    )
    return comp.drop(columns="_sign"), ranking


def _ranks(keys: list[tuple[float, float]]) -> list[int]:
    """1 for the first, equal keys share the rank of their first (keys are sorted)."""
    out: list[int] = []
    for i, key in enumerate(keys):
        out.append(out[-1] if i and key == keys[i - 1] else i + 1)
    return out


def _mean(v: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.mean(v)) if len(v) else math.nan


def _std(v: np.ndarray) -> float:
    if len(v) < 2 or not np.isfinite(v).all():
        return math.nan
    return float(np.std(v, ddof=1))


def compare(
    summary: pd.DataFrame, metrics: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons, rankings) for every (task, sched, metric) cell of a summary table.

    ``summary`` has summary.csv's columns; its ``optim`` column names the competitors (pass
    labelled runs there to tell apart one optimizer's runs with different settings)."""
    comps, ranks = [], []
    for metric in metrics or METRICS:
        values = metric_values(summary, metric)
        for (task, sched), cell in values.groupby(["task", "sched"], sort=True):
            comp, rank = compare_cell(cell, METRICS[metric])
            for frame in (comp, rank):
                frame.insert(0, "metric", metric)
                frame.insert(0, "sched", sched)
                frame.insert(0, "task", task)
            comps.append(comp)
            ranks.append(rank)
    comparisons = pd.concat(comps, ignore_index=True) if comps else None
    rankings = pd.concat(ranks, ignore_index=True) if ranks else None
    comparisons = pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS)
    rankings = pd.DataFrame(rankings, columns=RANKING_COLUMNS)
    return comparisons, rankings


# ---------------------------------------------------------------------------- tuning


def expected_best(scores: Sequence[float], higher: bool) -> np.ndarray:
    """E[best of the first k trials] for k = 1..G over the uniformly random orders of G scores."""
    s = np.sort(np.asarray(scores, dtype=float))
    if not higher:
        s = s[::-1]  # worst first
    g = len(s)
    out = np.empty(g)
    for k in range(1, g + 1):
        weights = np.array([math.comb(i - 1, k - 1) for i in range(1, g + 1)], dtype=float)
        out[k - 1] = float(weights @ s) / math.comb(g, k)
    return out


TUNING_KEYS = ["task", "optim", "sched", "steps", "batch_size", "warmup", "opt_args", "sched_args"]


def _tuning_scores(tuning: pd.DataFrame) -> pd.DataFrame:
    """tuning.csv with ``score``: the tuning metric's measured value (diverged included), the
    task's worst finite score where there is none, and ``higher``."""
    df = tuning.copy()
    df["score"] = np.nan
    for metric, rows in df.groupby("metric").groups.items():
        col = metric if metric in df.columns else "value"
        df.loc[rows, "score"] = pd.to_numeric(df.loc[rows, col], errors="coerce")
    df.loc[~np.isfinite(df["score"].astype(float)), "score"] = np.nan
    df["higher"] = df["metric"].map(lambda m: METRICS.get(m, False))
    for (_task, _metric), g in df.groupby(["task", "metric"]):
        worst = g["score"].min() if g["higher"].iloc[0] else g["score"].max()
        df.loc[g.index, "score"] = g["score"].fillna(worst)
    return df


def tuning_budget(tuning: pd.DataFrame) -> pd.DataFrame:
    """Expected best score after k = 1..G grid trials per tuning cell (one row per k)."""
    keys = [k for k in TUNING_KEYS if k in tuning.columns]
    rows = []
    for cell, g in _tuning_scores(tuning).groupby([*keys, "seed", "metric"], sort=True,
                                                  dropna=False):  # fmt: skip
        scores = g["score"].dropna()
        if scores.empty:
            continue
        curve = expected_best(scores.to_numpy(), bool(g["higher"].iloc[0]))
        base = dict(zip([*keys, "seed", "metric"], cell, strict=True))
        rows += [{**base, "k": k + 1, "n_grid": len(curve), "expected_best": float(v)}
                 for k, v in enumerate(curve)]  # fmt: skip
    return pd.DataFrame(rows, columns=[*keys, "seed", "metric", "k", "n_grid", "expected_best"])


def lr_robustness(tuning: pd.DataFrame, tol: float = 0.05) -> pd.DataFrame:
    """Per tuning cell: the chosen lr (best finished grid point; ties to the lower test loss, then
    the smaller lr, as the grid selection), and the contiguous range of grid lrs around it that
    finished with a score within ``tol`` x |best| of the best; width in decades."""
    if not 0 <= tol < 1:
        raise ValueError(f"tol must be in [0, 1), got {tol}")
    from bench import profiles  # the grid's own choice of the best point

    frame = profiles.sensitivity_frame(tuning)
    keys = [k for k in TUNING_KEYS if k in frame.columns]
    rows = []
    for cell, g in frame.groupby([*keys, "seed", "metric"], sort=True, dropna=False):
        g = g.sort_values("lr").reset_index(drop=True)
        base = dict(zip([*keys, "seed", "metric"], cell, strict=True))
        if not g["best"].any():
            rows.append({**base, "n_grid": len(g), "n_ok": 0})
            continue
        higher = METRICS.get(base["metric"], False)
        i = int(np.flatnonzero(g["best"])[0])
        best = float(g.loc[i, "value"])
        bound = best - tol * abs(best) if higher else best + tol * abs(best)
        good = g["ok"] & ((g["value"] >= bound) if higher else (g["value"] <= bound))
        lo, hi = i, i
        while lo > 0 and good.iloc[lo - 1]:
            lo -= 1
        while hi < len(g) - 1 and good.iloc[hi + 1]:
            hi += 1
        lr_low, lr_high = float(g.loc[lo, "lr"]), float(g.loc[hi, "lr"])
        rows.append(
            {
                **base, "n_grid": len(g), "n_ok": int(g["ok"].sum()),
                "lr_best": float(g.loc[i, "lr"]), "best": best, "tol": tol,
                "lr_low": lr_low, "lr_high": lr_high, "n_within": hi - lo + 1,
                "width_decades": math.log10(lr_high / lr_low),
            }
        )  # fmt: skip
    columns = [*keys, "seed", "metric", "n_grid", "n_ok", "lr_best", "best", "tol", "lr_low",
               "lr_high", "n_within", "width_decades"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
