"""The article's learning-rate figures, drawn from our schedulers, plus every registry schedule.

:func:`write_all` writes three PNGs:

* ``schedule_exponential_decay.png``: the article's figure 2, exponential_decay(0.1, step, 100,
  0.96) over 1000 steps, continuous (red) and staircase (blue);
* ``schedule_piecewise_constant.png``: the article's figure 3, piecewise_constant(step,
  [10000, 12000], [1.0, 0.5, 0.1]) over 20000 steps;
* ``schedule_registry.png``: every ``schedulers.available()`` schedule at its registry defaults
  for one 1000-step run from lr 1 (left), and the 100x presets on a log scale (right).

Every curve is the lr a torch optimizer actually gets, step by step, from the LRScheduler
adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from torch.optim.lr_scheduler import LRScheduler

import schedulers

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "figures"
REGISTRY_STEPS = 1000
LINESTYLES = ("-", "--", "-.", (0, (6, 1.5, 1, 1.5, 1, 1.5)))


def trace(make: Callable[[torch.optim.Optimizer], LRScheduler], lr: float, steps: int) -> list:
    """The lr of each optimizer step, in TF's loop order: optimizer.step(), scheduler.step()."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _finish(fig: plt.Figure, ax: plt.Axes, path: Path) -> None:
    ax.set_xlabel("step (global_step)")
    ax.set_ylabel("learning rate")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_exponential(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for staircase, color in ((False, "red"), (True, "blue")):
        lrs = trace(lambda o, s=staircase: schedulers.ExponentialDecay(o, 100, 0.96, s), 0.1, 1000)
        ax.plot(lrs, color=color, lw=1.6, label=f"staircase={staircase}")
    ax.set_title("exponential_decay(learning_rate=0.1, decay_steps=100, decay_rate=0.96)")
    path = out / "schedule_exponential_decay.png"
    _finish(fig, ax, path)
    return path


def plot_piecewise(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    make = lambda o: schedulers.PiecewiseConstantDecay(o, [10000, 12000], [1.0, 0.5, 0.1])  # noqa: E731
    ax.plot(trace(make, 1.0, 20000), color="C0", lw=1.6, label="values [1.0, 0.5, 0.1]")
    for b in (10000, 12000):
        ax.axvline(b, color="grey", ls=":", lw=1)
    ax.set_title("piecewise_constant(boundaries=[10000, 12000], values=[1.0, 0.5, 0.1])")
    path = out / "schedule_piecewise_constant.png"
    _finish(fig, ax, path)
    return path


def plot_registry(out: Path, steps: int = REGISTRY_STEPS) -> Path:
    names = schedulers.available()
    presets = [n for n in names if n.endswith("100")]
    groups = (
        ([n for n in names if n not in presets], "registry defaults", "linear"),
        (presets, "*100 presets: lr(T-1) <= lr/100", "log"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, (group, title, yscale) in zip(axes, groups, strict=True):
        palette = sns.color_palette("tab10", len(group))
        for i, (name, color) in enumerate(zip(group, palette, strict=True)):
            lrs = trace(lambda o, n=name: schedulers.create(n, o, steps), 1.0, steps)
            # Dashes keep coinciding curves visible (exponential100 and natural_exp100 are one).
            ax.plot(lrs, color=color, lw=1.5, ls=LINESTYLES[i % 4], label=name)
        if yscale == "log":
            ax.set_yscale("log")
            ax.set_ylim(3e-4, 1.6)  # the restarts' troughs (down to 1e-7) run off the bottom
            ax.axhline(0.01, color="black", ls=":", lw=1, label="lr / 100")
        ax.set_title(f"{title} (T = {steps}, lr = 1)")
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    path = out / "schedule_registry.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def write_all(out: Path = DEFAULT_OUT) -> list[Path]:
    """The three figures into ``out`` (made if missing; OSError when it cannot be)."""
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="notebook")
    return [plot_exponential(out), plot_piecewise(out), plot_registry(out)]
