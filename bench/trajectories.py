"""The article's figure 1: every optimizer's path over the 2-D loss surfaces.

Every path is a ``bench.run`` run (constant schedule, seed 0, the task's start point) kept in a
store, and read back from its ``curves.csv`` ``x, y`` columns. :func:`make_figures` writes, with
TAG ``tuned`` or ``lr<X>``:

* ``trajectories_<TAG>.png``: a panel per surface: log-spaced contours of f - f*, one colour per
  optimizer as in ``bench.plot``, the start o and the minimum *, X where a run diverged;
* ``trajectories_<TAG>_loss.png``: f(x_t, y_t) - f* against step t (log scale);
* ``trajectories_<TAG>_<surface>.gif``: the paths growing, animated.

The lrs: one lr for every optimizer (the article's "similar hyperparameters"), or each
optimizer's tuned lr per surface. Tuning is ``bench.run --lr grid`` itself (:func:`select_lrs`):
every lr of the default grid (``bench.plan.DEFAULT_GRID``) on seed 0, and per (surface, optimizer)
the lr that ``bench.tuning.select_best`` picks, the lowest final f(x, y) among the runs that did
not diverge, ties to the smaller lr. TUNED_LR is that selection's result at the tasks' default
500 steps, so that the figures need no tuning runs; a slow test reproduces it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from bench import api, figures, tasks
from bench import run as bench_run
from bench.plan import DEFAULT_GRID
from bench.plot import load_store

SURFACES = ("beale", "long_valley", "saddle", "rosenbrock")
GRID = DEFAULT_GRID  # the lrs tuning tries: bench.run --lr grid's default LO:HI:N
# The view of each surface: (x min, x max, y min, y max); contains the start and the minimum.
VIEW = {
    "beale": (-1.5, 4.5, -2.0, 2.5),
    "long_valley": (-4.5, 1.0, -1.5, 1.5),
    "saddle": (-1.5, 1.5, -2.0, 2.0),
    "rosenbrock": (-2.0, 2.0, -1.5, 3.5),
}
# select_lrs(store, optimizers.available(), SURFACES, steps=500) (see the module docstring). The
# grid ranks by the raw final loss, so where several lrs reach a minimum to rounding (Rprop adapts
# its step, lr is only the first one) the pick among them is a rounding-level choice.
TUNED_LR: dict[str, dict[str, float]] = {
    "beale": {
        "adadelta": 3.162,
        "adagrad": 1.0,
        "adam": 3.162,
        "momentum": 0.003162,
        "nesterov": 0.003162,
        "rmsprop": 0.03162,
        "rprop": 0.0003162,
        "sgd": 0.03162,
    },
    "long_valley": {
        "adadelta": 3.162,
        "adagrad": 3.162,
        "adam": 1.0,
        "momentum": 0.3162,
        "nesterov": 0.1,
        "rmsprop": 0.03162,
        "rprop": 1e-05,
        "sgd": 0.1,
    },
    "saddle": {
        "adadelta": 1.0,
        "adagrad": 0.3162,
        "adam": 0.01,
        "momentum": 0.3162,
        "nesterov": 0.03162,
        "rmsprop": 0.01,
        "rprop": 0.0003162,
        "sgd": 0.03162,
    },
    "rosenbrock": {
        "adadelta": 1.0,
        "adagrad": 1.0,
        "adam": 1.0,
        "momentum": 0.003162,
        "nesterov": 0.001,
        "rmsprop": 0.3162,
        "rprop": 0.3162,
        "sgd": 0.003162,
    },
}
SEED, SCHEDULE = 0, "constant"  # bench.run --seeds 1 runs seed 0 only
GIF_FRAMES, GIF_FPS = 60, 12


def run_sweep(store: Path, optims: list[str], surfaces: list[str], lr: float, steps: int) -> int:
    """One bench.run command: these optimizers on these surfaces at one lr."""
    argv = ["--optim", ",".join(optims), "--task", ",".join(surfaces), "--sched", SCHEDULE]
    argv += ["--seeds", "1", "--lr", repr(lr), "--steps", str(steps)]
    return bench_run.main([*argv, "--out", str(store), "--quiet", "--device", "cpu"])


def select_runs(summary: pd.DataFrame, steps: int) -> pd.DataFrame:
    """The store's runs made by :func:`run_sweep` with these steps (any lr)."""
    keep = (summary["sched"] == SCHEDULE) & (summary["seed"] == SEED) & (summary["steps"] == steps)
    for col, default in (("warmup", 0), ("opt_args", "{}"), ("sched_args", "{}")):
        if col in summary.columns:
            keep &= summary[col].fillna(default).astype(type(default)) == default
    return summary[keep]


def select_lrs(
    store: Path, optims: list[str], surfaces: list[str], steps: int, grid: str = GRID
) -> dict[str, dict[str, float]]:
    """Per surface and optimizer, the lr that ``bench.run --lr grid --lr-grid GRID`` chooses.

    The grid runs go to the store's ``tuning/`` sub-store (the store's ``tuning.csv`` lists every
    grid point) and the chosen runs to the store; reruns reuse both. An optimizer whose runs all
    diverged on a surface has no entry. Raises ValueError on bad input (as ``bench.sweep``)."""
    summary = api.sweep(
        optim=optims, task=surfaces, sched=SCHEDULE, seeds=1, out=store, lr="grid",
        lr_grid=grid, steps=steps, quiet=True, device="cpu",
    )  # fmt: skip
    lrs: dict[str, dict[str, float]] = {s: {} for s in surfaces}
    for row in summary.itertuples():  # the runs at each cell's chosen lr
        lrs[row.task][row.optim] = float(row.lr0)
    return lrs


def paths_for(store: Path, lrs: dict[str, dict[str, float]], steps: int) -> pd.DataFrame:
    """Curves (step, x, y, train_loss) of each (surface, optimizer) run at its lr, with status."""
    curves, summary = load_store(store)
    runs = select_runs(summary, steps)
    wanted = [(s, o, lr) for s, by_optim in lrs.items() for o, lr in by_optim.items()]
    picked = [
        runs[(runs["task"] == s) & (runs["optim"] == o) & np.isclose(runs["lr0"], lr, rtol=1e-12)]
        for s, o, lr in wanted
    ]
    picked = pd.concat(picked)[["run_id", "status"]]
    return curves.merge(picked, on="run_id").sort_values(["task", "optim", "step"])


def _surface_grid(name: str, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x0, x1, y0, y1 = VIEW[name]
    xs, ys = torch.meshgrid(
        torch.linspace(x0, x1, n, dtype=torch.float64),
        torch.linspace(y0, y1, n, dtype=torch.float64),
        indexing="xy",
    )
    z = tasks.TASKS[name].surface(xs, ys)
    return xs.numpy(), ys.numpy(), z.numpy()


def _f_star(name: str) -> float:
    task = tasks.TASKS[name]
    return float(task.surface(*(torch.tensor(v, dtype=torch.float64) for v in task.minimum)))


def draw_surface(ax, name: str) -> None:
    """Filled contours (log-spaced levels of f - f*), the start (o) and the minimum (*)."""
    xs, ys, z = _surface_grid(name)
    gap = z - _f_star(name) + 1e-3  # > 0 everywhere: log-spaced levels resolve the valleys
    levels = np.logspace(np.log10(gap.min()), np.log10(gap.max()), 25)
    # a few flat grey bands (not a smooth gradient) leave a GIF's 256 colours to the paths
    ax.contourf(xs, ys, gap, levels=levels, norm=LogNorm(), cmap="Greys_r", alpha=0.55)
    ax.contour(xs, ys, gap, levels=levels, norm=LogNorm(), colors="0.35", linewidths=0.4)
    task = tasks.TASKS[name]
    ax.plot(*task.start, "o", ms=9, mfc="white", mec="black", mew=1.5, zorder=6)
    ax.plot(*task.minimum, "*", ms=16, color="gold", mec="black", mew=1.0, zorder=6)
    x0, x1, y0, y1 = VIEW[name]
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y")


def _legend_handles(optims, palette, lrs_of_surface, statuses) -> list[Line2D]:
    handles = []
    for o in optims:
        note = " (diverged)" if statuses.get(o) == "diverged" else ""
        handles.append(
            Line2D([], [], color=palette[o], lw=2, label=f"{o} lr={lrs_of_surface[o]:g}{note}")
        )
    handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="start"))
    handles.append(
        Line2D([], [], ls="", marker="*", ms=11, color="gold", mec="black", label="minimum")
    )
    return handles


def trajectory_figure(paths: pd.DataFrame, lrs, title: str) -> Figure:
    surfaces = [s for s in SURFACES if s in lrs]
    optims = sorted(paths["optim"].unique())
    palette = figures.optimizer_palette(optims)
    ncols = 2 if len(surfaces) > 1 else 1
    nrows = -(-len(surfaces) // ncols)
    fig = Figure(figsize=(7.0 * ncols, 4.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes[len(surfaces) :]:
        fig.delaxes(ax)
    for ax, name in zip(axes, surfaces, strict=False):
        draw_surface(ax, name)
        statuses = {}
        for optim, run in paths[paths["task"] == name].groupby("optim"):
            color = palette[optim]
            ax.plot(run["x"], run["y"], color=color, lw=1.8, zorder=4)
            end = run.dropna(subset=["x", "y"]).iloc[-1]
            statuses[optim] = run["status"].iloc[0]
            x0, x1, y0, y1 = VIEW[name]  # a run that left the view ends on its edge
            end_x, end_y = np.clip(end["x"], x0, x1), np.clip(end["y"], y0, y1)
            marker, size = ("X", 9) if statuses[optim] == "diverged" else ("o", 6)
            ax.plot(
                end_x, end_y, marker, ms=size, color=color, mec="black", mew=0.6, zorder=5,
                clip_on=False,
            )  # fmt: skip
        steps = int(paths.loc[paths["task"] == name, "step"].max())
        ax.set_title(f"{name} ({steps} steps)")
        here = sorted(statuses)
        ax.legend(
            handles=_legend_handles(here, palette, lrs[name], statuses),
            loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
        )  # fmt: skip
    fig.suptitle(title)
    return fig


def loss_figure(paths: pd.DataFrame, lrs, title: str) -> Figure:
    """f(x, y) - f* against step per surface (log scale), same colours."""
    surfaces = [s for s in SURFACES if s in lrs]
    optims = sorted(paths["optim"].unique())
    palette = figures.optimizer_palette(optims)
    ncols = 2 if len(surfaces) > 1 else 1
    nrows = -(-len(surfaces) // ncols)
    fig = Figure(figsize=(5.0 * ncols + 2.0, 3.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes[len(surfaces) :]:
        fig.delaxes(ax)
    for ax, name in zip(axes, surfaces, strict=False):
        f_star = _f_star(name)
        task = tasks.TASKS[name]
        start_gap = float(task.surface(*(torch.tensor(v) for v in task.start))) - f_star
        top = 100 * start_gap  # a diverged run must not squash the others
        for optim, run in paths[paths["task"] == name].groupby("optim"):
            gap = (run["train_loss"] - f_star).clip(lower=1e-16)
            ax.plot(run["step"], gap, color=palette[optim], lw=1.5)
            if run["status"].iloc[0] == "diverged":
                stop = run["step"].iloc[-1]
                ax.plot(stop, top, "X", ms=9, color=palette[optim], mec="black", clip_on=False)
        ax.set(yscale="log", title=name, xlabel="step", ylabel="f - f* (log scale)")
        ax.set_ylim(top=top)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=palette[o], lw=2, label=o) for o in optims]
    if (paths["status"] == "diverged").any():
        handles.append(
            Line2D([], [], ls="", marker="X", color="0.4", mec="black", label="diverged")
        )
    fig.legend(handles=handles, loc="outside right upper", title="optimizer", frameon=False)
    fig.suptitle(title)
    return fig


def animate(paths: pd.DataFrame, name: str, lrs, out: Path, title: str) -> None:
    """GIF of the paths on one surface growing step by step (at most GIF_FRAMES frames)."""
    data = paths[paths["task"] == name]
    optims = sorted(data["optim"].unique())
    palette = figures.optimizer_palette(optims)
    fig = Figure(figsize=(7.6, 4.6), layout="constrained", dpi=80)
    FigureCanvasAgg(fig)  # a real canvas: draw() lays the figure out
    ax = fig.subplots()
    draw_surface(ax, name)
    statuses = {o: run["status"].iloc[0] for o, run in data.groupby("optim")}
    runs = {o: run.dropna(subset=["x", "y"]) for o, run in data.groupby("optim")}
    lines = {o: ax.plot([], [], color=palette[o], lw=1.8, zorder=4)[0] for o in optims}
    heads = {
        o: ax.plot([], [], "o", ms=6, color=palette[o], mec="black", mew=0.6, zorder=5)[0]
        for o in optims
    }
    ax.legend(
        handles=_legend_handles(optims, palette, lrs[name], statuses),
        loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
    )  # fmt: skip
    last = int(data["step"].max())
    frames = np.unique(np.linspace(0, last, min(GIF_FRAMES, last + 1)).round().astype(int))

    def draw(step: int):
        for o in optims:
            seen = runs[o][runs[o]["step"] <= step]
            lines[o].set_data(seen["x"], seen["y"])
            heads[o].set_data(seen["x"].iloc[-1:], seen["y"].iloc[-1:])
        ax.set_title(f"{title}\n{name}: step {step}")
        return [*lines.values(), *heads.values()]

    draw(last)
    fig.canvas.draw()  # lay out once, then freeze: the layout is most of a frame's cost
    fig.set_layout_engine("none")
    # Blit: render the surface, axes and legend once, then per frame only the moving artists
    # (redrawing the whole figure, its text above all, was nearly all of a GIF's cost).
    moving = [*lines.values(), *heads.values()]
    # the markers drawn above the paths (start, minimum) are redrawn above them in every frame
    above = [a for a in ax.lines if a not in moving and a.get_zorder() > heads[optims[0]].zorder]
    moving = [*sorted(moving + above, key=lambda a: a.get_zorder()), ax.title]
    for artist in moving:
        artist.set_animated(True)
    canvas = fig.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    images = []
    for step in frames:
        canvas.restore_region(background)
        draw(int(step))
        for artist in moving:
            fig.draw_artist(artist)
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba()).copy()))
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / GIF_FPS),
                   loop=0)  # fmt: skip


def run_all(store: Path, lrs: dict[str, dict[str, float]], steps: int) -> int:
    """Make every (surface, optimizer) run at its lr: one bench.run command per group of
    surfaces that share an optimizer -> lr map (all of them with --lr). The worst exit code."""
    groups: dict[tuple, list[str]] = {}
    for surface, by_optim in lrs.items():
        for lr in sorted(set(by_optim.values())):
            names = tuple(o for o, v in by_optim.items() if v == lr)
            groups.setdefault((lr, names), []).append(surface)
    codes = [
        run_sweep(store, list(names), surfaces, lr, steps)
        for (lr, names), surfaces in groups.items()
    ]
    return max(codes, default=0)


def write_figures(paths: pd.DataFrame, lrs, out: Path, tag: str, about: str) -> list[Path]:
    title = f"Optimizer paths, {SCHEDULE} lr, {about}"
    written = [out / f"trajectories_{tag}.png", out / f"trajectories_{tag}_loss.png"]
    trajectory_figure(paths, lrs, title).savefig(written[0], dpi=110)
    loss_figure(paths, lrs, f"Distance to the minimum, {about}").savefig(written[1], dpi=110)
    for name in (s for s in SURFACES if s in lrs):
        written.append(out / f"trajectories_{tag}_{name}.gif")
        animate(paths, name, lrs, written[-1], title=f"{SCHEDULE} lr, {about}")
    return written


def tuned_lr(surface: str, optim: str) -> float:
    """TUNED_LR's entry, else the task's default lr (an optimizer added after the tuning)."""
    if optim in TUNED_LR.get(surface, {}):
        return TUNED_LR[surface][optim]
    lr = tasks.TASKS[surface].default_lr(optim)
    print(f"note: no tuned lr for {optim} on {surface}; using the task's default {lr:g}")
    return lr


def make_figures(
    out: Path,
    store: Path,
    *,
    lr: float | None = None,
    steps: int | None = None,
    tune: bool = False,
) -> tuple[int, list[Path]]:
    """Make the runs (finished ones are skipped) and write the figures into ``out``.

    ``lr``: every optimizer at this lr (TAG ``lr<X>``); else each at its tuned lr (TAG
    ``tuned``): TUNED_LR, or with ``tune`` a fresh :func:`select_lrs` (printed as TUNED_LR).
    ``steps``: per run (default: the surfaces' 500). Returns bench.run's worst exit code and
    the files written (none when it is 2, bad usage)."""
    import optimizers

    optims = optimizers.available()
    steps = steps or tasks.TASKS[SURFACES[0]].steps
    if lr is not None:
        lrs = {s: dict.fromkeys(optims, lr) for s in SURFACES}
        tag, about = f"lr{lr:g}", f"every optimizer at lr={lr:g}"
    else:
        if tune:
            lrs = select_lrs(store, optims, list(SURFACES), steps)
            print("TUNED_LR = " + repr(lrs))
            missing = {s: [o for o in optims if o not in lrs[s]] for s in SURFACES}
            for s, names in missing.items():
                lrs[s].update({o: tasks.TASKS[s].default_lr(o) for o in names})
        else:
            lrs = {s: {o: tuned_lr(s, o) for o in optims} for s in SURFACES}
        tag, about = "tuned", f"each optimizer at its grid-tuned lr ({GRID}, final loss)"
    code = run_all(store, lrs, steps)
    if code == 2:
        return 2, []
    return code, write_figures(paths_for(store, lrs, steps), lrs, out, tag, about)
