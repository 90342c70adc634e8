"""Optimizer step speed: ours (loop, foreach, fused) against torch.optim (loop, foreach, fused).

    python scripts/bench_optimizers.py                         # all optimizers, CPU (+ CUDA)
    python scripts/bench_optimizers.py --optim adam,sgd --shapes resnet18 --repeats 10
    python scripts/bench_optimizers.py --shapes resnet18 \
        --markdown docs/generated/optimizer_speed.md

Parameter lists: ``resnet18`` (torchvision's ResNet-18 shapes, 11.7M elements in 62 tensors,
built without weights) and ``transformer`` (a 6-layer d=384 encoder plus an 8k embedding).
Gradients are fixed random tensors, so only ``step()`` is timed. Our ``fused`` path is our
multi-tensor update compiled by torch.compile; torch's ``fused`` exists for SGD, Adagrad and
Adam (``momentum`` is compared with ``torch.optim.SGD(momentum=0.9)``).

Prints, per device and parameter list, the median ms per step of every path, the ratios
``fused/torch best`` (ours fused against torch's fastest path in the same run), ``loop/loop``
and ``foreach/foreach``, the effective GB/s of our fused step (bytes the update must read and
write, divided by the time) and the memory-bandwidth limit measured in the same run. The first
fused step (which compiles) is timed separately and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import optimizers  # noqa: E402
from bench import provenance as P  # noqa: E402

# name -> (our class, our kwargs, torch class, torch kwargs, tensors read + written per
#          element: e.g. Adam reads p, g, m, v and writes p, m, v = 7)
CONFIGS: dict[str, tuple[type, dict, type, dict, int]] = {
    "sgd": (optimizers.SGD, {"momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9}, 5),
    "momentum": (optimizers.Momentum, {}, torch.optim.SGD, {"momentum": 0.9}, 5),
    "adagrad": (optimizers.Adagrad, {}, torch.optim.Adagrad, {}, 5),
    "rmsprop": (optimizers.RMSprop, {}, torch.optim.RMSprop, {}, 5),
    "adam": (optimizers.Adam, {}, torch.optim.Adam, {}, 7),
    "rprop": (optimizers.Rprop, {}, torch.optim.Rprop, {}, 7),
    "adadelta": (optimizers.Adadelta, {}, torch.optim.Adadelta, {}, 7),
}
TORCH_FUSED = {"sgd", "momentum", "adagrad", "adam"}  # torch has fused kernels for these
PATHS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def shapes_resnet18() -> list[torch.Size]:
    return [p.shape for p in torchvision.models.resnet18(weights=None).parameters()]


def shapes_transformer() -> list[torch.Size]:
    layer = torch.nn.TransformerEncoderLayer(384, nhead=6, dim_feedforward=1536, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=6, enable_nested_tensor=False)
    model = torch.nn.Sequential(torch.nn.Embedding(8192, 384), encoder)
    return [p.shape for p in model.parameters()]


SHAPES: dict[str, Callable[[], list[torch.Size]]] = {
    "resnet18": shapes_resnet18,
    "transformer": shapes_transformer,
}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bandwidth_limit_gbs(device: str, numel: int, repeats: int) -> float:
    """Memory bandwidth of large float32 streams, GB/s: the better of a copy (read + write)
    and an in-place add (two reads + one write, like an optimizer's read-modify-write)."""
    src = torch.randn(numel, device=device)
    dst = torch.zeros_like(src)
    best = 0.0
    for op, tensors in ((lambda: dst.copy_(src), 2), (lambda: dst.add_(src), 3)):
        times = []
        for _ in range(repeats + 2):
            synchronize(device)
            t0 = time.perf_counter()
            op()
            synchronize(device)
            times.append(time.perf_counter() - t0)
        gbs = tensors * src.numel() * src.element_size() / statistics.median(times[2:]) / 1e9
        best = max(best, gbs)
    return best


def make_params(shapes: list[torch.Size], device: str) -> list[torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    params = [torch.randn(s, device=device, generator=gen).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device=device, generator=gen) * 1e-3
    return params


def timed_step(opt: torch.optim.Optimizer, device: str) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    opt.step()
    synchronize(device)
    return time.perf_counter() - t0


def time_interleaved(
    makers: dict[str, Callable], shapes: list[torch.Size], device: str, repeats: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """{label: (median seconds per step, seconds of the first step)}.

    All optimizers live at once and the timed steps go round-robin, so a load change on a
    shared machine hits every implementation alike and the ratios stay meaningful. Each label
    gets two instances, created in ABBA order (all labels, then all labels reversed), and its
    median pools both: the instance whose tensors were allocated first can run a few percent
    slower than an identical one allocated later, which would otherwise favour whichever
    implementation is created last.
    """
    order = [*makers, *reversed(makers)]
    instances = [(label, makers[label](make_params(shapes, device))) for label in order]
    first: dict[str, float] = {}
    for label, opt in instances:
        first.setdefault(label, timed_step(opt, device))  # the first instance compiles
    for _ in range(warmup):
        for _, opt in instances:
            opt.step()
    times: dict[str, list[float]] = {label: [] for label in makers}
    n = len(instances)
    for r in range(repeats):
        for label, opt in instances[r % n :] + instances[: r % n]:
            times[label].append(timed_step(opt, device))
    return {label: (statistics.median(times[label]), first[label]) for label in makers}


def bench(
    names: list[str],
    shape_names: list[str],
    devices: list[str],
    repeats: int,
    warmup: int,
    path_names: list[str],
) -> pd.DataFrame:
    rows = []
    for device in devices:
        for shape_name in shape_names:
            shapes = SHAPES[shape_name]()
            numel = sum(s.numel() for s in shapes)
            limit = bandwidth_limit_gbs(device, max(numel * 4, 2**25), repeats)
            for name in names:
                ours_cls, ours_kw, torch_cls, torch_kw, tensors = CONFIGS[name]
                makers = {}
                for impl, cls, kw in (("ours", ours_cls, ours_kw), ("torch", torch_cls, torch_kw)):
                    for path in path_names:
                        if impl == "torch" and path == "fused" and name not in TORCH_FUSED:
                            continue
                        flags = PATHS[path]
                        makers[f"{impl}_{path}"] = lambda ps, c=cls, k=kw, f=flags: c(ps, **k, **f)
                result = time_interleaved(makers, shapes, device, repeats, warmup)
                row: dict = {"device": device, "shapes": shape_name, "optim": name}
                row.update({f"{label}_ms": sec * 1e3 for label, (sec, _) in result.items()})
                torch_best = min(row[f"torch_{p}_ms"] for p in path_names if f"torch_{p}_ms" in row)
                if "fused" in path_names:
                    row["fused/torch best"] = row["ours_fused_ms"] / torch_best
                    row["first fused step s"] = result["ours_fused"][1]
                    seconds = row["ours_fused_ms"] / 1e3
                    row["ours fused GB/s"] = numel * 4 * tensors / seconds / 1e9
                for path in ("loop", "foreach"):
                    if path in path_names:
                        row[f"{path}/{path}"] = row[f"ours_{path}_ms"] / row[f"torch_{path}_ms"]
                row["limit GB/s"] = limit
                rows.append(row)
                print(
                    f"{device} {shape_name} {name}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if "/" in k),
                    file=sys.stderr,
                    flush=True,
                )
    return pd.DataFrame(rows)


def stamp() -> str:
    """Date, commit, machine (with this run's threads and GPU) and versions, for the header."""
    n = torch.get_num_threads()
    threads = f"{n} thread" + ("s" if n != 1 else "")
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"Generated {P.now()} at commit {P.git_commit()} on "
        f"{P.machine()} ({threads}{gpu}), "
        f"{P.format_versions(P.versions('torch'))}."
    )


def markdown(table: pd.DataFrame, command: str) -> str:
    """The table as a stamped Markdown page fragment."""
    header = [
        "<!-- Written by scripts/bench_optimizers.py; regenerate, do not edit. -->",
        "",
        stamp(),
        "",
        f"Command: `{command}`",
        "",
    ]
    shown = table.drop(columns=["limit GB/s"]).copy()
    for column in shown.columns:
        if column.endswith("_ms"):
            shown[column] = shown[column].map(lambda v: f"{v:.2f}" if pd.notna(v) else "–")
        elif "/" in column:
            shown[column] = shown[column].map(lambda v: f"**{v:.2f}**" if pd.notna(v) else "–")
        elif column.endswith("GB/s") or column.endswith(" s"):
            shown[column] = shown[column].map(lambda v: f"{v:.1f}" if pd.notna(v) else "–")
    columns = list(shown.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) if pd.notna(v) else "–" for v in row) + " |")
    limits = table.groupby(["device", "shapes"])["limit GB/s"].first()
    footer = ["", "Bandwidth limit measured in the same run (GB/s): "]
    footer[-1] += ", ".join(f"{d} {s} {v:.1f}" for (d, s), v in limits.items()) + "."
    return "\n".join([*header, *lines, *footer]) + "\n"


def parse_list(value: str, allowed: list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad) or value!r}; choose from {', '.join(allowed)}"
        )
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = list(CONFIGS)
    parser.add_argument(
        "--optim",
        type=lambda v: parse_list(v, names, "optimizer"),
        default=names,
        help=f"comma-separated, from {','.join(names)} (default: all)",
    )
    parser.add_argument(
        "--shapes",
        type=lambda v: parse_list(v, list(SHAPES), "parameter list"),
        default=list(SHAPES),
        help="comma-separated, from resnet18,transformer (default: both)",
    )
    parser.add_argument(
        "--device",
        type=lambda v: parse_list(v, ["cpu", "cuda"], "device"),
        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
        help="comma-separated, from cpu,cuda (default: cpu, and cuda when present)",
    )
    parser.add_argument(
        "--paths",
        type=lambda v: parse_list(v, list(PATHS), "path"),
        default=list(PATHS),
        help="comma-separated, from loop,foreach,fused (default: all; torch's best is the "
        "best of the paths measured)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed rounds; each round steps both instances of every implementation (median)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads for the run (default: torch's, the number of cores); one "
        "thread keeps the ratios stable on a machine shared with other jobs",
    )
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument(
        "--markdown",
        help="also write the table, stamped with date, commit, CPU and versions, to this "
        "Markdown file (e.g. docs/generated/optimizer_speed.md)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if "cuda" in args.device and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    table = bench(args.optim, args.shapes, args.device, args.repeats, args.warmup, args.paths)
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(table.round(3).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.markdown:
        given = sys.argv[1:] if argv is None else argv
        command = " ".join(["python scripts/bench_optimizers.py", *given])
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown(table, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
