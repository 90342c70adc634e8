"""How much does bench.run add to a bare PyTorch training loop, and how fast do sweeps go on
each executor?

    python scripts/bench_runner.py [--task mnist1d_mlp] [--optim adam] [--steps 2000] [--repeats 7]
                                   [--sweep-runs 32] [--sweep-steps 1000] [--no-overhead]
                                   [--no-sweep] [--markdown docs/generated/runner_speed.md]
    python scripts/bench_runner.py --vectorize [bench_batched.py's options]

1. Overhead: the same task, optimizer (from the registry), data, seed, thread count and steps, timed
   alternately as (a) a minimal hand-written loop (index a batch, forward, loss, zero_grad,
   backward, step) and (b) bench.train.train_one_run with the constant schedule (its loop adds
   the schedule step, on-device loss accumulation and logging at <= 500 points), once with the
   task's test evaluations and once with evaluation at the start and end only (the loop's own
   overhead). Setup (data, model) is excluded from all. Ratio = median(b) / median(a); target
   <= 1.10. The ratio of the fastest repeats is printed too.
2. Sweep throughput: `python -m bench.run` on a fresh store with --jobs 1, --jobs 2 and
   --executor ray (a local instance with 2 CPUs), whole command timed (process start, worker and
   Ray start-up included), in runs per minute, in rotating order over --sweep-repeats rounds
   (medians), and the steady rate after the first quarter of the runs (from the times their
   records were written). Targets: --jobs 2 >= 1.6x --jobs 1; Ray >= 0.9x --jobs 2.
3. Per-run scheduling overhead, on warm executors through the Python API: the wall time per run
   of --tiny-runs one-step runs through one worker (local worker process, Ray task, Ray actor),
   minus the time per run of the same runs in this process; with one run per message (chunk 1)
   and with the executors' chunks (about a second of runs each). The Ray actor row is the
   alternative to tasks that the executor does not use (see bench/ray_executor.py). Also the
   seconds a local Ray instance takes to start and to stop.
4. Vectorised runs (``--vectorize``, instead of the above): whole commands, ``--vectorize auto``
   against ``off``, each at its best --jobs, for mnist1d_mlp (Adam and SGD, 16 runs) and a 256-run
   surface, and where the vectorised surface command's time goes. It is
   ``scripts/bench_batched.py --commands`` (one implementation): the options after ``--vectorize``
   are that script's (``--device cuda``, ``--repeats``, ``--mlp-steps`` ...). It writes
   docs/generated/vectorized_speed.md.
Timings on a shared machine are noisy: the load average is printed with the numbers.
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
from unittest import mock

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optimizers  # noqa: E402
from bench import data as D  # noqa: E402
from bench import executors as E  # noqa: E402
from bench import provenance as P  # noqa: E402
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


def sweep_commands(args: argparse.Namespace, data_dir: str) -> list[str]:
    optims = ",".join(optimizers.available())
    seeds = max(1, args.sweep_runs // len(optimizers.available()))
    n_runs = seeds * len(optimizers.available())
    kinds = {
        "--jobs 1": ["--jobs", "1"],
        "--jobs 2": ["--jobs", "2"],
        "--executor ray (local, 2 CPUs)": ["--executor", "ray"],
    }
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    steady: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.sweep_repeats):
        order = list(kinds)[r % len(kinds) :] + list(kinds)[: r % len(kinds)]
        for name in order:
            with tempfile.TemporaryDirectory() as out:
                cmd = [sys.executable, "-m", "bench.run", "--task", args.task, "--optim", optims,
                       "--seeds", str(seeds), "--steps", str(args.sweep_steps), "--quiet",
                       *kinds[name], "--out", out, "--data-dir", data_dir,
                       "--device", "cpu", "--vectorize", "off"]  # fmt: skip
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=ROOT, check=True)
                walls[name].append(time.perf_counter() - t0)
                steady[name].append(steady_rate(Path(out)))
    lines = [
        f"Sweep throughput: {args.task}, {n_runs} runs of {args.sweep_steps} steps (all "
        f"optimizers, constant schedule, 1 thread each, one run per job: `--vectorize off`), "
        f"whole `python -m bench.run` command timed, median of {args.sweep_repeats} rounds in "
        f"rotating order. *Steady* counts only the runs after the first quarter, from the "
        f"times their records were written: the rate once start-up is over, as in a long sweep.",
        "",
        "| command | wall s (median) | runs/min | vs --jobs 1 | vs --jobs 2 "
        "| steady runs/min | steady vs --jobs 2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    med = {k: statistics.median(v) for k, v in walls.items()}
    rate = {k: statistics.median(v) for k, v in steady.items()}
    for name, wall in med.items():
        lines.append(
            f"| `{name}` | {wall:.1f} | {60 * n_runs / wall:.1f} | "
            f"{med['--jobs 1'] / wall:.2f}x | {med['--jobs 2'] / wall:.2f}x | "
            f"{rate[name]:.1f} | {rate[name] / rate['--jobs 2']:.2f}x |"
        )
    lines += ["", "targets: --jobs 2 >= 1.60x --jobs 1; Ray >= 0.90x --jobs 2"]
    return lines


def steady_rate(store: Path) -> float:
    """Runs per minute after the first quarter of a store's runs: from the time the driver wrote
    the record of the run that ended the first quarter to the time it wrote the last."""
    times = sorted(p.stat().st_mtime for p in (store / "runs").glob("*.json"))
    first = len(times) // 4
    return 60 * (len(times) - 1 - first) / (times[-1] - times[first])


def tiny(n: int) -> list[RunConfig]:
    """n different one-step runs on a 2-D surface: almost all of their time is the runner's."""
    return [
        RunConfig(
            task="saddle",
            optim="sgd",
            sched="constant",
            seed=s,
            steps=1,
            batch_size=None,
            lr=0.01,
            eval_every=1,
        )
        for s in range(n)
    ]


def per_run(executor: E.Executor, configs: list[RunConfig], repeats: int) -> float:
    """Median seconds per run of ``configs`` through a warm executor."""
    list(executor.map(configs[:4]))  # warm: workers started, imports done
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert len(list(executor.map(configs))) == len(configs)
        times.append((time.perf_counter() - t0) / len(configs))
    return statistics.median(times)


def scheduling_overhead(args: argparse.Namespace) -> list[str]:
    import ray

    from bench import ray_executor as RE

    configs = tiny(args.tiny_runs)
    here = per_run(E.SerialExecutor(), configs, args.repeats)
    rows: dict[str, dict[str, float]] = {}
    for chunked in (False, True):
        chunk_s = E.CHUNK_S if chunked else 0.0  # 0: one run per chunk
        with mock.patch.object(E, "CHUNK_S", chunk_s):
            with E.LocalExecutor(jobs=1) as ex:
                rows.setdefault("local worker process", {})[chunked] = per_run(
                    ex, configs, args.repeats
                )
            with RE.RayExecutor(jobs=1, num_cpus=2) as ex:
                rows.setdefault("Ray task (the executor)", {})[chunked] = per_run(
                    ex, configs, args.repeats
                )
                actors = ActorExecutor(ray, slots=1)
                rows.setdefault("Ray actor (alternative)", {})[chunked] = per_run(
                    actors, configs, args.repeats
                )
    ray_start: list[float] = []  # RayExecutor.start(): a local instance of 2 CPUs
    ray_stop: list[float] = []  # its close(): ray.shutdown and the reaper
    for _ in range(args.ray_starts):
        ex = RE.RayExecutor(jobs=1, num_cpus=2)
        t0 = time.perf_counter()
        ex.start()
        t1 = time.perf_counter()
        ex.close()
        ray_start.append(t1 - t0)
        ray_stop.append(time.perf_counter() - t1)
    lines = [
        f"Per-run scheduling overhead: {len(configs)} one-step runs through one warm worker, "
        f"median of {args.repeats}; in this process a run takes {1e3 * here:.2f} ms",
        "",
        "| worker | ms/run, one run per message | overhead | ms/run, chunked | overhead |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {1e3 * r[False]:.2f} | {1e3 * (r[False] - here):.2f} | "
            f"{1e3 * r[True]:.2f} | {1e3 * (r[True] - here):.2f} |"
        )
    lines += [
        "",
        f"A local Ray instance (2 CPUs) costs each command {statistics.median(ray_start):.2f} s "
        f"to start and {statistics.median(ray_stop):.2f} s to stop (medians of "
        f"{len(ray_start)}; slowest start {max(ray_start):.2f} s).",
    ]
    return lines


class ActorExecutor(E.Executor):
    """The alternative to the Ray executor's tasks: one long-lived actor per slot, fed chunks."""

    def __init__(self, ray, slots: int) -> None:
        from bench.executors import run_here

        @ray.remote(num_cpus=1)
        class Runner:
            def run(self, chunk):
                return [run_here(c) for c in chunk]

        self.ray, self.actors, self.times = (
            ray,
            [Runner.remote() for _ in range(slots)],
            E.RunTimes(),
        )

    def map(self, configs, progress=None):
        todo, idle, flying = list(configs), list(self.actors), {}
        while todo or flying:
            while todo and idle:
                n = E.chunk_size(len(todo), len(self.actors), self.times.median)
                chunk, todo = todo[:n], todo[n:]
                actor = idle.pop()
                flying[actor.run.remote(chunk)] = (actor, chunk)
            [ref], _ = self.ray.wait(list(flying), num_returns=1)
            actor, chunk = flying.pop(ref)
            idle.append(actor)
            for c, r in zip(chunk, self.ray.get(ref), strict=True):
                self.times.add(r)
                yield c, r


def stamp(load_before: str) -> list[str]:
    """The shared provenance line with Ray's version, and the load averages around the
    measurement: the machine is shared, so the numbers are only as quiet as those."""
    return [
        f"Measured {P.stamp(packages=('torch', 'ray'))}; load average (1/5/15 min) "
        f"{load_before} when the measurement began, {P.load_average()} when it ended "
        "(the machine is shared: other work runs beside these numbers).",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="mnist1d_mlp")
    p.add_argument("--optim", default="adam")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sweep-runs", type=int, default=32)
    p.add_argument("--sweep-steps", type=int, default=1000)
    p.add_argument("--sweep-repeats", type=int, default=3)
    p.add_argument("--tiny-runs", type=int, default=200)
    p.add_argument("--ray-starts", type=int, default=7, help="local Ray instances started")
    p.add_argument("--no-overhead", action="store_true", help="skip the loop-overhead part")
    p.add_argument("--no-sweep", action="store_true", help="skip the executor parts")
    p.add_argument("--markdown", help="also write the executor tables, stamped, to this file")
    p.add_argument("--data-dir", default=str(D.default_data_dir()))
    p.add_argument(
        "--vectorize",
        nargs=argparse.REMAINDER,
        metavar="OPTION",
        help="instead: whole commands, --vectorize auto vs off (scripts/bench_batched.py "
        "--commands); the options after it are bench_batched.py's",
    )
    args = p.parse_args()
    if args.vectorize is not None:
        import bench_batched  # (this script's folder is on sys.path)

        bench_batched.main(["--commands", *args.vectorize])
        return
    if args.ray_starts < 1:
        p.error(f"--ray-starts must be >= 1, got {args.ray_starts}")
    T.TASKS[args.task].prepare(args.data_dir)
    load_before = P.load_average()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if not args.no_overhead:
        overhead(args, args.data_dir)
    if args.no_sweep:
        return
    sections = [sweep_commands(args, args.data_dir), scheduling_overhead(args)]
    text = "\n\n".join("\n".join(lines) for lines in [*sections, stamp(load_before)])
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        header = "<!-- written by scripts/bench_runner.py --markdown; do not edit -->\n\n"
        Path(args.markdown).write_text(header + text + "\n")


if __name__ == "__main__":
    main()
