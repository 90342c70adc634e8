"""Write tests/data/tf_schedule_golden.json: TensorFlow's own learning-rate decay values.

Needs a real TensorFlow (not a project dependency), in its own virtualenv:

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
    /tmp/tfenv/bin/python scripts/make_golden_schedules.py [--out FILE]

For every case (a decay and one parameter set) and every listed step (all boundaries k*D and their
neighbours k*D - 1, k*D + 1, plus points in between) it records
- `tf1_float32`: the TF1 function `tf.compat.v1.train.<fn>(...)()` with Python-number arguments,
  as the article calls it: TensorFlow computes in float32;
- `tf1_float64`: the same call with every float argument a `tf.constant(x, tf.float64)`, so the
  whole computation runs in float64 (a Python float would be rounded to float32 before TF's cast);
- `keras3_float32` / `keras3_float64`: where Keras 3 has the schedule class
  (`tf.keras.optimizers.schedules.*`), its value with the same two kinds of arguments. TF1's
  `cosine_decay_restarts` cannot run in float64 (it multiplies by a float32 pi); Keras 3's can.
tests/test_schedulers.py compares schedulers.functional and the LRScheduler adapters with all three.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain Eigen kernels: reproducible values

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "tf_schedule_golden.json"

# Keras 3 class of each TF1 function (None: Keras 3 dropped it); TF1 -> Keras argument names.
KERAS_CLASS = {
    "exponential_decay": "ExponentialDecay",
    "piecewise_constant": "PiecewiseConstantDecay",
    "polynomial_decay": "PolynomialDecay",
    "natural_exp_decay": None,
    "inverse_time_decay": "InverseTimeDecay",
    "cosine_decay": "CosineDecay",
    "cosine_decay_restarts": "CosineDecayRestarts",
    "linear_cosine_decay": None,
}
KERAS_ARG = {"learning_rate": "initial_learning_rate"}
STEP_ARG = {"piecewise_constant": "x"}


def around(points: list[float], last: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Steps 0 and `last`, each boundary point p (rounded) with p - 1 and p + 1, and `extra`."""
    steps = {0, last, *(s for s in extra if s <= last)}
    for p in points:
        for s in (math.floor(p) - 1, math.floor(p), math.ceil(p), math.ceil(p) + 1):
            if 0 <= s <= last:
                steps.add(s)
    return sorted(steps)


def multiples(d: float, last: int) -> list[float]:
    return [k * d for k in range(1, int(last // d) + 1)]


def sgdr_restarts(t0: float, t_mul: float, last: int) -> list[float]:
    """The steps at which cycles end: t0, t0 (1 + t_mul), ..."""
    points, start, length = [], 0.0, t0
    while start + length <= last:
        start += length
        points.append(start)
        length *= t_mul
    return points


def cases() -> list[tuple[str, dict, list[int]]]:
    """(TF1 function, its arguments without the step, steps)."""
    out: list[tuple[str, dict, list[int]]] = []
    mid = (3, 17, 42)
    # exponential_decay: the article's figure, TF's docstring examples, odd and float decay_steps,
    # per-step decay (torch's ExponentialLR), growth (rate > 1).
    for lr, d, rate, last in [
        (0.1, 100, 0.96, 999),
        (0.1, 10, 0.5, 60),
        (1.0, 7, 0.9, 50),
        (0.01, 1, 0.99, 40),
        (0.5, 3, 1.5, 20),
        (0.1, 2.5, 0.5, 20),
        (2.0, 1000, 0.1, 5000),
    ]:
        for staircase in (False, True):
            kw = dict(learning_rate=lr, decay_steps=d, decay_rate=rate, staircase=staircase)
            out.append(("exponential_decay", kw, around(multiples(d, last), last, mid)))
    # piecewise_constant: the article's figure, TF's docstring, one boundary, several close ones.
    for boundaries, values, last in [
        ([10000, 12000], [1.0, 0.5, 0.1], 19999),
        ([10, 20], [1.0, 0.5, 0.1], 40),
        ([5], [0.1, 0.01], 12),
        ([3, 4, 5, 100], [0.5, 0.4, 0.3, 0.2, 0.1], 110),
        ([0, 1], [0.3, 0.2, 0.7], 4),
    ]:
        kw = dict(boundaries=boundaries, values=values)
        out.append(("piecewise_constant", kw, around(boundaries, last, (1, 7))))
    # polynomial_decay, with and without cycle (end at k*D, restart at k*D + 1).
    for lr, d, end, power, last in [
        (0.1, 10, 0.01, 1.0, 45),
        (0.1, 10, 0.01, 2.0, 45),
        (1.0, 7, 0.0001, 0.5, 40),
        (1.0, 100, 0.0, 1.0, 450),
        (0.5, 3, 0.05, 3.0, 20),
    ]:
        for cycle in (False, True):
            kw = dict(
                learning_rate=lr, decay_steps=d, end_learning_rate=end, power=power, cycle=cycle
            )
            out.append(("polynomial_decay", kw, around(multiples(d, last), last, mid)))
    # natural_exp_decay and inverse_time_decay, continuous and staircase.
    for fn in ("natural_exp_decay", "inverse_time_decay"):
        for lr, d, rate, last in [
            (0.1, 10, 0.5, 60),
            (1.0, 100, 0.05, 1000),
            (0.5, 3, 1.0, 20),
            (0.3, 1, 0.01, 30),
        ]:
            for staircase in (False, True):
                kw = dict(learning_rate=lr, decay_steps=d, decay_rate=rate, staircase=staircase)
                out.append((fn, kw, around(multiples(d, last), last, mid)))
    # cosine_decay: before, at and after decay_steps.
    for lr, d, alpha, last in [
        (0.1, 10, 0.1, 25),
        (1.0, 100, 0.0, 150),
        (0.5, 1000, 0.01, 1200),
        (1.0, 7, 0.5, 20),
    ]:
        kw = dict(learning_rate=lr, decay_steps=d, alpha=alpha)
        out.append(("cosine_decay", kw, around([d / 4, d / 2, d], last, mid)))
    # cosine_decay_restarts: geometric cycles (integer and non-integer restarts) and t_mul = 1.
    for lr, t0, t_mul, m_mul, alpha, last in [
        (1.0, 10, 2.0, 0.5, 0.1, 80),
        (0.1, 10, 1.0, 1.0, 0.0, 45),
        (0.1, 5, 3.0, 0.8, 0.0, 70),
        (1.0, 100, 2.0, 1.0, 0.0, 1600),
        (1.0, 7, 1.5, 0.9, 0.05, 60),
        (0.2, 4, 1.0, 0.5, 0.2, 20),
    ]:
        kw = dict(learning_rate=lr, first_decay_steps=t0, t_mul=t_mul, m_mul=m_mul, alpha=alpha)
        out.append(("cosine_decay_restarts", kw, around(sgdr_restarts(t0, t_mul, last), last, mid)))
    # linear_cosine_decay (beta > 0 keeps every value away from 0: relative errors mean something).
    for lr, d, periods, alpha, beta, last in [
        (0.1, 10, 0.5, 0.0, 0.001, 20),
        (0.1, 100, 2.0, 0.1, 0.01, 120),
        (1.0, 50, 0.5, 0.0, 0.001, 60),
        (1.0, 1000, 5.0, 0.2, 0.05, 1100),
    ]:
        kw = dict(learning_rate=lr, decay_steps=d, num_periods=periods, alpha=alpha, beta=beta)
        points = [d * k / (4 * periods) for k in range(1, int(4 * periods) + 1)] + [d]
        out.append(("linear_cosine_decay", kw, around(points, last, mid)))
    return out


def call_text(fn: str, kw: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    step = STEP_ARG.get(fn, "global_step")
    if fn == "piecewise_constant":
        return f"tf.compat.v1.train.piecewise_constant({step}=step, {args})()"
    lr = f"learning_rate={kw['learning_rate']!r}"
    rest = ", ".join(f"{k}={v!r}" for k, v in kw.items() if k != "learning_rate")
    return f"tf.compat.v1.train.{fn}({lr}, {step}=step, {rest})()"


def keras_text(fn: str, kw: dict) -> str | None:
    cls = KERAS_CLASS[fn]
    if cls is None:
        return None
    args = ", ".join(f"{KERAS_ARG.get(k, k)}={v!r}" for k, v in kw.items())
    return f"tf.keras.optimizers.schedules.{cls}({args})(step)"


def evaluate(tf, fn: str, kw: dict, steps: list[int]) -> dict:
    f = getattr(tf.compat.v1.train, fn)
    step_arg = STEP_ARG.get(fn, "global_step")

    def as64(k, v):
        if isinstance(v, bool) or k == "boundaries":
            return v
        if k == "values":
            return [tf.constant(x, tf.float64) for x in v]
        return tf.constant(v, tf.float64) if isinstance(v, float) else v

    kw64 = {k: as64(k, v) for k, v in kw.items()}  # Python ints are cast exactly; floats are not
    f32, f64 = [], []
    for s in steps:
        v32 = f(**{step_arg: s}, **kw)()
        assert v32.dtype == tf.float32, (fn, v32.dtype)
        f32.append(float(f"{float(v32.numpy()):.9g}"))  # 9 digits round-trip float32 exactly
        if f64 is not None:
            try:
                v64 = f(**{step_arg: s}, **kw64)()
            except tf.errors.InvalidArgumentError:
                f64 = None  # cosine_decay_restarts multiplies by a float32 pi: no float64 form
                continue
            assert v64.dtype == tf.float64, (fn, v64.dtype)
            f64.append(float(v64.numpy()))
    record = {"tf1_float32": f32}
    if f64 is not None:
        record["tf1_float64"] = f64
    cls = KERAS_CLASS[fn]
    if cls is not None:
        for key, args, dtype in (
            ("keras3_float32", kw, tf.float32),
            ("keras3_float64", kw64, tf.float64),
        ):
            sched = getattr(tf.keras.optimizers.schedules, cls)(
                **{KERAS_ARG.get(k, k): v for k, v in args.items()}
            )
            values = []
            for s in steps:
                v = tf.convert_to_tensor(sched(s))
                assert v.dtype == dtype, (cls, v.dtype, dtype)
                values.append(float(v.numpy()))
            if dtype == tf.float32:
                values = [float(f"{v:.9g}") for v in values]
            record[key] = values
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        print(
            "error: needs TensorFlow: pip install tensorflow-cpu (in its own venv)", file=sys.stderr
        )
        return 2

    golden = {
        "generator": "scripts/make_golden_schedules.py",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "about": (
            "tf1_float32: tf.compat.v1.train.<fn>(...)() with Python numbers (float32); "
            "tf1_float64: the same call with every float argument tf.constant(x, tf.float64); "
            "keras3_float32 / keras3_float64: the Keras 3 schedule class (where one exists) "
            "with the same two kinds of arguments. "
            "'call' is the exact TF1 call, 'step' taking each value of 'steps'."
        ),
        "cases": [],
    }
    n = 0
    for fn, kw, steps in cases():
        case = {"fn": fn, "kwargs": kw, "call": call_text(fn, kw)}
        if (text := keras_text(fn, kw)) is not None:
            case["keras_call"] = text
        case["steps"] = steps
        case.update(evaluate(tf, fn, kw, steps))
        golden["cases"].append(case)
        n += sum(len(v) for k, v in case.items() if k.endswith(("float32", "float64")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One case per line: readable diffs, small file.
    n_cases = len(golden["cases"])
    cases_text = ",\n".join(json.dumps(case) for case in golden.pop("cases"))
    head = json.dumps(golden, indent=1)[:-2]
    args.out.write_text(f'{head},\n "cases": [\n{cases_text}\n ]\n}}\n')
    print(f"wrote {args.out}: {n_cases} cases, {n} values, TF {tf.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
