"""Regenerate the committed reference results in results/reference/ (bench.reference).

python scripts/reference.py --yes              # the full sweep, then every figure
python scripts/reference.py --tiny --out DIR   # the same pipeline in ~1 minute (a smoke test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from bench import reference


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scripts/reference.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=reference.DEFAULT_OUT, metavar="DIR",
                   help="the reference folder (default: results/reference)")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="replace DIR when it exists")
    p.add_argument("--jobs", default="2", help="bench.run worker processes (default: 2)")
    p.add_argument("--tiny", action="store_true", help="a few steps per run, to test the script")
    p.add_argument("--keep-runs", action="store_true", help="keep the run JSONs in DIR/runs")
    p.add_argument("--no-trajectories", action="store_true",
                   help="skip the trajectory figures (bench.trajectories)")  # fmt: skip
    p.add_argument("--no-fair", action="store_true",
                   help="skip the shared-lr vs grid-tuned comparison on mnist1d_mlp")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        reference.regenerate(
            args.out, replace=args.yes, jobs=args.jobs, tiny=args.tiny, keep_runs=args.keep_runs,
            with_trajectories=not args.no_trajectories, fair=not args.no_fair,
        )  # fmt: skip
    except FileExistsError:
        parser.exit(2, f"{parser.prog}: error: {args.out.resolve()} exists; pass --yes to "
                    "regenerate it\n")  # fmt: skip
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except reference.StageError as exc:
        raise SystemExit(f"reference.py: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
