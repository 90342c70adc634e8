"""Figures and tables drawn from a results store's CSV tables (no torch, no in-memory run state).

Every function takes pandas DataFrames read from ``curves.csv`` / ``summary.csv`` (already narrowed
to one task and labelled by :func:`label_runs`) and returns a matplotlib ``Figure`` or a DataFrame;
``bench.plot`` is the driver that reads the files and writes the outputs.

Conventions shared by every figure:

* one colour per optimizer, the same in every figure and script (:func:`optimizer_palette`);
* mean over seeds with a 95% bootstrap confidence band, over the runs that did not diverge;
* a diverged run is drawn on its own (dashed) up to where it stopped and marked with an ``X`` there;
  failed runs (an exception in the runner) are left out of the figures and counted in the summary.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm, Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

METRICS = ("train_loss", "test_loss", "test_acc")
METRIC_LABELS = {"train_loss": "train loss", "test_loss": "test loss", "test_acc": "test accuracy"}

# Fixed colours for the known optimizers, so a colour means the same optimizer in every figure of
# every store (tab10 hues; momentum and nesterov are kin, hence blue and light blue).
OPTIMIZER_COLORS = {
    "sgd": "#4d4d4d",
    "momentum": "#1f77b4",
    "nesterov": "#17becf",
    "adagrad": "#2ca02c",
    "adadelta": "#bcbd22",
    "rmsprop": "#ff7f0e",
    "adam": "#d62728",
    "rprop": "#9467bd",
}
_SPARE_COLORS = ("#e377c2", "#8c564b", "#7f7f7f", "#aec7e8", "#98df8a", "#ffbb78", "#c5b0d5")

# Schedules in the order the schedulers package lists them; unknown names follow, sorted.
SCHEDULE_ORDER = (
    "constant",
    "exponential",
    "staircase",
    "piecewise",
    "polynomial",
    "inverse_time",
    "natural_exp",
    "cosine",
    "cosine_restarts",
)

CI_LEVEL, CI_BOOTSTRAPS = 95, 1000  # seaborn's ("ci", 95) with its default number of resamples


def mean_and_ci(data: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean of ``value`` per group of ``keys`` with its 95% percentile-bootstrap CI (``low``,
    ``high``): seaborn's ``errorbar=("ci", 95)``, computed for all groups at once.

    seaborn aggregates one x value at a time (~1 ms each: half a minute for a sweep's 16k points);
    here each group's 1000 resampled means are one matrix product, with a fixed seed so a figure
    is the same every time. With 3 seeds the interval is close to the range of the seeds.
    """
    data = data[[*keys, value]].assign(_k=data.groupby(keys).cumcount())
    wide = data.pivot_table(index=keys, columns="_k", values=value, aggfunc="first")
    samples = wide.to_numpy(dtype=float)
    counts = wide.notna().sum(axis=1).to_numpy()
    out = pd.DataFrame(index=wide.index)
    out["mean"], out["low"], out["high"] = np.nanmean(samples, axis=1), np.nan, np.nan
    rng = np.random.default_rng(0)
    q = [(100 - CI_LEVEL) / 2, (100 + CI_LEVEL) / 2]
    for n in np.unique(counts):
        rows = np.flatnonzero(counts == n)
        picks = rng.integers(0, n, (CI_BOOTSTRAPS, n))  # resample n of the n seeds, with repeats
        weights = np.stack([np.bincount(p, minlength=n) for p in picks]) / n  # (B, n)
        for chunk in np.array_split(rows, max(1, len(rows) // 2000)):
            x = samples[chunk][:, :n]  # a group's values fill its first n columns
            out.iloc[chunk, 1:] = np.percentile(x @ weights.T, q, axis=1).T
    return out.reset_index()


def is_loss(metric: str) -> bool:
    """Lower is better for losses, higher for accuracies."""
    return metric.endswith("loss")


_NAMED_COLORS = (*_SPARE_COLORS, *(to_hex(c) for c in sns.color_palette("husl", 24)))


def optimizer_palette(names: Sequence[str]) -> dict[str, str]:
    """Colour per optimizer: the fixed map for known names; any other name (``torch.optim.AdamW``,
    ``mypkg.lion:Lion``) gets the spare colour its CRC-32 picks, so it keeps its colour across
    figures and stores; on a clash within one figure the next free spare colour is taken."""
    palette = {n: OPTIMIZER_COLORS[n] for n in names if n in OPTIMIZER_COLORS}
    taken = set(palette.values())
    for name in sorted(set(names) - set(palette)):
        start = zlib.crc32(name.encode()) % len(_NAMED_COLORS)
        ring = _NAMED_COLORS[start:] + _NAMED_COLORS[:start]
        palette[name] = next((c for c in ring if c not in taken), ring[0])
        taken.add(palette[name])
    return palette


def schedule_order(names: Sequence[str]) -> list[str]:
    """Known schedules in their canonical order, then the others sorted."""
    known = [s for s in SCHEDULE_ORDER if s in set(names)]
    return known + sorted(set(names) - set(known))


# Settings that make two runs of one optimizer different experiments; summary.csv has lr0 and
# steps, and bench.run adds the others. Runs that differ in them are never averaged together.
VARIANT_COLUMNS = ("lr0", "steps", "batch_size", "warmup", "opt_args", "sched_args")


def label_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """Add ``label`` (what a line stands for) and ``color`` to the summary rows of one task.

    The label is the optimizer's name; when one optimizer was run with different settings in the
    same store (e.g. two sweeps with different ``--lr``), the settings that differ within one of its
    schedules are appended to all its labels, ``"adam lr0=0.01"``, so those runs are not averaged
    together; the colour stays the optimizer's. A setting that differs only between schedules (an
    lr tuned per cell) splits nothing: runs of different schedules are never averaged together.
    """
    out = summary.copy()
    out["label"] = out["optim"]
    cell = [out["optim"], out["sched"]] if "sched" in out.columns else out["optim"]
    for col in (c for c in VARIANT_COLUMNS if c in out.columns):
        text = out[col].map(_setting_text)
        within = text.groupby(cell).transform("nunique") > 1
        varies = within.groupby(out["optim"]).transform("any")
        out.loc[varies, "label"] += " " + col + "=" + text[varies]
    colors = optimizer_palette(sorted(out["optim"].unique()))
    out["color"] = out["optim"].map(colors)
    return out


def _setting_text(value: object) -> str:
    if pd.isna(value):
        return "default"
    return f"{value:g}" if isinstance(value, float) else str(value)


def label_order(runs: pd.DataFrame) -> list[str]:
    """Labels sorted by optimizer name, then lr, then the label's text."""
    return list(runs.sort_values(["optim", "lr0", "label"])["label"].drop_duplicates())


def label_palette(runs: pd.DataFrame) -> dict[str, str]:
    return dict(zip(runs["label"], runs["color"], strict=True))


def _grid(n_panels: int, title: str) -> tuple[Figure, list]:
    """A figure with one shared-axis panel per schedule; unused slots removed."""
    ncols = n_panels if n_panels <= 3 else (2 if n_panels == 4 else 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(0.6 + 4.0 * ncols + 2.2, 0.7 + 3.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= n_panels:
            fig.delaxes(ax)
        elif i + ncols >= n_panels:  # the lowest panel of its column: show its x ticks
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title)
    return fig, list(axes[:n_panels])


def _axis_labels(axes: list, xlabel: str, ylabel: str) -> None:
    n = len(axes)
    ncols = n if n <= 3 else (2 if n == 4 else 3)
    for i, ax in enumerate(axes):
        ax.set_xlabel(xlabel if i + ncols >= n else "")
        ax.set_ylabel(ylabel if i % ncols == 0 else "")


def _finite(values: pd.Series) -> pd.Series:
    return values[np.isfinite(values.astype(float))]


def _y_scale(metric: str, values: pd.Series) -> str:
    """Log scale for losses when every value is positive (a saddle's loss goes negative)."""
    values = _finite(values)
    return "log" if is_loss(metric) and not values.empty and (values > 0).all() else "linear"


class ConvergenceData(NamedTuple):
    """What a convergence figure draws (see :func:`convergence_data`)."""

    xcol: str  # "step" or "elapsed_s"
    data: pd.DataFrame  # the curve rows with a finite metric, with label, sched and status
    ok: pd.DataFrame  # those of runs that did not diverge
    stats: pd.DataFrame  # label, sched, step (and elapsed_s): mean, low, high over the ok seeds
    diverged: pd.DataFrame  # the rows of diverged runs
    ends: pd.DataFrame  # per diverged run_id: the x where it stopped and its last metric value


def convergence_data(
    curves: pd.DataFrame, runs: pd.DataFrame, metric: str, x: str = "step"
) -> ConvergenceData:
    """The tables behind :func:`convergence_grid` (also drawn by bench.report): ``runs`` are
    labelled summary rows without failed runs, ``curves`` the task's curves.csv rows."""
    cols = ["run_id", "label", "sched", "status"]
    data = curves.drop(columns=["label", "sched", "status"], errors="ignore")
    data = data.merge(runs[cols], on="run_id")
    xcol = "step" if x == "step" else "elapsed_s"
    # Where each diverged run stopped: its last logged row (any metric) and the last value of
    # this metric, which may be inf or NaN when it blew up.
    stopped = data[data["status"] == "diverged"].sort_values("step").groupby("run_id")
    last_value = stopped[metric].agg(lambda v: v.dropna().iloc[-1] if v.notna().any() else np.nan)
    ends = stopped[[xcol]].last().join(last_value)
    data = data[np.isfinite(data[metric].astype(float))]
    ok = data[data["status"] != "diverged"]
    stats = mean_and_ci(ok, ["label", "sched", "step"], metric)
    if x == "time":  # seeds log the same steps at slightly different times: average the times
        times = ok.groupby(["label", "sched", "step"])["elapsed_s"].mean().rename("elapsed_s")
        stats = stats.join(times, on=["label", "sched", "step"])
    diverged = data[data["status"] == "diverged"]
    return ConvergenceData(xcol, data, ok, stats, diverged, ends)


def convergence_grid(
    curves: pd.DataFrame, runs: pd.DataFrame, metric: str, x: str = "step", title: str = ""
) -> Figure:
    """Metric against step (or wall time), a panel per schedule, a line per optimizer.

    ``curves``: the task's curves.csv rows; ``runs``: its labelled summary rows (failed runs are
    ignored). Lines are the mean over the seeds that did not diverge with a 95% bootstrap CI band;
    with ``x="time"`` the x of a logged step is the mean ``elapsed_s`` of the seeds at that step.
    """
    runs = runs[runs["status"] != "failed"]
    xcol, data, ok, stats, diverged, ends = convergence_data(curves, runs, metric, x)
    labels, palette = label_order(runs), label_palette(runs)
    scheds = schedule_order(runs["sched"].unique())
    fig, axes = _grid(len(scheds), title)
    scale = _y_scale(metric, data[metric])
    ylim = _y_limits(ok[metric] if not ok.empty else data[metric], scale)
    for ax, sched in zip(axes, scheds, strict=True):
        panel = stats[stats["sched"] == sched]
        if not panel.empty:
            sns.lineplot(
                data=panel, x=xcol, y="mean", hue="label", hue_order=labels, palette=palette,
                estimator=None, legend=False, ax=ax, linewidth=1.6,
            )  # fmt: skip
            for label, band in panel.groupby("label"):
                ax.fill_between(band[xcol], band["low"], band["high"], color=palette[label],
                                alpha=0.2, linewidth=0)  # fmt: skip
        for run_id, label in runs.loc[runs["sched"] == sched].set_index("run_id")["label"].items():
            if run_id not in ends.index:
                continue
            run = diverged[diverged["run_id"] == run_id].sort_values("step")
            color = palette[label]
            ax.plot(run[xcol], run[metric], color=color, lw=1.0, ls="--", alpha=0.8)
            end_x, end_y = ends.loc[run_id, xcol], float(ends.loc[run_id, metric])
            if not np.isfinite(end_y) and ylim is not None:  # blew up: the worst edge
                end_y = ylim[1] if is_loss(metric) else ylim[0]
            if ylim is not None:
                end_y = min(max(end_y, ylim[0]), ylim[1])
            elif not np.isfinite(end_y):
                continue
            ax.plot(
                end_x, end_y, marker="X", ms=9, color=color, mec="black", mew=0.8,
                clip_on=False, zorder=5, label=f"_diverged {run_id}",
            )  # fmt: skip
        ax.set_title(f"schedule: {sched}", pad=10)  # room for an X on the top edge
        ax.set_yscale(scale)
        ax.grid(True, which="major", alpha=0.3)
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    xlabel = "step" if x == "step" else "wall time (s)"
    _axis_labels(axes, xlabel, METRIC_LABELS.get(metric, metric))

    handles = [Line2D([], [], color=palette[lab], lw=2, label=lab) for lab in labels]
    if ok.groupby(["label", "sched", "step"])["seed"].nunique().max() > 1:
        handles.append(Patch(color="0.5", alpha=0.3, label="95% CI over seeds"))
    if not ends.empty:
        handles.append(
            Line2D([], [], color="0.3", ls="--", marker="X", mec="black", label="diverged run")
        )
    fig.legend(handles=handles, loc="outside right upper", title="optimizer", frameon=False)
    return fig


def _y_limits(values: pd.Series, scale: str) -> tuple[float, float] | None:
    """Limits that fit the converging runs, so one diverged run cannot flatten the others."""
    values = _finite(values.astype(float))
    if values.empty:
        return None
    lo, hi = float(values.min()), float(values.max())
    if scale == "log":
        return lo / 2.0, hi * 2.0
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
    return lo - pad, hi + pad


def lr_grid(curves: pd.DataFrame, runs: pd.DataFrame, title: str = "") -> Figure:
    """The effective lr the optimizer used (curves.csv ``lr``) against step, panel per schedule."""
    runs = runs[runs["status"] != "failed"]
    data = curves.drop(columns=["label", "sched"], errors="ignore")
    data = data.merge(runs[["run_id", "label", "sched"]], on="run_id")
    data = data[np.isfinite(data["lr"].astype(float))]
    labels, palette = label_order(runs), label_palette(runs)
    scheds = schedule_order(runs["sched"].unique())
    fig, axes = _grid(len(scheds), title)
    for ax, sched in zip(axes, scheds, strict=True):
        panel = data[data["sched"] == sched]
        if not panel.empty:  # the lr does not depend on the seed: one curve per label
            panel = panel.groupby(["label", "step"], as_index=False)["lr"].mean()
            sns.lineplot(
                data=panel, x="step", y="lr", hue="label", hue_order=labels, palette=palette,
                size="label", sizes=_nested_widths(panel, labels), estimator=None, legend=False,
                ax=ax, drawstyle="steps-post",
            )  # fmt: skip
        ax.set_title(f"schedule: {sched}")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_yscale(_y_scale("lr_loss", data["lr"]))  # positive lrs: log scale, shared y
    _axis_labels(axes, "step", "effective learning rate")
    handles = [Line2D([], [], color=palette[lab], lw=2, label=lab) for lab in labels]
    fig.legend(handles=handles, loc="outside right upper", title="optimizer", frameon=False)
    return fig


def _nested_widths(panel: pd.DataFrame, labels: list[str], width: float = 1.6) -> dict:
    """Line widths so that identical lr curves (e.g. adam and rmsprop both at 1e-3) stay visible:
    within a group of equal curves the first is drawn widest and each next one inside it."""
    curves = panel.groupby(["label", "step"])["lr"].mean().unstack("step")
    groups: list[list[str]] = []
    for label in (lab for lab in labels if lab in curves.index):
        for group in groups:
            if np.allclose(curves.loc[label], curves.loc[group[0]], rtol=1e-9, equal_nan=True):
                group.append(label)
                break
        else:
            groups.append([label])
    return {lab: width + 2.0 * (len(g) - 1 - j) for g in groups for j, lab in enumerate(g)}


def run_metrics(curves: pd.DataFrame, runs: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run: its final and best value of each metric.

    Final is the runner's ``final_<metric>`` in summary.csv (the last curve value when that cell is
    empty); best is the minimum (losses) or maximum (accuracy) over the run's logged curve.
    """
    out = runs.set_index("run_id").copy()
    for metric in metrics:
        values = curves[["run_id", "step", metric]].dropna()
        values = values[np.isfinite(values[metric].astype(float))]
        last = values.sort_values("step").groupby("run_id")[metric].last()
        final_col = f"final_{metric}"
        summary_final = out[final_col] if final_col in out else pd.Series(np.nan, index=out.index)
        out[f"final {metric}"] = summary_final.fillna(last)
        grouped = values.groupby("run_id")[metric]
        out[f"best {metric}"] = grouped.min() if is_loss(metric) else grouped.max()
    return out.reset_index()


def summary_table(per_run: pd.DataFrame, metrics: Sequence[str], sort_metric: str) -> pd.DataFrame:
    """Mean +- std over the non-diverged seeds, per (optimizer label, schedule), best first.

    Columns: optimizer, schedule, lr0, runs, diverged, failed, then ``final``/``best`` of every
    metric as formatted text; diverged and failed runs are counted, not averaged.
    """
    rows = []
    for (label, sched), grp in per_run.groupby(["label", "sched"]):
        ok = grp[grp["status"] == "ok"]
        row = {
            "optimizer": label,
            "schedule": sched,
            "lr0": ", ".join(f"{v:g}" for v in sorted(grp["lr0"].unique())),
            "runs": len(grp),
            "diverged": int((grp["status"] == "diverged").sum()),
            "failed": int((grp["status"] == "failed").sum()),
        }
        for metric in metrics:
            for kind in ("final", "best"):
                row[f"{kind} {METRIC_LABELS[metric]}"] = _mean_std(ok[f"{kind} {metric}"])
        row["_key"] = ok[f"final {sort_metric}"].mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    ascending = is_loss(sort_metric)
    table = table.sort_values("_key", ascending=ascending, na_position="last", kind="stable")
    return table.drop(columns="_key").reset_index(drop=True)


def _mean_std(values: pd.Series) -> str:
    values = _finite(values.dropna().astype(float))
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.4g}"
    mean, std = values.mean(), values.std(ddof=1)
    if std <= 1e-12 * abs(mean):  # identical seeds; not rounding noise like 1.4e-16
        std = 0.0
    return f"{mean:.4g} ± {std:.2g}"


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    header = "| " + " | ".join(table.columns) + " |"
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    rule = "|" + "|".join("---:" if num else "---" for num in numeric) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def heatmap_table(per_run: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(label x schedule mean of the final metric over the ok seeds, the cells' annotations:
    the value, "k/n diverged" / "k/n failed", or "no runs"); also drawn by bench.report."""
    labels = label_order(per_run)
    scheds = schedule_order(per_run["sched"].unique())
    ok = per_run[per_run["status"] == "ok"]
    mean = ok.pivot_table(index="label", columns="sched", values=f"final {metric}", aggfunc="mean")
    mean = mean.reindex(index=labels, columns=scheds)

    def count(status: str | None) -> pd.DataFrame:
        runs = per_run if status is None else per_run[per_run["status"] == status]
        table = runs.pivot_table(index="label", columns="sched", values="seed", aggfunc="count")
        return table.reindex(index=labels, columns=scheds).fillna(0).astype(int)

    n_runs, n_div, n_fail = count(None), count("diverged"), count("failed")
    annot = np.empty(mean.shape, dtype=object)
    for i, j in np.ndindex(mean.shape):
        value, n = mean.iat[i, j], n_runs.iat[i, j]
        notes = [
            f"{k}/{n} {what}"
            for k, what in ((n_div.iat[i, j], "diverged"), (n_fail.iat[i, j], "failed"))
            if k
        ]
        if n == 0:
            notes = ["no runs"]
        elif np.isfinite(value):
            notes.insert(0, f"{value:.3g}")
        annot[i, j] = "\n".join(notes) or "—"
    return mean, annot


def final_heatmap(per_run: pd.DataFrame, metric: str, title: str = "") -> Figure:
    """Optimizer x schedule grid of the final metric, mean over the ok seeds, annotated.

    A cell where some seeds diverged or failed says how many; a cell without ok runs is grey.
    The best cell is outlined.
    """
    mean, annot = heatmap_table(per_run, metric)
    labels, scheds = list(mean.index), list(mean.columns)
    finite = mean.to_numpy()[np.isfinite(mean.to_numpy())]
    positive = finite.size and (finite > 0).all()
    norm = LogNorm() if is_loss(metric) and positive and finite.max() > 10 * finite.min() else None
    if norm is None:
        norm = Normalize()
    fig = Figure(
        figsize=(2.0 + 1.25 * len(scheds) + 1.5, 1.2 + 0.55 * len(labels)), layout="constrained"
    )
    ax = fig.subplots()
    ax.set_facecolor("0.85")  # NaN cells (all seeds diverged) show as grey
    better = "lower" if is_loss(metric) else "higher"
    sns.heatmap(
        mean, annot=annot, fmt="", cmap="viridis_r" if is_loss(metric) else "viridis", norm=norm,
        linewidths=0.5, linecolor="white", annot_kws={"fontsize": 9}, ax=ax,
        cbar_kws={"label": f"final {METRIC_LABELS[metric]} ({better} is better)"},
    )  # fmt: skip
    if finite.size:
        values = mean.to_numpy()
        best = np.nanargmin(values) if is_loss(metric) else np.nanargmax(values)
        i, j = np.unravel_index(best, values.shape)
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", lw=2.5, clip_on=False))
    palette = label_palette(per_run)
    for tick in ax.get_yticklabels():
        tick.set_color(palette.get(tick.get_text(), "black"))
        tick.set_fontweight("bold")
    ax.set_xlabel("schedule")
    ax.set_ylabel("optimizer")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title)
    return fig
