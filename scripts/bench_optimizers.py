"""Optimizer step speed: ours (loop, foreach, fused) against torch.optim (loop, foreach, fused).

    python scripts/bench_optimizers.py                       # everything, CPU (+ CUDA if present)
    python scripts/bench_optimizers.py --optim adam,sgd --shapes resnet18 --repeats 10

Parameter lists: ``resnet18`` (torchvision's ResNet-18 shapes, 11.7M elements in 62 tensors,
built without weights) and ``transformer`` (a 6-layer d=384 encoder plus an 8k embedding).
Gradients are fixed random tensors, so only the optimizer step is timed.

Paths: ``loop``, ``foreach`` and ``fused`` for both; our ``fused`` runs the C++ kernels on
CPU and the torch.compile kernel elsewhere, and ``compiled`` (ours, CPU only) is our fused
path with the C++ engine off, i.e. the kernel CUDA uses.

Prints, per device and parameter list, the median ms per step, the effective GB/s (bytes the
update must read and write, divided by the time), ours-best / torch-best, and the
memory-bandwidth limit measured in the same run (a large tensor copy or in-place add,
whichever is faster). The first fused step (which builds or compiles the kernel) is timed
separately and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import pandas as pd
import torch
import torchvision

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import optimizers
from optimizers import _native

# name -> (our class, our kwargs, torch class or None, torch kwargs, tensors read + written
#          per element: e.g. Adam reads p, g, m, v and writes p, m, v = 7)
CONFIGS: dict[str, tuple[type, dict, type | None, dict, int]] = {
    "sgd": (optimizers.SGD, {"momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9}, 5),
    "momentum": (optimizers.Momentum, {}, torch.optim.SGD, {"momentum": 0.9}, 5),
    "adagrad": (optimizers.Adagrad, {}, torch.optim.Adagrad, {}, 5),
    "rmsprop": (optimizers.RMSprop, {}, torch.optim.RMSprop, {}, 5),
    "adam": (optimizers.Adam, {}, torch.optim.Adam, {}, 7),
    "rprop": (optimizers.Rprop, {}, torch.optim.Rprop, {}, 7),
    "adadelta": (optimizers.Adadelta, {}, torch.optim.Adadelta, {}, 7),
}
TORCH_FUSED = {"sgd", "momentum", "adagrad", "adam"}  # torch has fused kernels for these


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


def make_params(shapes, device: str) -> list[torch.Tensor]:
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


def time_interleaved(makers: dict[str, Callable], shapes, device: str, repeats: int, warmup: int):
    """{label: (median seconds per step, seconds of the first step)}.

    All optimizers live at once and the timed steps go round-robin, so a load change on a
    shared machine hits every implementation alike and the ratios stay meaningful. Each label
    gets two instances, created in ABBA order (all labels, then all labels reversed), and its
    median pools both: on the 2-core CPU the instance whose tensors were allocated first ran
    1-2.5 % slower than an identical one allocated later, which would otherwise favour
    whichever implementation is created last.
    """
    order = [*makers, *reversed(makers)]
    instances = [(label, makers[label](make_params(shapes, device))) for label in order]
    first = {}
    for label, opt in instances:
        # the first step creates the fused kernel: "compiled" gets the torch.compile engine
        _native.ENABLED = not label.endswith("_compiled")
        try:
            seconds = timed_step(opt, device)
        finally:
            _native.ENABLED = True
        first.setdefault(label, seconds)  # the first instance's: the one that builds or compiles
    for _ in range(warmup):
        for _, opt in instances:
            opt.step()
    times: dict[str, list[float]] = {label: [] for label in makers}
    n = len(instances)
    for r in range(repeats):
        for label, opt in instances[r % n :] + instances[: r % n]:
            times[label].append(timed_step(opt, device))
    return {label: (statistics.median(times[label]), first[label]) for label in makers}


PATHS = {
    "loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
    "compiled": {"fused": True},
}


def bench(names, shape_names, devices, repeats, warmup, path_names=tuple(PATHS)) -> pd.DataFrame:
    rows = []
    paths = {p: PATHS[p] for p in path_names}
    for device in devices:
        for shape_name in shape_names:
            shapes = SHAPES[shape_name]()
            numel = sum(s.numel() for s in shapes)
            limit = bandwidth_limit_gbs(device, max(numel * 4, 2**25), repeats)
            for name in names:
                ours_cls, ours_kw, torch_cls, torch_kw, tensors = CONFIGS[name]
                makers = {}
                for impl, cls, kw in (("ours", ours_cls, ours_kw), ("torch", torch_cls, torch_kw)):
                    for path, flags in paths.items():
                        if impl == "torch" and path == "fused" and name not in TORCH_FUSED:
                            continue
                        if path == "compiled" and (impl == "torch" or device != "cpu"):
                            continue  # torch has no such path; off CPU it is "fused"
                        makers[f"{impl}_{path}"] = lambda ps, c=cls, k=kw, f=flags: c(ps, **k, **f)
                result = time_interleaved(makers, shapes, device, repeats, warmup)
                row = {
                    "device": device,
                    "shapes": shape_name,
                    "optim": name,
                    **{f"{label}_ms": sec * 1e3 for label, (sec, _) in result.items()},
                }
                ours_best = min(row[f"ours_{p}_ms"] for p in paths if f"ours_{p}_ms" in row)
                torch_best = min(row.get(f"torch_{p}_ms", float("inf")) for p in paths)
                row["ours/torch"] = ours_best / torch_best if torch_best < float("inf") else None
                row["ours_GB/s"] = numel * 4 * tensors / (ours_best / 1e3) / 1e9
                row["limit_GB/s"] = limit
                for path in ("fused", "compiled"):
                    if f"ours_{path}" in result:  # the first step, which builds the kernel
                        row[f"first_{path}_s"] = result[f"ours_{path}"][1]
                rows.append(row)
                print(
                    f"{device} {shape_name} {name}: ours best {ours_best:.2f} ms, torch best "
                    f"{torch_best:.2f} ms, ratio {row['ours/torch']}",
                    file=sys.stderr,
                    flush=True,
                )
    return pd.DataFrame(rows)


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
        help="comma-separated, from loop,foreach,fused,compiled (default: all; e.g. fused for a "
        "quick ours-fused vs torch-fused check)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed rounds; each round steps both instances of every implementation (median)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if "cuda" in args.device and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    # built in the background on first use: wait, so that every timed step uses the same checks
    where = "C++" if _native.gather_function(wait=True) else "Python"
    why = f" ({_native.checks_error or 'OPTBENCH_NATIVE_CHECKS=0'})" if where == "Python" else ""
    print(f"the C++ engine's argument checks run in {where}{why}", file=sys.stderr)
    table = bench(args.optim, args.shapes, args.device, args.repeats, args.warmup, args.paths)
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(table.round(3).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
