"""Fair-comparison figures: AlgoPerf-style performance profiles and LR sensitivity.

Pure table functions first (testable without drawing), then the two figures. Inputs are the
store's CSV files as DataFrames: ``summary.csv`` (with ``steps_to_target``) and ``tuning.csv``.

Performance profile (Dolan & Moré 2002, as AlgoPerf uses it). A cell is a (task, schedule) pair of
the store; a competitor is an optimizer (with how its lr was chosen, when the store mixes them).
    t[c, o]   = median over seeds of o's steps to the target in cell c (a seed that never reaches
                it counts as infinity; a competitor with no run in c is infinity)
    r[c, o]   = t[c, o] / min_o' t[c, o']   (1 for the best; infinity when o never reaches it)
    rho_o(tau) = |{c : r[c, o] <= tau}| / |cells|,  tau in [1, 4]
rho_o(1) is the fraction of cells where o is (one of) the fastest; rho_o(4) the fraction where it
reaches the target at most 4x slower than the fastest. Every cell of the store is in the
denominator, including those no competitor solves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from bench import figures

CELL = ["task", "sched"]
TAUS = np.round(np.linspace(1.0, 4.0, 61), 6)  # 1.00, 1.05, ..., 4.00
MEASURES = ("steps_to_target", "time_to_target")


# ---------------------------------------------------------------------------- tables


def competitors(summary: pd.DataFrame) -> pd.Series:
    """A label per summary row: the optimizer; with ``(search)`` / ``(grid)`` / ... appended when
    the store has that optimizer's runs with several lr sources, and ``lr0=X`` for several
    shared lrs (a default or tuned lr differs per task, so it never splits a competitor)."""
    label = summary["optim"].astype(str)
    if "lr_source" in summary.columns:
        # an untuned lr, the task's or the class's own, never splits a competitor
        source = summary["lr_source"].fillna("default").astype(str)
        source = source.replace("class_default", "default")
        mixed = source.groupby(summary["optim"]).transform("nunique") > 1
        label = label.where(~mixed, label + " (" + source + ")")
        shared = source == "shared"
        lr_text = summary["lr0"].map(lambda v: f"{v:g}")
        several = lr_text.where(shared).groupby(label).transform("nunique") > 1
        label = label.where(~(shared & several), label + " lr0=" + lr_text)
    return label


def cell_times(summary: pd.DataFrame, measure: str = "steps_to_target") -> pd.DataFrame:
    """t[c, o]: a (task, sched) x competitor table of the median over seeds of ``measure``
    (infinity where not reached, or where the competitor has no run in the cell)."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got '{measure}'")
    df = summary.assign(competitor=competitors(summary))
    values = pd.to_numeric(df[measure], errors="coerce").astype(float).fillna(np.inf)
    table = values.groupby([df[c] for c in [*CELL, "competitor"]]).median().unstack("competitor")
    return table.fillna(np.inf).sort_index()


def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """r[c, o] = t[c, o] / min_o t[c, o]: 1 for the fastest, infinity where not reached."""
    best = times.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = times.div(best, axis=0)
    ratios = ratios.where(np.isfinite(times.to_numpy()), np.inf)
    ratios = ratios.mask(times.eq(best, axis=0) & np.isfinite(times.to_numpy()), 1.0)
    return ratios.fillna(np.inf)


def performance_profile(
    summary: pd.DataFrame, taus: Sequence[float] = TAUS, measure: str = "steps_to_target"
) -> pd.DataFrame:
    """rho_o(tau) for every competitor: long format with columns competitor, optim, tau, fraction
    (and n_cells, the denominator)."""
    ratios = performance_ratios(cell_times(summary, measure))
    n = len(ratios)
    optim_of = dict(zip(competitors(summary), summary["optim"], strict=True))
    rows = [
        {
            "competitor": o,
            "optim": optim_of[o],
            "tau": float(tau),
            "fraction": float((ratios[o] <= tau).sum()) / n if n else 0.0,
            "n_cells": n,
        }
        for o in ratios.columns
        for tau in taus
    ]
    return pd.DataFrame(rows, columns=["competitor", "optim", "tau", "fraction", "n_cells"])


def sensitivity_frame(tuning: pd.DataFrame) -> pd.DataFrame:
    """tuning.csv -> one row per grid point with ``value`` (the tuning metric; NaN when the run
    diverged or failed), ``ok`` and ``best`` (the point the grid selection would pick: best value,
    ties to lower test loss, then the smaller lr)."""
    df = tuning.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["ok"] = df["status"].eq("ok") & np.isfinite(df["value"])
    df["best"] = False
    keys = ["task", "optim", "sched", "steps", "seed"]
    for _, g in df[df["ok"]].groupby(keys, sort=False):
        higher = g["metric"].iloc[0] == "final_test_acc"
        tie = pd.to_numeric(g.get("final_test_loss"), errors="coerce").fillna(np.inf)
        order = pd.DataFrame({"v": -g["value"] if higher else g["value"], "t": tie, "lr": g["lr"]})
        df.loc[order.sort_values(["v", "t", "lr"]).index[0], "best"] = True
    return df


def comparison_frame(stores: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Shared vs tuned (or any named stores' summaries): per store, task, schedule and optimizer
    the lr used, and the mean and std over seeds of ``metric`` (a summary column such as
    final_test_acc) over the runs that finished ok, with the count of diverged/failed runs."""
    rows = []
    for name, summary in stores.items():
        for (task, sched, optim), g in summary.groupby(["task", "sched", "optim"], sort=True):
            ok = pd.to_numeric(g.loc[g["status"] == "ok", metric], errors="coerce").dropna()
            lrs = sorted(g["lr0"].unique())
            rows.append(
                {
                    "store": name, "task": task, "sched": sched, "optim": optim,
                    "lr0": lrs[0] if len(lrs) == 1 else np.nan,
                    "mean": ok.mean() if len(ok) else np.nan,
                    "std": ok.std(ddof=1) if len(ok) > 1 else np.nan,
                    "seeds": len(g), "not_ok": int((g["status"] != "ok").sum()),
                }
            )  # fmt: skip
    return pd.DataFrame(
        rows, columns=["store", "task", "sched", "optim", "lr0", "mean", "std", "seeds", "not_ok"]
    )


# ---------------------------------------------------------------------------- figures


def profile_figure(profile: pd.DataFrame, title: str = "") -> Figure:
    """Step plot of rho_o(tau), one line per competitor in its optimizer's colour."""
    colors = figures.optimizer_palette(sorted(profile["optim"].unique()))
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    styles = ["-", "--", ":", "-."]
    seen: dict[str, int] = {}
    for name, g in profile.groupby("competitor", sort=True):
        optim = g["optim"].iloc[0]
        k = seen[optim] = seen.get(optim, -1) + 1
        ax.step(g["tau"], g["fraction"], where="post", color=colors[optim],
                linestyle=styles[k % len(styles)], linewidth=2, label=name)  # fmt: skip
    n = int(profile["n_cells"].iloc[0]) if len(profile) else 0
    ax.set_xlim(1, float(profile["tau"].max()) if len(profile) else 4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (steps to target / fastest optimizer's steps)")
    ax.set_ylabel(f"fraction of the {n} (task, schedule) cells")
    ax.set_title(title or "Performance profile: reaching the target within tau x the fastest")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def sensitivity_figure(tuning: pd.DataFrame, task: str) -> Figure:
    """Final tuning metric against lr (log), one line per optimizer, a panel per schedule;
    diverged or failed grid points are marked x at the panel's bottom edge, the best one with a
    star."""
    df = sensitivity_frame(tuning[tuning["task"] == task])
    scheds = figures.schedule_order(sorted(df["sched"].unique()))
    metric = df["metric"].iloc[0]
    colors = figures.optimizer_palette(sorted(df["optim"].unique()))
    ncols = min(len(scheds), 3)
    nrows = -(-len(scheds) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.6, 3.6 * nrows),
                             squeeze=False, sharey=True, layout="constrained")  # fmt: skip
    flat = list(axes.flat)
    ok_values = df.loc[df["ok"], "value"]
    log_y = metric != "final_test_acc" and len(ok_values) and (ok_values > 0).all()
    for ax, sched in zip(flat, scheds, strict=False):
        panel = df[df["sched"] == sched]
        edge = blended_transform_factory(ax.transData, ax.transAxes)
        for optim, g in panel.groupby("optim", sort=True):
            g = g.sort_values("lr")
            ok = g[g["ok"]]
            ax.plot(ok["lr"], ok["value"], "o-", color=colors[optim], ms=4, label=optim)
            bad = g[~g["ok"]]
            ax.plot(bad["lr"], np.full(len(bad), 0.03), "x", color=colors[optim], ms=7, mew=2,
                    transform=edge)  # fmt: skip
            best = g[g["best"]]
            ax.plot(best["lr"], best["value"], "*", color=colors[optim], ms=15, mec="black")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_title(sched)
        ax.grid(alpha=0.3)
    for ax in flat[len(scheds) :]:
        ax.set_visible(False)
    label = {"final_test_acc": "final test accuracy", "final_train_loss": "final loss"}
    for ax in axes[:, 0]:
        ax.set_ylabel(label.get(metric, metric))
    for ax in axes[-1, :]:
        ax.set_xlabel("initial learning rate")
    steps = ", ".join(str(s) for s in sorted(df["steps"].unique()))
    fig.suptitle(f"{task}: LR sensitivity ({steps} steps, tuning seed; x: diverged, *: chosen)")
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False)
    return fig


def comparison_figure(table: pd.DataFrame, metric_label: str, title: str = "") -> Figure:
    """Dot plot from ``comparison_frame``: a row per optimizer, a panel per schedule, one marker
    per store (mean over seeds, std as an error bar), the lr used written next to it."""
    scheds = figures.schedule_order(sorted(table["sched"].unique()))
    optims = sorted(table["optim"].unique())
    colors = figures.optimizer_palette(optims)
    stores = list(dict.fromkeys(table["store"]))
    markers = ["o", "s", "D", "^"]
    fig, axes = plt.subplots(1, len(scheds), figsize=(4.8 * len(scheds) + 1.5, 0.45 * len(optims)
                             + 1.6), squeeze=False, sharey=True, layout="constrained")  # fmt: skip
    offsets = np.linspace(-0.15, 0.15, len(stores)) if len(stores) > 1 else [0.0]
    for ax, sched in zip(axes[0], scheds, strict=True):
        panel = table[table["sched"] == sched]
        for k, store in enumerate(stores):
            for i, optim in enumerate(optims):
                row = panel[(panel["store"] == store) & (panel["optim"] == optim)]
                if row.empty or not np.isfinite(row["mean"].iloc[0]):
                    continue
                r = row.iloc[0]
                y = i + offsets[k]
                filled = k == len(stores) - 1
                ax.errorbar(r["mean"], y, xerr=0 if pd.isna(r["std"]) else r["std"],
                            fmt=markers[k % len(markers)], color=colors[optim], ms=7,
                            mfc=colors[optim] if filled else "white", capsize=2)  # fmt: skip
                if pd.notna(r["lr0"]):
                    ax.annotate(f"{r['lr0']:g}", (r["mean"], y), xytext=(6, -3),
                                textcoords="offset points", fontsize=7)  # fmt: skip
        ax.set_yticks(range(len(optims)), optims)
        ax.set_title(sched)
        ax.set_xlabel(metric_label)
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], marker=markers[k % len(markers)], color="gray", linestyle="",
                   mfc="gray" if k == len(stores) - 1 else "white", label=store)
        for k, store in enumerate(stores)
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    fig.suptitle(title or f"{metric_label}: " + " vs ".join(stores) + " (lr next to each point)")
    return fig


# ---------------------------------------------------------------------------- bench.plot's hook


def write_figures(
    results: Path, out: Path, summary: pd.DataFrame, tasks: Sequence[str], fmt: str = "png"
) -> list[Path]:
    """bench.plot's hook: ``performance_profile.<fmt>`` over the (task, schedule) cells of the
    selected tasks (when summary.csv has ``steps_to_target``) and ``<task>_lr_sensitivity.<fmt>``
    per task in ``results/tuning.csv`` (when there is one). Returns the paths written."""
    paths: list[Path] = []
    if "steps_to_target" in summary.columns:
        runs = summary[summary["task"].isin(tasks)]
        if len(runs):
            n_tasks = runs["task"].nunique()
            fig = profile_figure(
                performance_profile(runs),
                title=f"Performance profile over {n_tasks} task(s): steps to target within "
                "tau x the fastest",
            )
            paths.append(out / f"performance_profile.{fmt}")
            fig.savefig(paths[-1], dpi=120)
            plt.close(fig)
    tuning_csv = results / "tuning.csv"
    if tuning_csv.is_file():
        tuning = pd.read_csv(tuning_csv, dtype={"task": str, "optim": str, "sched": str})
        for task in [t for t in tasks if t in set(tuning["task"])]:
            fig = sensitivity_figure(tuning, task)
            paths.append(out / f"{task}_lr_sensitivity.{fmt}")
            fig.savefig(paths[-1], dpi=120)
            plt.close(fig)
    return paths
