"""How much does bench.run add to a bare PyTorch training loop, and how fast does a sweep go?

    python scripts/bench_runner.py [--task mnist1d_mlp] [--optim adam] [--steps 2000] [--repeats 7]
                                   [--sweep-runs 16] [--sweep-steps 1000] [--no-sweep]

1. Overhead: the same task, optimizer (from the registry), data, seed, thread count and steps, timed
   alternately as (a) a minimal hand-written loop (index a batch, forward, loss, zero_grad,
   backward, step) and (b) bench.train.train_one_run with the constant schedule (its loop adds
   the schedule step, on-device loss accumulation and logging at <= 500 points), once with the
   task's test evaluations and once with evaluation at the start and end only (the loop's own
   overhead). Setup (data, model) is excluded from all. Ratio = median(b) / median(a); target
   <= 1.10. The ratio of the fastest repeats is printed too.
2. Sweep throughput: `python -m bench.run` on a fresh store with --jobs 1 and --jobs 2 (wall
   clock of the whole command, process start included), in runs per minute.
Timings on a shared machine are noisy: quote the medians, rerun when the machine is quiet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optimizers  # noqa: E402
from bench import data as D  # noqa: E402
from bench import tasks as T  # noqa: E402
from bench.train import RunConfig, train_one_run  # noqa: E402


def bare_loop(task: T.Task, optim: str, lr: float, steps: int, seed: int, data_dir: str) -> float:
    """The minimal loop a user would write; returns seconds for `steps` steps."""
    torch.manual_seed(seed)
    d = D.load_mnist1d(data_dir)
    x, y = d.x_train, d.y_train
    model = task.model()
    opt = optimizers.create(optim, list(model.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    b, n = task.batch_size, len(y)
    perm, pos = torch.randperm(n, generator=gen), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + b > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + b]
        pos += b
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()  # the bare loop also ends by reading its loss
    return time.perf_counter() - t0


def runner_loop(config: RunConfig) -> float:
    """Seconds of train_one_run's training loop (setup excluded, like the bare loop's)."""
    record = train_one_run(config)
    assert record["status"] == "ok", record["error"]
    return record["summary"]["train_s"]


def overhead(args: argparse.Namespace, data_dir: str) -> None:
    task = T.TASKS[args.task]
    if task.dataset != "mnist1d":
        sys.exit("the overhead benchmark uses an mnist1d task")
    lr = task.default_lr(args.optim)
    config = RunConfig(
        task=args.task, optim=args.optim, sched="constant", seed=0, steps=args.steps,
        batch_size=task.batch_size, lr=lr, eval_every=task.eval_every, device="cpu",
        threads=1, data_dir=data_dir,
    )  # fmt: skip
    no_eval = RunConfig(**{**config.__dict__, "eval_every": args.steps})  # test split: ends only
    torch.set_num_threads(1)
    bare_loop(task, args.optim, lr, 200, 0, data_dir)  # warm-up (allocator, lazy init)
    runner_loop(RunConfig(**{**config.__dict__, "steps": 200}))
    times: dict[str, list[float]] = {"bare": [], "runner": [], "runner_no_eval": []}
    for _ in range(args.repeats):  # alternate, so a busy spell hits all three alike
        times["bare"].append(bare_loop(task, args.optim, lr, args.steps, 0, data_dir))
        times["runner"].append(runner_loop(config))
        times["runner_no_eval"].append(runner_loop(no_eval))
    n_rows = len(range(0, args.steps + 1, max(1, -(-args.steps // 500))))
    n_evals = args.steps // task.eval_every + 1
    print(
        f"\n## Overhead: {args.task}, {args.optim}, {args.steps} steps, 1 thread, "
        f"{args.repeats} repeats (constant schedule, ~{n_rows} logged rows)\n"
    )
    print("| loop | median s | min s | ms/step (median) | ratio of medians | ratio of minima |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    labels = {
        "bare": "bare hand-written loop",
        "runner": f"train_one_run, {n_evals} test evaluations (task default)",
        "runner_no_eval": "train_one_run, test evaluation at the start and end only",
    }
    mb, fb = statistics.median(times["bare"]), min(times["bare"])
    for key, ts in times.items():
        med, fast = statistics.median(ts), min(ts)
        print(
            f"| {labels[key]} | {med:.3f} | {fast:.3f} | {1e3 * med / args.steps:.3f} | "
            f"{med / mb:.3f} | {fast / fb:.3f} |"
        )
    print("\ntarget: ratio <= 1.10 (the loop's overhead is the no-eval row; evaluating the test")
    print("split is measurement the bare loop does not do)")


def sweep(args: argparse.Namespace, data_dir: str) -> None:
    optims = ",".join(optimizers.available())
    seeds = max(1, args.sweep_runs // len(optimizers.available()))
    n_runs = seeds * len(optimizers.available())
    print(f"\n## Sweep throughput: {args.task}, {n_runs} runs of {args.sweep_steps} steps "
          "(all optimizers, constant schedule), whole command timed\n")  # fmt: skip
    print("| --jobs | wall s | runs/min |")
    print("| ---: | ---: | ---: |")
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "bench.run", "--task", args.task, "--optim", optims,
                   "--seeds", str(seeds), "--steps", str(args.sweep_steps), "--quiet",
                   "--jobs", str(jobs), "--out", out, "--data-dir", data_dir,
                   "--device", "cpu"]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True)
            wall = time.perf_counter() - t0
        print(f"| {jobs} | {wall:.1f} | {60 * n_runs / wall:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="mnist1d_mlp")
    p.add_argument("--optim", default="adam")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sweep-runs", type=int, default=16)
    p.add_argument("--sweep-steps", type=int, default=1000)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--data-dir", default=str(D.default_data_dir()))
    args = p.parse_args()
    T.TASKS[args.task].prepare(args.data_dir)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    overhead(args, args.data_dir)
    if not args.no_sweep:
        sweep(args, args.data_dir)


if __name__ == "__main__":
    main()
