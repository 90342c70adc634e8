"""``python -m bench.report``: a self-contained HTML page per results store, with paired statistics.

    python -m bench.report --results DIR [--out DIR/report]

reads the store's CSV files (``summary.csv``, ``curves.csv``, and ``tuning.csv`` when
``bench.run --lr grid`` wrote one; ``runs/*.json`` and ``README.md`` for the provenance when
present) and writes into ``--out``:

* ``index.html``: the page. Provenance (commands, versions, device, commit, date, runs by status);
  per task the convergence figure, the optimizer x schedule heatmap with the ranking groups, the
  groups and power per schedule, the paired comparisons and the rankings (sortable, filterable
  tables), the LR-sensitivity and tuning-budget figures with the lr-robustness table when the store
  has tuning data; the performance profile across tasks. Everything is inlined (plotly.js once,
  styles, data): the page makes no request to any server and opens offline or as an attachment.
* ``comparisons.csv`` and ``rankings.csv``: :mod:`bench.stats` over every (task, schedule,
  metric) cell; ``tuning_budget.csv`` and ``lr_robustness.csv`` with tuning data.

The statistics use every logged value; only the curves drawn are thinned (DISPLAY_POINTS steps per
line). The figures draw the tables of :mod:`bench.figures` and :mod:`bench.profiles`, the ones
``bench.plot`` draws for papers. Bad arguments and unusable stores exit with code 2 and one line.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench import figures, profiles, provenance, stats
from bench.plot import StoreError, load_store

if TYPE_CHECKING:  # plotly is imported where a figure is made: the statistics do not need it
    import plotly.graph_objects as go

DISPLAY_POINTS = 150  # steps drawn per curve; the statistics use every logged step
PROFILE_TAUS = profiles.TAUS
REPORT_FILES = ("index.html", "comparisons.csv", "rankings.csv")
TUNING_FILES = ("tuning_budget.csv", "lr_robustness.csv")
VERSION_PACKAGES = ("pandas", "numpy", "scipy", "plotly")
METRIC_TEXT = {
    "final_test_acc": "final test accuracy",
    "final_test_loss": "final test loss",
    "final_train_loss": "final train loss",
    "steps_to_target": "steps to target",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.report",
        description="Write one self-contained HTML page (and the statistics as CSV) for a store.",
    )
    p.add_argument(
        "--results", type=Path, required=True, metavar="DIR",
        help="the store: DIR/summary.csv and DIR/curves.csv (bench.run --out)",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="where index.html and the CSV files go (default: DIR/report)",
    )  # fmt: skip
    return p


# ---------------------------------------------------------------------------- the store


@dataclass
class StoreTables:
    """A store's tables, labelled (one label per optimizer and setting, as bench.plot's)."""

    path: Path
    curves: pd.DataFrame
    runs: pd.DataFrame  # summary.csv rows with label and color
    tuning: pd.DataFrame | None = None
    readme: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # without their curves

    @property
    def tasks(self) -> list[str]:
        """The tasks with the most seeds (the most to say) first, then by name."""
        seeds = self.runs.groupby("task")["seed"].nunique()
        return sorted(seeds.index, key=lambda t: (-seeds[t], t))


def read_store(results: Path) -> StoreTables:
    """Read a store (StoreError, one line, when it is missing, empty or unreadable)."""
    curves, summary = load_store(results)
    for metric in figures.METRICS:
        if metric not in curves.columns:
            curves[metric] = np.nan
    runs = pd.concat(
        [
            figures.label_runs(summary[summary["task"] == t])
            for t in sorted(summary["task"].unique())
        ]
    )
    tuning = None
    if (results / "tuning.csv").is_file():
        try:
            tuning = pd.read_csv(results / "tuning.csv", dtype={"task": str, "optim": str,
                                                                "sched": str})  # fmt: skip
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise StoreError(f"cannot read {results / 'tuning.csv'}: {_first_line(exc)}") from exc
        if tuning.empty:
            tuning = None
    readme = None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        readme = (results / "README.md").read_text(encoding="utf-8")
    return StoreTables(
        results, curves, runs.reset_index(drop=True), tuning, readme, _records(results)
    )


def _records(results: Path) -> list[dict[str, Any]]:
    """The provenance fields of DIR/runs/*.json (a store copied without them has none)."""
    keep = ("run_id", "status", "started_at", "versions", "device", "device_name", "threads")
    out = []
    for path in sorted((results / "runs").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            if isinstance(record, dict):
                out.append({k: record.get(k) for k in keep})
    return out


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def primary_metric(store: StoreTables, task: str) -> str:
    """The curve metric a task is judged by: test accuracy where it was measured, else the train
    loss (the 2-D surfaces), as the lr grid chooses."""
    curves = store.curves[store.curves["task"] == task]
    return "test_acc" if np.isfinite(curves["test_acc"].astype(float)).any() else "train_loss"


# ---------------------------------------------------------------------------- statistics


@dataclass
class Statistics:
    comparisons: pd.DataFrame
    rankings: pd.DataFrame
    budget: pd.DataFrame | None = None
    robustness: pd.DataFrame | None = None


def compute_statistics(store: StoreTables) -> Statistics:
    """bench.stats over the store, with the runs' labels as the competitors."""
    comparisons, rankings = stats.compare(store.runs.assign(optim=store.runs["label"]))
    budget = robustness = None
    if store.tuning is not None:
        budget = stats.tuning_budget(store.tuning)
        robustness = stats.lr_robustness(store.tuning)
    return Statistics(comparisons, rankings, budget, robustness)


def survival(st: Statistics) -> pd.DataFrame:
    """Per (task, sched, metric) cell: what the means rank and what survives pairing and Holm.

    Columns: optimizers, seeds (most pairs of a comparison), tested (pairs with >= 2 common seeds),
    raw (pairs with an uncorrected p < ALPHA), holm (pairs with a verdict), best (first by mean),
    group1 (the optimizers not significantly different from it), top_two (the verdict between the
    first two), seeds_needed (to separate them)."""
    rows = []
    for (task, sched, metric), comp in st.comparisons.groupby(stats.CELL, sort=True):
        rank = st.rankings[
            (st.rankings["task"] == task)
            & (st.rankings["sched"] == sched)
            & (st.rankings["metric"] == metric)
        ]
        top = rank["optim"].tolist()[:2]
        pair = (
            comp[(comp["optim_a"] == top[0]) & (comp["optim_b"] == top[1])]
            if len(top) == 2
            else comp[:0]
        )
        rows.append(
            {
                "task": task, "sched": sched, "metric": metric, "optimizers": len(rank),
                "seeds": int(comp["n_pairs"].max()),
                "tested": int(comp["p_value"].notna().sum()),
                "raw": int((comp["p_value"] < stats.ALPHA).sum()),
                "holm": int((comp["verdict"] != "tie").sum()),
                "best": top[0] if top else "",
                "group1": list(rank.loc[rank["group"] == 1, "optim"]),
                "top_two": pair["verdict"].iloc[0] if len(pair) else "",
                "seeds_needed": rank["seeds_needed"].iloc[0] if len(rank) else math.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=SURVIVAL_COLUMNS)


SURVIVAL_COLUMNS = ["task", "sched", "metric", "optimizers", "seeds", "tested", "raw", "holm",
                    "best", "group1", "top_two", "seeds_needed"]  # fmt: skip

# ---------------------------------------------------------------------------- figures

# pale to green (better), light enough everywhere for black text
HEATMAP_COLORS = [[0.0, "#fbfbe6"], [0.5, "#c2e699"], [1.0, "#41ab5d"]]
LAYOUT_BASE = {"margin": {"l": 60, "r": 20, "t": 60, "b": 50}, "hovermode": "closest"}


def _thin(steps: np.ndarray, n: int = DISPLAY_POINTS) -> np.ndarray:
    """The steps to draw: all when at most n, else n evenly spaced ones (first and last kept)."""
    unique = np.unique(steps)
    if len(unique) <= n:
        return unique
    return unique[np.unique(np.linspace(0, len(unique) - 1, n).round().astype(int))]


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _panels(n: int) -> tuple[int, int]:
    cols = n if n <= 3 else (2 if n == 4 else 3)
    return math.ceil(n / cols), cols


def _subplots(titles: list[str], shared_y: bool = True) -> tuple[go.Figure, int]:
    from plotly.subplots import make_subplots

    rows, cols = _panels(len(titles))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True,
                        shared_yaxes=shared_y, horizontal_spacing=0.05,
                        vertical_spacing=0.16 if rows > 1 else 0.1)  # fmt: skip
    return fig, cols


def _f32(values: Any) -> np.ndarray:
    """Display values as float32 (half the bytes; 7 significant digits are plenty on screen)."""
    return np.asarray(values, dtype=np.float32)


def _run_lines(
    data: pd.DataFrame, info: pd.DataFrame, ids: pd.Index, metric: str, keep: set[int]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The runs' thinned curves in one line with NaN gaps between runs (one trace draws faster than
    one per run), and per point a hover text naming its run."""
    xs, ys, text = [], [], []
    for run_id in ids:
        r = data[data["run_id"] == run_id].sort_values("step")
        r = r[r["step"].isin(keep) | (r["step"] == r["step"].max())]
        run = info.loc[run_id]
        about = f"run {run_id} · seed {run['seed']} · lr0 {run['lr0']:g} · {run['status']}"
        xs += [*r["step"], np.nan]
        ys += [*r[metric], np.nan]
        text += [about] * len(r) + [""]
    return _f32(xs), _f32(ys), text


def convergence_figure(store: StoreTables, task: str, metric: str) -> go.Figure:
    """Metric against step, a panel per schedule: per optimizer the mean over the ok seeds with its
    95% band (figures.convergence_data) and every run as a thin line whose hover names the run;
    diverged runs dashed, with an x where they stopped. Clicking a legend entry toggles an
    optimizer in every panel."""
    import plotly.graph_objects as go

    runs = store.runs[(store.runs["task"] == task) & (store.runs["status"] != "failed")]
    curves = store.curves[store.curves["run_id"].isin(runs["run_id"])]
    cd = figures.convergence_data(curves, runs, metric)
    keep = set(_thin(cd.data["step"].to_numpy()).tolist())
    scheds = figures.schedule_order(runs["sched"].unique())
    labels, palette = figures.label_order(runs), figures.label_palette(runs)
    fig, cols = _subplots([f"schedule: {s}" for s in scheds])
    name = figures.METRIC_LABELS[metric]
    info = runs.set_index("run_id")
    shown: set[str] = set()
    for k, sched in enumerate(scheds):
        row, col = divmod(k, cols)
        pos = {"row": row + 1, "col": col + 1}
        for label in labels:
            color = palette[label]
            ids = info.index[(info["label"] == label) & (info["sched"] == sched)]
            if len(ids) == 0:
                continue
            n_ok = int((info.loc[ids, "status"] == "ok").sum())
            single = n_ok <= 1
            for status, dash in (("ok", "solid"), ("diverged", "dash")):
                xs, ys, text = _run_lines(cd.data, info, ids[info.loc[ids, "status"] == status],
                                          metric, keep)  # fmt: skip
                if not len(xs):
                    continue
                legend = single and status == "ok" and label not in shown
                shown |= {label} if legend else set()
                fig.add_trace(
                    go.Scatter(
                        x=xs, y=ys, text=text, mode="lines", name=label, legendgroup=label,
                        showlegend=legend, line={"color": color, "dash": dash,
                                                 "width": 2.0 if single else 0.9},
                        opacity=1.0 if single else 0.5,
                        hovertemplate=f"<b>{html.escape(label)}</b> · {sched}<br>%{{text}}<br>"
                        f"step %{{x}}: {name} %{{y:.4g}}<extra></extra>",
                    ),
                    **pos,
                )  # fmt: skip
            mean = cd.stats[(cd.stats["label"] == label) & (cd.stats["sched"] == sched)]
            mean = mean[mean["step"].isin(keep)].sort_values("step")
            if n_ok > 1 and len(mean):
                band_x = np.concatenate([mean["step"], mean["step"][::-1]])
                band_y = np.concatenate([mean["high"], mean["low"][::-1]])
                fig.add_trace(
                    go.Scatter(
                        x=_f32(band_x), y=_f32(band_y), fill="toself", mode="lines",
                        fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                        legendgroup=label, showlegend=False, name=label,
                    ),
                    **pos,
                )  # fmt: skip
                fig.add_trace(
                    go.Scatter(
                        x=_f32(mean["step"]), y=_f32(mean["mean"]), mode="lines", name=label,
                        legendgroup=label, showlegend=label not in shown,
                        line={"color": color, "width": 2.2},
                        customdata=np.stack([_f32(mean["low"]), _f32(mean["high"])], axis=1),
                        hovertemplate=f"<b>{html.escape(label)}</b> · {sched}<br>mean of {n_ok} "
                        f"seeds, step %{{x}}: {name} %{{y:.4g}}<br>95% CI %{{customdata[0]:.4g}}"
                        " – %{customdata[1]:.4g}<extra></extra>",
                    ),
                    **pos,
                )  # fmt: skip
                shown.add(label)
            stopped = cd.ends[cd.ends.index.isin(ids)]
            if len(stopped):
                fig.add_trace(
                    go.Scatter(
                        x=stopped["step"].tolist(),
                        y=[v if np.isfinite(v) else None for v in stopped[metric].astype(float)],
                        mode="markers", marker={"symbol": "x", "size": 10, "color": color,
                                                "line": {"width": 1, "color": "black"}},
                        legendgroup=label, showlegend=False, name=label,
                        text=[f"run {i} diverged" for i in stopped.index],
                        hovertemplate="%{text} at step %{x}<extra></extra>",
                    ),
                    **pos,
                )  # fmt: skip
    scale = figures._y_scale(metric, cd.data[metric])
    limits = figures._y_limits(cd.ok[metric] if len(cd.ok) else cd.data[metric], scale)
    yaxis: dict[str, Any] = {"type": scale}
    if limits is not None:
        lo, hi = limits
        yaxis["range"] = [math.log10(lo), math.log10(hi)] if scale == "log" else [lo, hi]
    fig.update_yaxes(**yaxis)
    fig.update_xaxes(title_text="step", row=_panels(len(scheds))[0])
    fig.update_yaxes(title_text=name, col=1)
    n_seeds = runs["seed"].nunique()
    band = "; mean over seeds with 95% bootstrap band, thin lines: runs" if n_seeds > 1 else ""
    fig.update_layout(
        title=f"{task}: {name} vs step ({n_seeds} seed{'s' * (n_seeds != 1)}{band})",
        height=330 * _panels(len(scheds))[0] + 90,
        legend={"title": {"text": "optimizer"}},
    )
    return fig


def heatmap_figure(store: StoreTables, st: Statistics, task: str, metric: str) -> go.Figure:
    """Optimizer x schedule grid of the final metric (mean over the ok seeds; figures.heatmap_table)
    with each optimizer's ranking group in its schedule; group 1 (not significantly different from
    the best) is outlined."""
    import plotly.graph_objects as go

    runs = store.runs[store.runs["task"] == task]
    curves = store.curves[store.curves["run_id"].isin(runs["run_id"])]
    per_run = figures.run_metrics(curves, runs, [metric])
    mean, annot = figures.heatmap_table(per_run, metric)
    final = f"final_{metric}"
    rank = st.rankings[(st.rankings["task"] == task) & (st.rankings["metric"] == final)]
    rank = rank.set_index(["optim", "sched"])
    z = mean.to_numpy(dtype=float)
    finite = z[np.isfinite(z)]
    log_color = (
        figures.is_loss(metric)
        and finite.size
        and (finite > 0).all()
        and (finite.max() > 10 * finite.min())
    )
    several = rank.groupby(level="sched")["group"].max() > 1  # groups mean something there
    text, hover, shapes = [], [], []
    for i, label in enumerate(mean.index):
        text_row, hover_row = [], []
        for j, sched in enumerate(mean.columns):
            note = str(annot[i, j]).replace("\n", "<br>")
            tip = f"<b>{html.escape(label)}</b> · {sched}<br>{note}"
            if (label, sched) in rank.index:
                r = rank.loc[(label, sched)]
                std = "" if not np.isfinite(r["std"]) else f" ± {r['std']:.2g}"
                tip += (f"<br>mean {r['mean']:.4g}{std} over {int(r['n'])} runs<br>"
                        f"rank {int(r['rank'])}, group {int(r['group'])}")  # fmt: skip
                if several.get(sched, False):
                    note += f"<br><b>G{int(r['group'])}</b>"
                    if r["group"] == 1:
                        box = {"x0": j - 0.5, "x1": j + 0.5, "y0": i - 0.5, "y1": i + 0.5}
                        shapes.append(
                            {"type": "rect", **box, "line": {"color": "black", "width": 2.5}}
                        )
            text_row.append(note)
            hover_row.append(tip)
        text.append(text_row)
        hover.append(hover_row)
    with np.errstate(divide="ignore", invalid="ignore"):
        color = np.log10(z) if log_color else z
    better = "lower" if figures.is_loss(metric) else "higher"
    shown = color[np.isfinite(color)]
    limits = {}
    if shown.size:  # Tukey's fences: one far-off optimizer does not wash out the others' colours
        q1, q3 = np.percentile(shown, [25, 75])
        lo, hi = max(shown.min(), q1 - 1.5 * (q3 - q1)), min(shown.max(), q3 + 1.5 * (q3 - q1))
        # ... unless nearly all cells are equal: then the colours would magnify rounding noise
        if lo < hi and hi - lo >= 0.1 * (shown.max() - shown.min()):
            limits = {"zmin": float(lo), "zmax": float(hi)}
    colorbar = f"{'log10 ' if log_color else ''}final {figures.METRIC_LABELS[metric]}"
    fig = go.Figure(
        go.Heatmap(
            z=_f32(color), x=list(mean.columns), y=list(mean.index), text=text, customdata=hover,
            texttemplate="%{text}", hovertemplate="%{customdata}<extra></extra>",
            colorscale=HEATMAP_COLORS, reversescale=figures.is_loss(metric), xgap=2, ygap=2,
            textfont={"color": "black"}, **limits,
            colorbar={"title": {"text": f"{colorbar}<br>({better} is better)"}},
        )
    )  # fmt: skip
    fig.update_layout(
        title=f"{task}: final {figures.METRIC_LABELS[metric]}, mean over seeds"
        + ("; Gk: ranking group (outlined: G1, not significantly different from the best)"
           if several.any() else "; no schedule has a significant difference: one group"),
        shapes=shapes, height=120 + 48 * len(mean.index),
        yaxis={"autorange": "reversed", "title": {"text": "optimizer"}},
        xaxis={"title": {"text": "schedule"}, "side": "bottom"},
    )  # fmt: skip
    return fig


def sensitivity_figure(tuning: pd.DataFrame, task: str) -> go.Figure:
    """The tuning metric against the grid lr (profiles.sensitivity_frame), a panel per schedule:
    diverged or failed points as x at the panel's bottom, the chosen lr as a star."""
    import plotly.graph_objects as go

    df = profiles.sensitivity_frame(tuning[tuning["task"] == task])
    scheds = figures.schedule_order(sorted(df["sched"].unique()))
    metric = df["metric"].iloc[0]
    colors = figures.optimizer_palette(sorted(df["optim"].unique()))
    fig, cols = _subplots([f"schedule: {s}" for s in scheds])
    ok_values = df.loc[df["ok"], "value"]
    floor = float(ok_values.min()) if len(ok_values) else 0.0
    for k, sched in enumerate(scheds):
        pos = {"row": k // cols + 1, "col": k % cols + 1}
        for optim, g in df[df["sched"] == sched].groupby("optim", sort=True):
            g = g.sort_values("lr")
            ok, bad, best = g[g["ok"]], g[~g["ok"]], g[g["best"]]
            common = {"legendgroup": optim, "name": optim}
            fig.add_trace(go.Scatter(
                x=ok["lr"], y=ok["value"], mode="lines+markers", showlegend=k == 0,
                line={"color": colors[optim]}, marker={"size": 6},
                hovertemplate=f"<b>{optim}</b> · {sched}<br>lr %{{x:.4g}}: %{{y:.4g}}"
                "<extra></extra>",
                **common), **pos)  # fmt: skip
            fig.add_trace(go.Scatter(
                x=bad["lr"], y=[floor] * len(bad), mode="markers", showlegend=False,
                marker={"symbol": "x", "size": 9, "color": colors[optim]},
                text=bad["status"], hovertemplate=f"<b>{optim}</b> · lr %{{x:.4g}}: "
                "%{text}<extra></extra>", **common), **pos)  # fmt: skip
            fig.add_trace(go.Scatter(
                x=best["lr"], y=best["value"], mode="markers", showlegend=False,
                marker={"symbol": "star", "size": 15, "color": colors[optim],
                        "line": {"width": 1, "color": "black"}},
                hovertemplate=f"<b>{optim}</b> chosen: lr %{{x:.4g}}, %{{y:.4g}}<extra></extra>",
                **common), **pos)  # fmt: skip
    fig.update_xaxes(type="log", title_text="initial learning rate", row=_panels(len(scheds))[0])
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text=METRIC_TEXT.get(metric, metric), col=1)
    seeds = ", ".join(str(s) for s in sorted(df["seed"].unique()))
    fig.update_layout(
        title=f"{task}: LR sensitivity on the tuning seed ({seeds}); x: diverged or failed "
        "(drawn at the lowest value), star: the lr the grid chose",
        height=330 * _panels(len(scheds))[0] + 90,
    )
    return fig


def budget_figure(budget: pd.DataFrame, task: str) -> go.Figure:
    """Expected best tuning score after k grid trials in a random order (stats.tuning_budget)."""
    import plotly.graph_objects as go

    df = budget[budget["task"] == task]
    scheds = figures.schedule_order(sorted(df["sched"].unique()))
    colors = figures.optimizer_palette(sorted(df["optim"].unique()))
    fig, cols = _subplots([f"schedule: {s}" for s in scheds])
    for k, sched in enumerate(scheds):
        pos = {"row": k // cols + 1, "col": k % cols + 1}
        for optim, g in df[df["sched"] == sched].groupby("optim", sort=True):
            g = g.sort_values("k")
            fig.add_trace(go.Scatter(
                x=g["k"], y=g["expected_best"], mode="lines+markers", name=optim,
                legendgroup=optim, showlegend=k == 0, line={"color": colors[optim]},
                marker={"size": 5}, hovertemplate=f"<b>{optim}</b> · {sched}<br>after %{{x}} "
                "trials: expected best %{y:.4g}<extra></extra>"), **pos)  # fmt: skip
    metric = df["metric"].iloc[0]
    fig.update_xaxes(title_text="grid trials k (random order)", row=_panels(len(scheds))[0])
    fig.update_yaxes(title_text=f"expected best {METRIC_TEXT.get(metric, metric)}", col=1)
    fig.update_layout(
        title=f"{task}: tuning budget — expected best score after k of the "
        f"{int(df['n_grid'].max())} grid lrs, over every random order (exact)",
        height=330 * _panels(len(scheds))[0] + 90,
    )
    return fig


def profile_figure(store: StoreTables) -> go.Figure:
    """rho(tau) per competitor over the (task, schedule) cells (profiles.performance_profile)."""
    import plotly.graph_objects as go

    profile = profiles.performance_profile(store.runs, PROFILE_TAUS)
    colors = figures.optimizer_palette(sorted(profile["optim"].unique()))
    fig = go.Figure()
    for name, g in profile.groupby("competitor", sort=True):
        fig.add_trace(go.Scatter(
            x=g["tau"], y=g["fraction"], mode="lines", line_shape="hv", name=name,
            line={"color": colors[g["optim"].iloc[0]], "width": 2},
            hovertemplate=f"<b>{html.escape(name)}</b><br>within %{{x:.2f}}x the fastest in "
            "%{y:.0%} of the cells<extra></extra>"))  # fmt: skip
    n = int(profile["n_cells"].iloc[0]) if len(profile) else 0
    fig.update_layout(
        title=f"Performance profile over {store.runs['task'].nunique()} task(s), {n} (task, "
        "schedule) cells: reaching the target within tau x the fastest optimizer's steps",
        xaxis={"title": {"text": "tau (steps to target / fastest steps)"}, "range": [1, 4]},
        yaxis={"title": {"text": "fraction of cells"}, "range": [-0.02, 1.02]}, height=420,
    )  # fmt: skip
    return fig


# ---------------------------------------------------------------------------- tables


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(v)
    v = float(v)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}"


def _p(v: float) -> str:
    if not np.isfinite(v):
        return "—"
    return "<1e-6" if v < 1e-6 else f"{v:.3g}"


def _sort_value(v: Any) -> str:
    """data-v of a cell: numbers sort numerically (NaN last), text as text."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        v = float(v)
        return (
            ""
            if math.isnan(v)
            else repr(v)
            if math.isfinite(v)
            else ("1e308" if v > 0 else "-1e308")
        )
    return html.escape(str(v))


def html_table(
    columns: Sequence[str],
    rows: list[list[tuple[Any, str]]],
    filters: dict[str, list[Any]],
    table_id: str,
    caption: str,
    defaults: dict[str, str] | None = None,
) -> str:
    """A sortable table (click a header) with a select per filtered column; cells are
    (sort value, html)."""
    if not rows:
        return f'<p class="muted" id="{table_id}">{caption}: nothing to show here.</p>'
    defaults = defaults or {}
    selects = []
    for col, values in filters.items():
        idx = list(columns).index(col)
        opts = ['<option value="">all</option>'] + [
            f'<option value="{html.escape(str(v))}"'
            f"{' selected' if str(v) == defaults.get(col) else ''}>{html.escape(str(v))}</option>"
            for v in values
        ]
        selects.append(f'<label>{html.escape(col)} <select data-col="{idx}">{"".join(opts)}'
                       "</select></label>")  # fmt: skip
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f'<td data-v="{_sort_value(v)}">{h}</td>' for v, h in row) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="table-block" id="{table_id}"><div class="toolbar"><span class="caption">'
        f'{caption}</span> {" ".join(selects)} <span class="count"></span></div>'
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div></div>"
    )


def comparisons_table(st: Statistics, task: str, primary: str, table_id: str) -> str:
    comp = st.comparisons[st.comparisons["task"] == task]
    columns = ["schedule", "metric", "a", "b", "pairs", "mean diff (a − b)", "95% CI", "p",
               "p (Holm)", "verdict", "test"]  # fmt: skip
    rows = []
    for r in comp.itertuples(index=False):
        ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" + (" (median)" if r.ci_of == "median" else "")
        css = {"a_better": "win", "b_better": "loss"}.get(r.verdict, "tie")
        rows.append([
            (r.sched, html.escape(r.sched)), (r.metric, r.metric),
            (r.optim_a, html.escape(r.optim_a)), (r.optim_b, html.escape(r.optim_b)),
            (r.n_pairs, str(r.n_pairs)), (r.mean_diff, _num(r.mean_diff)), (r.ci_low, ci),
            (r.p_value, _p(r.p_value)), (r.p_holm, _p(r.p_holm)),
            (r.verdict, f'<span class="{css}">{r.verdict}</span>'), (r.test, r.test),
        ])  # fmt: skip
    caption = (
        "Paired comparisons on common seeds (a: the better-ranked); verdict after Holm's "
        f"correction within each schedule and metric at α = {stats.ALPHA}"
    )
    return html_table(
        columns, rows,
        {"schedule": figures.schedule_order(comp["sched"].unique()),
         "metric": list(dict.fromkeys(comp["metric"])), "verdict": list(stats.VERDICTS)},
        table_id, caption, {"metric": primary},
    )  # fmt: skip


def rankings_table(st: Statistics, task: str, primary: str, table_id: str) -> str:
    rank = st.rankings[st.rankings["task"] == task]
    columns = ["schedule", "metric", "optimizer", "mean", "std", "runs", "worst runs", "rank",
               "group"]  # fmt: skip
    rows = [
        [
            (r.sched, html.escape(r.sched)), (r.metric, r.metric),
            (r.optim, html.escape(r.optim)), (r.mean, _num(r.mean)), (r.std, _num(r.std, 2)),
            (r.n, str(r.n)), (r.n_worst, str(r.n_worst)), (r.rank, str(r.rank)),
            (r.group, f'<span class="g{min(r.group, 4)}">G{r.group}</span>'),
        ]
        for r in rank.itertuples(index=False)
    ]  # fmt: skip
    caption = (
        "Rankings: mean and std over the runs (worst runs: diverged, or never reached the target, "
        "counted as worse than any other); group 1 = not significantly different from the best"
    )
    return html_table(
        columns, rows,
        {"schedule": figures.schedule_order(rank["sched"].unique()),
         "metric": list(dict.fromkeys(rank["metric"]))},
        table_id, caption, {"metric": primary},
    )  # fmt: skip


def groups_table(cells: pd.DataFrame, task: str, table_id: str, primary: str) -> str:
    """Per schedule and metric: the first by mean, group 1, what survives, seeds needed."""
    cells = cells[cells["task"] == task]
    columns = ["schedule", "metric", "first by mean", "group 1 (not significantly different)",
               "pairs significant: raw / Holm / tested", "top two",
               "seeds to separate top two"]  # fmt: skip
    rows = []
    for r in cells.itertuples(index=False):
        needed = r.seeds_needed
        rows.append([
            (r.sched, html.escape(r.sched)), (r.metric, r.metric),
            (r.best, html.escape(r.best)),
            (len(r.group1), html.escape(", ".join(r.group1))),
            (r.holm, f"{r.raw} / {r.holm} / {r.tested}"),
            (r.top_two, r.top_two or "—"),
            (needed, _num(needed) if r.seeds >= 2 else f"— ({r.seeds} seed)"),
        ])  # fmt: skip
    caption = (
        "What survives pairing and correction: the best by mean, its group, and the seeds a paired "
        f"t-test needs to separate the top two with {stats.POWER:.0%} power at the observed "
        "variance"
    )
    return html_table(
        columns, rows,
        {"schedule": figures.schedule_order(cells["sched"].unique()),
         "metric": list(dict.fromkeys(cells["metric"]))},
        table_id, caption, {"metric": primary},
    )  # fmt: skip


def robustness_table(st: Statistics, task: str, table_id: str) -> str:
    rob = st.robustness[st.robustness["task"] == task]
    columns = ["schedule", "optimizer", "chosen lr", "best", "lrs within tolerance", "width "
               "(decades)", "finished / grid"]  # fmt: skip
    rows = []
    for r in rob.itertuples(index=False):
        within = "—" if not r.n_ok else f"{_num(r.lr_low)} – {_num(r.lr_high)} ({r.n_within})"
        rows.append([
            (r.sched, html.escape(r.sched)), (r.optim, html.escape(r.optim)),
            (r.lr_best, _num(r.lr_best)), (r.best, _num(r.best)), (r.lr_low, within),
            (r.width_decades, _num(r.width_decades, 3)), (r.n_ok, f"{r.n_ok} / {r.n_grid}"),
        ])  # fmt: skip
    tol = rob["tol"].dropna()
    caption = (
        "LR robustness: the contiguous grid lrs around the chosen one that finished within "
        f"{tol.iloc[0]:.0%} (relative) of the best score"
        if len(tol)
        else "LR robustness"
    )
    return html_table(columns, rows, {"schedule": figures.schedule_order(rob["sched"].unique())},
                      table_id, caption)  # fmt: skip


# ---------------------------------------------------------------------------- provenance


CODE_PATHS = ("bench", "optimizers", "schedulers", "scripts", "pyproject.toml")


def code_commit() -> str:
    """The checkout's commit, with "+ uncommitted code" when the code differs from it (results
    and docs written since do not count); "unknown" outside a git checkout."""
    return provenance.git_commit(length=12, paths=CODE_PATHS, dirty=" + uncommitted code")


def _versions() -> dict[str, str]:
    return provenance.versions("optbench", *VERSION_PACKAGES)


def equivalent_commands(runs: pd.DataFrame, out: str) -> list[tuple[str, int, bool]]:
    """bench.run command lines that would produce the store's runs, reconstructed from
    summary.csv: (command, runs, whether the runs fill its whole optimizer x schedule x seed
    grid). The eval period, data folder and --jobs are not recorded, so not given."""
    df = runs.copy()
    source = df.get("lr_source", pd.Series("default", index=df.index)).fillna("default")
    df["lr_source"] = source.replace("class_default", "default")  # both untuned: one competitor
    df["lr_key"] = np.where(df["lr_source"] == "shared", df["lr0"].map(lambda v: f"{v:g}"), "")
    keys = ["task", "steps", "batch_size", "warmup", "opt_args", "sched_args", "lr_source",
            "lr_key", "device"]  # fmt: skip
    keys = [k for k in keys if k in df.columns]
    lines = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        k = dict(zip(keys, key, strict=True))
        optims = sorted(g["optim"].unique())
        scheds = figures.schedule_order(g["sched"].unique())
        seeds = sorted(int(s) for s in g["seed"].unique())
        seed_text = (
            str(len(seeds)) if seeds == list(range(len(seeds))) else ",".join(map(str, seeds))
        )
        parts = ["python -m bench.run", f"--task {k['task']}", f"--optim {','.join(optims)}",
                 f"--sched {','.join(scheds)}", f"--seeds {seed_text}",
                 f"--steps {int(k['steps'])}"]  # fmt: skip
        if pd.notna(k.get("batch_size")):
            parts.append(f"--batch-size {int(k['batch_size'])}")
        if pd.notna(k.get("warmup")) and int(k["warmup"]):
            parts.append(f"--warmup {int(k['warmup'])}")
        for flag, col in (("--opt-arg", "opt_args"), ("--sched-arg", "sched_args")):
            with contextlib.suppress(TypeError, ValueError):
                for name, value in json.loads(k.get(col) or "{}").items():
                    parts.append(f"{flag} {shlex.quote(f'{name}={value!r}')}")
        source = k.get("lr_source", "default")
        if source == "shared":
            parts.append(f"--lr {k['lr_key']}")
        elif source in ("search", "grid"):
            parts.append(f"--lr {source}")
        if pd.notna(k.get("device")):
            parts.append(f"--device {k['device']}")
        parts.append(f"--out {shlex.quote(out)}")
        full = len(g) == len(optims) * len(scheds) * len(seeds)
        lines.append((" ".join(parts), len(g), full))
    return lines


def provenance_html(store: StoreTables, argv: list[str]) -> str:
    runs = store.runs
    counts = runs.pivot_table(index="task", columns="status", values="run_id", aggfunc="count",
                              fill_value=0)  # fmt: skip
    counts["total"] = counts.sum(axis=1)
    status_rows = "".join(
        f"<tr><td>{html.escape(t)}</td>" + "".join(f"<td>{int(v)}</td>" for v in row) + "</tr>"
        for t, row in counts.iterrows()
    )
    totals = "".join(f"<td><b>{int(v)}</b></td>" for v in counts.sum(axis=0))
    status_table = (
        '<table class="small"><thead><tr><th>task</th>'
        + "".join(f"<th>{html.escape(str(c))}</th>" for c in counts.columns)
        + f"</tr></thead><tbody>{status_rows}<tr><td><b>all</b></td>{totals}</tr></tbody></table>"
    )
    device = runs["device"].fillna("?").astype(str).value_counts() if "device" in runs else None
    devices = ", ".join(f"{d} ({n} runs)" for d, n in device.items()) if device is not None else "?"
    items = [
        ("report command", f"<code>{html.escape(shlex.join(argv))}</code>"),
        ("report written", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        ("code commit", f"<code>{html.escape(code_commit())}</code>"),
        ("report versions", html.escape(", ".join(f"{k} {v}" for k, v in _versions().items()))),
        ("store", f"<code>{html.escape(str(store.path))}</code>"),
        ("devices (summary.csv)", html.escape(devices)),
    ]
    if "threads" in runs:
        threads = sorted(runs["threads"].dropna().astype(int).unique())
        items.append(("torch threads per run", ", ".join(map(str, threads)) or "?"))
    if store.records:
        started = sorted(r["started_at"] for r in store.records if r.get("started_at"))
        if started:
            items.append(("runs started", html.escape(f"{started[0]} … {started[-1]}")))
        names = pd.Series([r.get("device_name") for r in store.records]).dropna().value_counts()
        items.append(("device names (runs/*.json)",
                      html.escape(", ".join(f"{d} ({n})" for d, n in names.items()))))  # fmt: skip
        versions = pd.Series(
            [json.dumps(r.get("versions") or {}, sort_keys=True) for r in store.records]
        ).value_counts()
        text = "; ".join(
            ", ".join(f"{k} {v}" for k, v in json.loads(vs).items()) + f" ({n} runs)"
            for vs, n in versions.items()
        )
        items.append(("run versions (runs/*.json)", html.escape(text)))
    else:
        note = "not in the store (copied without the run records): see its README, if any"
        items.append(("runs/*.json", note))
    commands = "".join(
        f'<li><code>{html.escape(c)}</code> <span class="muted">({n} runs'
        f"{'' if full else ', not the whole grid'})</span></li>"
        for c, n, full in equivalent_commands(runs, str(store.path))
    )
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    readme = ""
    if store.readme:
        readme = (
            "<h3>The store's README.md</h3>"
            f'<pre class="readme">{html.escape(store.readme.strip())}</pre>'
        )
    return (
        '<section id="provenance" class="card"><h2>Provenance</h2>'
        f'<dl class="prov">{dl}</dl><h3>Runs by status</h3>{status_table}'
        '<h3>Commands</h3><p class="muted">bench.run command lines that produce these runs, '
        "reconstructed from summary.csv (the eval period, data folder and --jobs are not "
        f'recorded there):</p><ul class="commands">{commands}</ul>{readme}</section>'
    )


# ---------------------------------------------------------------------------- the page


@dataclass
class Page:
    """Collects the figures' JSON (drawn by one script at the end) and HTML blocks."""

    figures: list[tuple[str, str]] = field(default_factory=list)

    def figure(self, fig: go.Figure, css: str = "fig") -> str:
        import plotly.io as pio

        fig.update_layout(**LAYOUT_BASE)
        spec = fig.to_plotly_json()
        spec["layout"].pop("template", None)  # the page's one template is applied in the browser
        data = pio.to_json(spec, validate=False, engine="json")
        fig_id = f"fig{len(self.figures)}"
        self.figures.append((fig_id, data.replace("</", "<\\/")))
        return f'<div class="{css}" id="{fig_id}"></div>'

    def scripts(self) -> str:
        blobs = "\n".join(
            f'<script type="application/json" id="{i}-data">{d}</script>' for i, d in self.figures
        )
        return blobs


def _template_json() -> str:
    import plotly.io as pio

    template = pio.templates["plotly_white"].to_plotly_json()
    return json.dumps(template, separators=(",", ":")).replace("</", "<\\/")


def _anchor(task: str) -> str:
    """An id for a task's section: its name with anything but letters, digits, - and _ as -."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in task)


def task_section(
    store: StoreTables, st: Statistics, cells: pd.DataFrame, task: str, page: Page
) -> str:
    metric = primary_metric(store, task)
    final = f"final_{metric}"
    runs = store.runs[store.runs["task"] == task]
    n_seeds = runs["seed"].nunique()
    tid = _anchor(task)
    parts = [
        f'<section class="task card" id="task-{tid}"><h2>{html.escape(task)}</h2>',
        f'<p class="muted">{len(runs)} runs: {runs["label"].nunique()} optimizers × '
        f"{runs['sched'].nunique()} schedules × {n_seeds} seed{'s' * (n_seeds != 1)}; judged by "
        f"{METRIC_TEXT[final]}.</p>",
    ]
    if (runs["status"] == "failed").all():
        errors = runs["error"].dropna().astype(str).unique()[:3] if "error" in runs else []
        listed = "".join(f"<li><code>{html.escape(e[:300])}</code></li>" for e in errors)
        note = '<p class="summary">Every run of this task failed: nothing to compare.</p>'
        return "\n".join([*parts, note, f"<ul>{listed}</ul>" if listed else "", "</section>"])
    parts += [
        _task_summary(cells[(cells["task"] == task) & (cells["metric"] == final)]),
        page.figure(convergence_figure(store, task, metric)),
        page.figure(heatmap_figure(store, st, task, metric)),
        groups_table(cells, task, f"groups-{tid}", final),
        comparisons_table(st, task, final, f"comparisons-{tid}"),
        rankings_table(st, task, final, f"rankings-{tid}"),
    ]
    tuning = store.tuning
    if tuning is not None and task in set(tuning["task"]):
        parts += [
            "<h3>Tuning</h3>",
            page.figure(sensitivity_figure(tuning, task)),
            page.figure(budget_figure(st.budget, task)),
            robustness_table(st, task, f"robustness-{tid}"),
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _task_summary(cells: pd.DataFrame) -> str:
    """Two sentences on the primary metric: what the means rank and what survives."""
    if cells.empty:
        return ""
    seeds = int(cells["seeds"].max())
    if seeds < 2:
        return ('<p class="summary">One seed per optimizer: no paired test is possible, so every '
                "comparison is a tie and the ranking is by the single run.</p>")  # fmt: skip
    unique_best = cells[cells["group1"].map(len) == 1]
    return (
        f'<p class="summary">Over {len(cells)} schedule(s): {int(cells["raw"].sum())} of '
        f"{int(cells['tested'].sum())} ordered pairs differ at p &lt; {stats.ALPHA} before "
        f"correction, {int(cells['holm'].sum())} after Holm's; the best by mean is significantly "
        f"ahead of every other optimizer in {len(unique_best)} of them. Group 1 sizes: "
        + ", ".join(f"{r.sched} {len(r.group1)}" for r in cells.itertuples())
        + ".</p>"
    )


ASSETS = Path(__file__).resolve().parent


def _asset(name: str) -> str:
    """report.css / report.js, kept as files beside this module so they read as CSS and JS."""
    return (ASSETS / name).read_text(encoding="utf-8")


def render(store: StoreTables, st: Statistics, argv: list[str]) -> str:
    """The whole page as one string."""
    from plotly.offline import get_plotlyjs

    page = Page()
    cells = survival(st)
    tasks = store.tasks
    sections = [task_section(store, st, cells, t, page) for t in tasks]
    has_target = (
        "steps_to_target" in store.runs.columns and store.runs["steps_to_target"].notna().any()
    )
    if has_target:
        sections.append(
            '<section class="card" id="profile"><h2>Performance profile</h2>'
            '<p class="muted">A cell is a (task, schedule) pair; a competitor reaches the '
            "target in a cell at the median over its seeds of its steps (never reached: ∞). "
            "rho(tau) is the fraction of cells where it is within tau× the fastest.</p>"
            + page.figure(profile_figure(store))
            + "</section>"
        )
    nav = "".join(f'<a href="#task-{_anchor(t)}">{html.escape(t)}</a>' for t in tasks)
    nav += '<a href="#profile">profile</a>' if has_target else ""
    reading = (
        '<section class="card legend-box"><h2>How to read it</h2><ul>'
        "<li>Runs with the same seed share the initialisation and the minibatch order, so two "
        "optimizers are compared on their <b>common seeds</b>: the mean paired difference "
        "(a − b), its 95% CI (paired t; for runs that diverged or never reached the target a "
        "Wilcoxon signed-rank test and the CI of the median difference) and the p-value.</li>"
        "<li><b>Holm's correction</b> within each (task, schedule, metric) keeps the chance of "
        f"any false difference in it below {stats.ALPHA}. Verdict "
        '<span class="win">a_better</span> / <span class="loss">b_better</span>: significant '
        "in the metric's own direction; "
        '<span class="tie">tie</span>: no significant difference (not: no difference).</li>'
        "<li><b>Groups</b>: G1 is the best by mean and every optimizer not significantly different "
        "from it; G2 the best of the rest with those not different from it; and so on. One seed "
        "allows no test: everything is G1.</li>"
        "<li>Curves are thinned for display; every statistic uses every run.</li></ul></section>"
    )
    body = "\n".join([provenance_html(store, argv), reading, *sections])
    title = f"optbench report: {store.path}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_asset('report.css')}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><nav>{nav}</nav></header><main>{body}</main>"
        f'<script type="application/json" id="plotly-template">{_template_json()}</script>'
        # the text and tables are painted, and the tables work, before plotly.js (4.8 MB) is
        # evaluated; then the figures are drawn
        f"{page.scripts()}<script>{_asset('report.js')}</script>"
        f"<script>{get_plotlyjs()}</script><script>reportDrawFigures();</script></body></html>\n"
    )


# ---------------------------------------------------------------------------- writing


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file and os.replace, so a reader never sees half a file (bench.
    store has the same writer, but importing it loads torch)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_report(results: Path, out: Path, argv: list[str] | None = None) -> list[Path]:
    """Compute the statistics, write the CSV files and index.html into ``out``; the paths."""
    store = read_store(results)
    st = compute_statistics(store)
    argv = argv or ["python", "-m", "bench.report", "--results", str(results), "--out", str(out)]
    page = render(store, st, argv)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write the report to --out {out}: {exc.strerror or exc}") from exc
    tables = {"comparisons.csv": st.comparisons, "rankings.csv": st.rankings}
    if st.budget is not None:
        tables.update({"tuning_budget.csv": st.budget, "lr_robustness.csv": st.robustness})
    written = []
    for name, table in tables.items():
        _write(out / name, table.to_csv(index=False).encode())
        written.append(out / name)
    _write(out / "index.html", page.encode("utf-8"))
    written.append(out / "index.html")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.results / "report"
    shown = ["python", "-m", "bench.report", *(sys.argv[1:] if argv is None else argv)]
    try:
        written = write_report(args.results, out, shown)
    except StoreError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write to {out}: {exc.strerror or exc}\n")
    size = (out / "index.html").stat().st_size
    print(f"wrote {', '.join(p.name for p in written)} to {out} (index.html {size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    from bench.procs import exit_now

    exit_now(main())


# ---------------------------------------------------------------------------- checking the page

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright drives it, nothing is downloaded
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
    "--disable-extensions",
)  # fmt: skip

_INSPECT = """() => {
  const seen = (el) => { const r = el.getBoundingClientRect();
    return el.checkVisibility() && r.width > 0 && r.height > 0; };
  const box = (el) => { const r = el.getBoundingClientRect();
    return {width: Math.round(r.width), height: Math.round(r.height)}; };
  return {
    sections: Array.from(document.querySelectorAll('section')).map(s => ({
      id: s.id, visible: seen(s), heading: (s.querySelector('h2') || {}).textContent || ''})),
    figures: Array.from(document.querySelectorAll('div.fig')).map(d => ({
      id: d.id, visible: seen(d), drawn: d.dataset.rendered === 'true', ...box(d),
      traces: (d._fullData || []).length, svg: d.querySelectorAll('svg.main-svg').length})),
    tables: Array.from(document.querySelectorAll('table')).map(t => ({
      id: (t.closest('.table-block') || t.closest('section') || {}).id || '', visible: seen(t),
      rows: Array.from(t.tBodies[0].rows).filter(seen).length})),
  };
}"""


def _renderer_cpu_ms() -> float:
    """CPU time (user + system) of the main threads of the Chromium renderer processes among this
    process's descendants, from /proc; NaN where there is no /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return math.nan
    parent = {}
    for entry in proc.iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    mine, frontier = set(), {os.getpid()}
    while frontier:
        mine |= frontier
        frontier = {p for p, pp in parent.items() if pp in frontier} - mine
    ticks = 0
    for pid in mine:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if b"--type=renderer" in (proc / str(pid) / "cmdline").read_bytes():
                fields = (proc / str(pid) / "task" / str(pid) / "stat").read_text()
                fields = fields.rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime of the main thread
    return 1000 * ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class PageCheck:
    """What a browser saw of a report page (times in ms from the start of navigation)."""

    console_errors: list[str]
    failed_requests: list[str]
    outside_requests: list[str]  # requests to anything but a file: or data: URL
    first_paint_ms: float  # the first text painted (first-contentful-paint)
    tables_ms: float  # the tables sortable and filterable
    first_view_ms: float  # the figures on the first screen drawn
    all_drawn_ms: float  # every figure drawn
    main_thread_cpu_ms: float  # CPU time of the renderers' main threads until every figure is
    # drawn: the page's work, close to its load time on an idle machine however busy this one is
    sections: list[dict[str, Any]]
    figures: list[dict[str, Any]]
    tables: list[dict[str, Any]]


def check_page(
    index: Path, screenshot: Path | None = None, chromium: str = CHROMIUM,
    viewport: tuple[int, int] = (1400, 900), timeout_s: float = 120.0,
) -> PageCheck:  # fmt: skip
    """Open ``index`` in headless Chromium (Playwright's Python API driving ``chromium``), wait
    until every figure is drawn, and report errors, requests, timings and what is visible; save a
    full-page screenshot when asked. Needs the ``playwright`` package and a Chromium binary."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    failed: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            cpu_before = _renderer_cpu_ms()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(f"{r.url[:120]}: {r.failure}"))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else
                    outside.append(r.url[:120]))  # fmt: skip
            timeout = timeout_s * 1000
            page.set_default_timeout(timeout)
            page.goto(Path(index).resolve().as_uri(), wait_until="load", timeout=timeout)
            page.wait_for_function("window.reportReady === true", timeout=timeout)
            paint, tables, first, done = page.evaluate(
                "[(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,"
                " window.reportTablesMs, window.reportFirstViewMs, window.reportReadyMs]"
            )
            main_thread = _renderer_cpu_ms() - cpu_before
            seen = page.evaluate(_INSPECT)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True, timeout=timeout)
        finally:
            browser.close()
    times = [float(v) if v is not None else math.nan for v in (paint, tables, first, done)]
    return PageCheck(errors, failed, outside, *times, main_thread, seen["sections"],
                     seen["figures"], seen["tables"])  # fmt: skip
