"""How much faster are N runs trained as one batched model (bench.batched) than one by one?

    python scripts/bench_batched.py [--device cpu] [--threads 1] [--repeats 3]
                                    [--mlp-runs 16] [--mlp-steps 4000] [--surface-runs 256]
                                    [--only step,mlp,surface] [--write-docs]

1. step: one training step (forward, backward, Adam step) of N mnist1d_mlp members, timed
   alternately as (a) N separate models stepped one after another (bench.tasks' problems),
   (b) the whole stacked model and its cross-entropy under torch.func.vmap over functional_call,
   and (c) bench.batched's stacked forward (each Linear one baddbmm, activations applied
   directly, one flat cross-entropy), both with one summed backward and one Adam step. This is
   the measurement behind bench.batched's choice of (c) over (b).
2. mlp: N mnist1d_mlp runs (seeds 0..N-1, the task's default lr and steps), Adam and SGD: the
   wall time of N train_one_run calls against one train_batch call, alternately.
3. surface: the same for N runs on Rosenbrock (500 steps), Adam and SGD.
Every row is the median over --repeats alternating repeats; the ratio is separate / batched. On
one thread by default; `--device cuda` runs the same on a GPU. With --write-docs the table is
written into docs/vectorized.md between its markers, stamped with date, commit, machine and
versions. Timings on a shared machine are noisy: the load averages are printed with the table.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optimizers  # noqa: E402
from bench import batched as B  # noqa: E402
from bench import data as D  # noqa: E402
from bench import provenance as P  # noqa: E402
from bench import tasks as T  # noqa: E402
from bench.train import RunConfig, train_one_run  # noqa: E402

DOCS = ROOT / "docs" / "vectorized.md"
BEGIN, END = "<!-- bench_batched: begin -->", "<!-- bench_batched: end -->"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each timing function in turn, `repeats` rounds; seconds per call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return times


# ---------------------------------------------------------------------------- 1. one step


def step_timers(n: int, device: torch.device, data_dir: str, steps: int) -> dict:
    """Seconds per training step of n mnist1d_mlp members, three ways."""
    task = T.TASKS["mnist1d_mlp"]
    lr = task.default_lr("adam")
    configs = [
        RunConfig(task="mnist1d_mlp", optim="adam", sched="constant", seed=s, steps=steps,
                  batch_size=task.batch_size, lr=lr, device=str(device), data_dir=data_dir)
        for s in range(n)
    ]  # fmt: skip

    problems = []
    for c in configs:
        torch.manual_seed(c.seed)
        problems.append(task.build(c.seed, device, data_dir))
    opts = [optimizers.create("adam", p.params, lr=lr) for p in problems]

    def separate() -> None:
        for p, o in zip(problems, opts, strict=True):
            loss = p.train_loss()
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    stacked = B.stack_problems(task, configs, device)
    opt_b = optimizers.create("adam", stacked.params, lr=lr)

    def batched() -> None:
        losses = stacked.train_losses()
        opt_b.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt_b.step()

    # the alternative: the whole model under vmap, cross-entropy included
    whole = B.stack_problems(task, configs, device)
    opt_v = optimizers.create("adam", whole.params, lr=lr)

    def member_loss(params, buffers, x, y):
        return F.cross_entropy(functional_call(whole.base, (params, buffers), (x,)), y)

    member_losses = vmap(member_loss)

    def vmapped() -> None:
        idx = whole.order.next()
        x, y = whole.x_train[idx], whole.y_train[idx]
        losses = member_losses(whole.named_params, whole.buffers, x, y)
        opt_v.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt_v.step()

    def timer(fn: Callable[[], None]) -> Callable[[], float]:
        def run() -> float:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            return (time.perf_counter() - t0) / steps

        fn()  # warm-up (first steps allocate state)
        return run

    return {
        "separate": timer(separate),
        "whole model under vmap": timer(vmapped),
        "bench.batched (baddbmm)": timer(batched),
    }


def bench_step(args, device, data_dir) -> list[list[str]]:
    times = alternate(step_timers(args.mlp_runs, device, data_dir, args.step_steps), args.repeats)
    sep = statistics.median(times["separate"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = statistics.median(a / b for a, b in zip(times["separate"], ts, strict=True))
        rows.append([
            f"mnist1d_mlp step, {name}", str(args.mlp_runs), str(args.step_steps),
            f"{sep / args.mlp_runs * 1e3:.3f} ms", f"{med / args.mlp_runs * 1e3:.3f} ms",
            f"{ratio:.2f}x",
        ])  # fmt: skip
    vm, ours = times["whole model under vmap"], times["bench.batched (baddbmm)"]
    ratio = statistics.median(a / b for a, b in zip(vm, ours, strict=True))
    rows.append(["bench.batched vs whole model under vmap", "", "", "", "", f"{ratio:.2f}x"])
    return rows


# ---------------------------------------------------------------------------- 2, 3. whole runs


def bench_runs(name, configs, repeats) -> list[str]:
    n = len(configs)

    def separate() -> float:
        t0 = time.perf_counter()
        records = [train_one_run(c) for c in configs]
        bad = [r["error"] for r in records if r["status"] != "ok"]
        assert not bad, bad[0]
        return time.perf_counter() - t0

    def batched() -> float:
        t0 = time.perf_counter()
        records = B.train_batch(configs)
        elapsed = time.perf_counter() - t0
        fell_back = records[0]["batch"].get("fallback")
        assert not fell_back, f"the batch fell back to separate runs: {fell_back}"
        assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
        return elapsed

    times = alternate({"separate": separate, "batched": batched}, repeats)
    sep, bat = statistics.median(times["separate"]), statistics.median(times["batched"])
    ratio = statistics.median(
        a / b for a, b in zip(times["separate"], times["batched"], strict=True)
    )
    steps = configs[0].steps
    return [name, str(n), str(steps), f"{sep / n:.3f} s", f"{bat / n:.4f} s", f"{ratio:.1f}x"]


def run_configs(task_name, optim, n, steps, device, threads, data_dir) -> list[RunConfig]:
    task = T.TASKS[task_name]
    return [
        RunConfig(task=task_name, optim=optim, sched="constant", seed=s, steps=steps,
                  batch_size=task.batch_size, lr=task.default_lr(optim),
                  eval_every=task.eval_every, device=device, threads=threads, data_dir=data_dir)
        for s in range(n)
    ]  # fmt: skip


# ---------------------------------------------------------------------------- output


def stamp(device: torch.device, threads: int) -> str:
    """The shared provenance line, with the thread count and, on a GPU, its name."""
    gpu = [f"GPU {torch.cuda.get_device_name(device)}"] if device.type == "cuda" else []
    return P.stamp(f"{threads} thread(s)", *gpu)


def loads(before: str) -> str:
    """The load averages at the start and now: timings on a shared machine are only as quiet as
    these say."""
    return f"load average (1/5/15 min) before {before}, after {P.load_average()}"


def table(rows: list[list[str]]) -> str:
    head = ["workload", "runs", "steps", "separate / run", "batched / run", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{DOCS} has no {BEGIN} ... {END} block to write the table into")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    tmp = DOCS.with_name(f".{DOCS.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    os.replace(tmp, DOCS)


COMMANDS_MD = ROOT / "docs" / "generated" / "vectorized_speed.md"


def surface_flags(args) -> list[str]:
    """The surface command of both tables: --surface-runs Rosenbrock seeds, SGD, 500 steps."""
    seeds = ",".join(map(str, range(args.surface_runs)))
    return ["--task", "rosenbrock", "--optim", "sgd", "--seed", seeds, "--steps", "500"]


def bench_commands(args, device) -> list[list[str]]:
    """Whole ``python -m bench.run`` commands, --vectorize auto against off, each at its best
    --jobs (1 or 2: medians of alternating repeats, the faster kept), each into a fresh store
    (so the store's writes are included)."""
    import tempfile

    seeds16 = ",".join(map(str, range(args.mlp_runs // 4)))
    cases = [
        (f"mnist1d_mlp {optim}, {args.mlp_runs} runs (seeds x 4 schedules), "
         f"{args.mlp_steps} steps",
         ["--task", "mnist1d_mlp", "--optim", optim, "--seed", seeds16,
          "--sched", "constant,exponential,cosine,piecewise", "--steps", str(args.mlp_steps)])
        for optim in ("adam", "sgd")
    ]  # fmt: skip
    cases.append((f"rosenbrock sgd, {args.surface_runs} runs (seeds), 500 steps",
                  surface_flags(args)))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    for name, flags in cases:

        def command(mode: str, jobs: int, flags=flags) -> float:
            with tempfile.TemporaryDirectory() as out:
                cmd = [sys.executable, "-m", "bench.run", *flags, "--device", str(device), "--out",
                       out, "--quiet", "--vectorize", mode, "--jobs", str(jobs)]  # fmt: skip
                t = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, cwd=ROOT)
                return time.perf_counter() - t

        variants = {
            (m, j): functools.partial(command, m, j) for m in ("off", "auto") for j in (1, 2)
        }
        samples = alternate(variants, args.repeats)
        times = {k: statistics.median(v) for k, v in samples.items()}
        (off, off_jobs), (auto, auto_jobs) = (
            min((times[(m, j)], j) for j in (1, 2)) for m in ("off", "auto")
        )
        offs, autos = samples[("off", off_jobs)], samples[("auto", auto_jobs)]
        # the range of ratios: the fastest off over the slowest auto, and the reverse
        low, high = min(offs) / max(autos), max(offs) / min(autos)
        rows.append([name, _time_cell(off, off_jobs, offs), _time_cell(auto, auto_jobs, autos),
                     f"{off / auto:.1f}x ({low:.1f}-{high:.1f}x)"])  # fmt: skip
    return rows


def _time_cell(median: float, jobs: int, samples: list[float]) -> str:
    return f"{median:.1f} (--jobs {jobs}; {min(samples):.1f}-{max(samples):.1f})"


#: Run in a fresh interpreter as ``python -c PHASES ARGS``: bench.run's main on ARGS, with the
#: time inside train_batch, Store.add (JSON records) and Store.write_tables (the CSV tables)
#: summed up, printed as JSON with the imports' time and the total since the first import; it
#: then exits as ``python -m bench.run`` does.
PHASES = """
import json, sys, time
t0 = time.perf_counter()
import bench.run
from bench import batched, store
t1 = time.perf_counter()
spent = {"training": 0.0, "records": 0.0, "tables": 0.0}
def timed(owner, name, key):
    f = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t
    setattr(owner, name, wrapper)
timed(batched, "train_batch", "training")
timed(store.Store, "add", "records")
timed(store.Store, "write_tables", "tables")
assert bench.run.main(sys.argv[1:]) == 0
print(json.dumps({"imports": t1 - t0, **spent, "total": time.perf_counter() - t0}))
from bench.procs import exit_now
exit_now(0)  # as python -m bench.run ends
"""


def bench_phases(args, device) -> list[list[str]]:
    """Where the vectorised surface command's time goes (--jobs 1: everything in one process),
    medians of --repeats runs into fresh stores."""
    import json
    import tempfile

    flags = [*surface_flags(args), "--device", str(device), "--quiet", "--vectorize", "auto",
             "--jobs", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    samples = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            cmd = [sys.executable, "-c", PHASES, *flags, "--out", out]
            done = subprocess.run(
                cmd, check=True, env=env, cwd=ROOT, capture_output=True, text=True
            )
            wall = time.perf_counter() - t
        got = json.loads(done.stdout.strip().splitlines()[-1])
        got["start"] = wall - got["total"]
        got["rest"] = (
            got["total"] - got["imports"] - got["training"] - got["records"] - got["tables"]
        )
        got["wall"] = wall
        samples.append(got)
    names = [
        ("start", "Python start-up and exit"),
        ("imports", "imports (torch, bench; a sweep does without pandas)"),
        ("training", f"training: {args.surface_runs} runs x 500 steps (train_batch)"),
        ("records", f"records: {args.surface_runs} JSON files written (Store.add)"),
        ("tables", "tables: summary.csv and curves.csv (Store.write_tables)"),
        ("rest", "the rest: planning, run ids, opening the store"),
        ("wall", "whole command"),
    ]
    wall = statistics.median(g["wall"] for g in samples)
    rows = []
    for key, label in names:
        t = statistics.median(g[key] for g in samples)
        rows.append([label, f"{t:.2f}", f"{100 * t / wall:.0f}%"])
    return rows


def _command_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    p.add_argument("--mlp-runs", type=int, default=16, help="mnist1d_mlp runs per batch")
    p.add_argument("--mlp-steps", type=int, default=T.TASKS["mnist1d_mlp"].steps,
                   help="steps per mnist1d_mlp run (default: the task's, 4000)")  # fmt: skip
    p.add_argument("--step-steps", type=int, default=100, help="steps per 'step' timing")
    p.add_argument("--surface-runs", type=int, default=256, help="Rosenbrock runs per batch")
    p.add_argument("--only", default="step,mlp,surface", help="sections to run, comma-separated")
    p.add_argument(
        "--commands",
        action="store_true",
        help="instead: time whole bench.run commands, --vectorize auto vs off, and the parts "
        "of the vectorised surface command; write docs/generated/vectorized_speed.md",
    )
    p.add_argument("--data-dir", default=str(D.default_data_dir()), help="where mnist1d lives")
    p.add_argument("--write-docs", action="store_true", help=f"write the table into {DOCS.name}")
    args = p.parse_args(argv)
    sections = set(args.only.split(","))
    if not sections <= {"step", "mlp", "surface"} or not sections:
        p.error(f"--only takes step, mlp and/or surface, got {args.only!r}")
    for flag in ("threads", "repeats", "mlp_runs", "mlp_steps", "step_steps", "surface_runs"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        p.error(f"--device {args.device!r} is not usable here: {str(e).splitlines()[0]}")

    torch.set_num_threads(args.threads)
    T.TASKS["mnist1d_mlp"].prepare(args.data_dir)
    load_before = P.load_average()
    if args.commands:
        # Each command imports the project as an installed package does, from cached bytecode
        # (under PYTHONDONTWRITEBYTECODE every process would compile it from source again).
        for package in ("bench", "optimizers", "schedulers"):
            compileall.compile_dir(ROOT / package, quiet=1)
        rows = bench_commands(args, device)
        header = ["command", "--vectorize off (s)", "auto (s)", "speed-up"]
        phases = bench_phases(args, device)
        text = (
            f"{_command_table(header, rows)}\n\n"
            f"Whole `python -m bench.run` commands into a fresh store (the project's bytecode "
            f"compiled first, as an installed package has it), medians of "
            f"{args.repeats} alternating repeats, with the fastest and slowest repeat in "
            f"parentheses (the speed-up's range: fastest off over slowest auto, slowest off "
            f"over fastest auto).\n\n"
            f"Where the time of the vectorised {args.surface_runs}-run surface command goes, "
            f"run with `--jobs 1` (all of it in one process; medians of {args.repeats}):\n\n"
            f"{_command_table(['part', 's', 'share'], phases)}\n\n"
            f"{stamp(device, args.threads)}; {loads(load_before)}.\n"
        )
        print(text)
        COMMANDS_MD.parent.mkdir(parents=True, exist_ok=True)
        COMMANDS_MD.write_text(text)
        return
    rows = []
    if "step" in sections:
        rows += bench_step(args, device, args.data_dir)
    for optim in ("adam", "sgd"):
        if "mlp" in sections:
            configs = run_configs("mnist1d_mlp", optim, args.mlp_runs, args.mlp_steps,
                                  args.device, args.threads, args.data_dir)  # fmt: skip
            rows.append(bench_runs(f"mnist1d_mlp runs, {optim}", configs, args.repeats))
        if "surface" in sections:
            configs = run_configs("rosenbrock", optim, args.surface_runs, 500, args.device,
                                  args.threads, args.data_dir)  # fmt: skip
            rows.append(bench_runs(f"rosenbrock runs, {optim}", configs, args.repeats))
    text = (
        f"{table(rows)}\n\n"
        f"Medians of {args.repeats} alternating repeats; {stamp(device, args.threads)}; "
        f"{loads(load_before)}."
    )
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
