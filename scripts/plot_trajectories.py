"""The article's figure 1: every optimizer's path over 2-D loss surfaces (bench.trajectories).

python scripts/plot_trajectories.py              # each optimizer at its tuned lr (TUNED_LR)
python scripts/plot_trajectories.py --lr 0.01    # every optimizer at lr 0.01 ("similar
                                                 #   hyperparameters", as in the article)
python scripts/plot_trajectories.py --search     # redo the lr tuning behind TUNED_LR first
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from bench import trajectories


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            name = "a positive integer" if kind is int else "a positive number"
            raise argparse.ArgumentTypeError(f"must be {name}, got '{text}'")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scripts/plot_trajectories.py", description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--lr", type=_positive(float), metavar="X",
        help="one lr for every optimizer and surface (default: each optimizer's tuned lr per "
        "surface, bench.trajectories.TUNED_LR)",
    )  # fmt: skip
    p.add_argument(
        "--steps", type=_positive(int), metavar="N", help="steps per run (default: the task's, 500)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("results/figures"), metavar="DIR",
        help="where the PNG and GIF files go (default: results/figures)",
    )  # fmt: skip
    p.add_argument(
        "--store", type=Path, default=Path("results/runs/trajectories"), metavar="DIR",
        help="bench.run store that keeps the runs (default: results/runs/trajectories)",
    )  # fmt: skip
    mode.add_argument(
        "--search", action="store_true",
        help=f"first redo the tuning (bench.run --lr grid --lr-grid {trajectories.GRID} per "
        "optimizer and surface, a few minutes) and use its result instead of TUNED_LR",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write to --out {args.out}: {exc.strerror}\n")
    try:
        code, written = trajectories.make_figures(
            args.out, args.store, lr=args.lr, steps=args.steps, tune=args.search
        )
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print("\n".join(f"wrote {p}" for p in written))
    return code


if __name__ == "__main__":
    sys.exit(main())
