"""Redraw the article's learning-rate figures from our schedulers (bench.schedule_figures).

python scripts/plot_schedules.py [--out results/figures]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from bench import schedule_figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=schedule_figures.DEFAULT_OUT, help="folder for the PNGs"
    )
    args = parser.parse_args(argv)
    try:
        written = schedule_figures.write_all(args.out)
    except OSError as e:
        print(f"plot_schedules: cannot create {args.out}: {e.strerror}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
