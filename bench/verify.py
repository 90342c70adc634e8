"""Is an optimizer equal to a reference, step by step? ``python -m bench.verify SPEC --against R``.

Both optimizers start from the same parameters of a small deterministic problem and take the
same steps; after every step their parameters and the state keys they share are compared:

* problem: a tanh MLP regression ``(tanh(x w1^T + b1) w2^T + b2 - y)^2`` on 16 fixed samples
  (4 inputs, 6 hidden units, 3 outputs), in float64 or float32;
* three param groups: 0 = ``w1, b1`` with the constructor's arguments; 1 = ``w2`` with lr x 0.5 and
  every float hyperparameter both optimizers have (``betas``, ``eps``, ``momentum`` ...) moved
  (x 0.9 when in (0, 1), x 1.1 when above 1); 2 = ``b2`` with lr x 2, which gets no gradient
  (``grad is None``) on steps 1, 4, 7, ...;
* difference of a tensor: ``max |x - x_ref|`` (abs) and that over ``max(max |x|, max |x_ref|)``
  (rel); a check passes when every rel difference is <= rtol (default 1e-12 in float64, 1e-5 in
  float32).

Checks (rows of the report):

* ``params``: constant lr, parameters after every step.
* ``state``: the same run, every state key both keep (a key only one keeps is listed in the notes).
* ``resume``: SPEC alone; after step N/2 its params and ``state_dict()`` go through
  ``torch.save``/``torch.load`` into a new optimizer (``load_state_dict``), which then takes the
  remaining steps beside the uninterrupted one: params and every state key must be bitwise equal.
* ``schedule``: both under ``LambdaLR(lr x (1 + 0.5 sin 0.7k))``, params and shared state after
  every step; the notes say how far the schedule moved each trajectory from its constant-lr run
  (if it moved neither, the row is ``n/a``: both read the lr once).

Exit status: 0 when no check fails, 1 when one does (the line names the first step and tensor
where they part), 2 for a usage error (one line).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from bench.specs import OptimizerSpec, parse_opt_args, resolve_optimizer, split_opt_args

CHECKS = ("params", "state", "resume", "schedule")
SKIPPABLE = ("state", "resume", "schedule")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}
Status = Literal["pass", "FAIL", "skipped", "n/a"]

# ---------------------------------------------------------------------------- the problem

SHAPES = {"w1": (6, 4), "b1": (6,), "w2": (3, 6), "b2": (3,)}
GROUPS = (("w1", "b1"), ("w2",), ("b2",))
GROUP_LR_SCALE = (1.0, 0.5, 2.0)
_gen = torch.Generator().manual_seed(0)
_X = torch.randn(16, 4, generator=_gen, dtype=torch.float64)
_Y = torch.randn(16, 3, generator=_gen, dtype=torch.float64)


def initial_params(dtype: torch.dtype) -> dict[str, torch.nn.Parameter]:
    """The problem's starting point (drawn in float64, then cast)."""
    gen = torch.Generator().manual_seed(1)
    return {
        name: torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype))
        for name, shape in SHAPES.items()
    }


def has_no_grad(name: str, step: int) -> bool:
    return name == "b2" and step % 3 == 1


def loss(params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
    """The loss at ``step`` (1-based); b2 is left out of the graph on steps 1, 4, 7, ..."""
    w1, b1, w2, b2 = (params[n] for n in SHAPES)
    out = torch.tanh(_X.to(w1) @ w1.T + b1) @ w2.T
    if not has_no_grad("b2", step):
        out = out + b2
    return ((out - _Y.to(w1)) ** 2).mean()


def lr_factor(k: int) -> float:
    """The schedule's lr multiplier after ``k`` scheduler steps: changes on every step."""
    return 1.0 + 0.5 * math.sin(0.7 * k)


def _moved(value: Any) -> Any:
    """A different valid value for group 1: x 0.9 in (0, 1), x 1.1 above 1 (tuples elementwise)."""
    if isinstance(value, tuple) and value and all(type(v) is float for v in value):
        return tuple(map(_moved, value))
    if type(value) is not float:
        return value
    return value * 0.9 if 0 < value < 1 else value * 1.1 if value > 1 else value


# ---------------------------------------------------------------------------- report


@dataclass
class CheckResult:
    """One row: the largest differences seen, and the first step and tensor beyond tolerance."""

    name: str
    status: Status = "pass"
    max_abs: float | None = None
    max_rel: float | None = None
    first_step: int | None = None
    tensor: str | None = None
    detail: str = ""  # why it failed, when not a difference beyond tolerance

    def add(
        self,
        step: int,
        tensor: str,
        abs_diff: float,
        rel_diff: float,
        rtol: float,
        why: str = "",
    ) -> None:
        self.max_abs = abs_diff if self.max_abs is None else _max(self.max_abs, abs_diff)
        self.max_rel = rel_diff if self.max_rel is None else _max(self.max_rel, rel_diff)
        if not rel_diff <= rtol and self.first_step is None:
            self.status, self.first_step, self.tensor = "FAIL", step, tensor
            self.detail = why and f"{tensor} {why} at step {step}"

    def raised(self, step: int, who: str, error: BaseException) -> None:
        self.status = "FAIL"
        if self.first_step is None:
            self.first_step, self.tensor = step, f"({type(error).__name__} raised)"
        self.detail = f"{who} raised at step {step}: {_one_line(error)}"

    def failure_line(self, rtol: float) -> str:
        if self.detail:
            return f"FAIL {self.name}: {self.detail}"
        bound = "bitwise" if self.name == "resume" else f"rtol {rtol:.0e}"
        return (
            f"FAIL {self.name}: they part at step {self.first_step} in {self.tensor} "
            f"(max rel diff {_fmt(self.max_rel)}, {bound})"
        )


def _max(a: float, b: float) -> float:
    return a if math.isnan(a) or a >= b else b


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.1e}"


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` is True when no check failed."""

    spec: str
    against: str
    dtype: str
    steps: int
    rtol: float
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def table(self) -> str:
        header = ("check", "result", "max abs diff", "max rel diff", "first step apart", "tensor")
        rows = [header] + [
            (
                c.name,
                c.status,
                _fmt(c.max_abs),
                _fmt(c.max_rel),
                "-" if c.first_step is None else str(c.first_step),
                c.tensor or "-",
            )
            for c in self.checks
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )

    def __str__(self) -> str:
        lines = [
            f"{self.spec} against {self.against}: {self.dtype}, {self.steps} steps, "
            f"rtol {self.rtol:.0e}",
            "",
            self.table(),
            "",
            *(f"note: {n}" for n in self.notes),
        ]
        failed = [c.failure_line(self.rtol) for c in self.checks if c.status == "FAIL"]
        lines += failed or [f"pass: {self.spec} matches {self.against}"]
        return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ---------------------------------------------------------------------------- comparisons


def difference(got: Any, want: Any) -> tuple[float, float]:
    """``(max |got - want|, that / max(max |got|, max |want|))`` for tensors or numbers (finite
    entries set the scale); NaN where both have NaN counts as equal, anything else unequal (or
    a shape mismatch) as ``inf``."""
    if not isinstance(got, (torch.Tensor, int, float)) or isinstance(got, bool):
        return (0.0, 0.0) if got == want else (math.inf, math.inf)
    if not isinstance(want, (torch.Tensor, int, float)) or isinstance(want, bool):
        return math.inf, math.inf
    a = torch.as_tensor(got).detach().to("cpu", torch.float64)
    b = torch.as_tensor(want).detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        return math.inf, math.inf
    same = (a == b) | (a.isnan() & b.isnan())
    d = torch.where(same, 0.0, (a - b).abs()).nan_to_num(nan=math.inf)
    abs_diff = d.max().item() if d.numel() else 0.0
    both = torch.cat([a.flatten(), b.flatten()])
    finite = both[both.isfinite()].abs()
    scale = finite.max().item() if finite.numel() else 0.0
    if abs_diff == 0:
        return 0.0, 0.0
    return abs_diff, abs_diff / scale if scale > 0 else math.inf


class _Run:
    """One optimizer on its own copy of the problem, optionally under the LambdaLR schedule."""

    def __init__(
        self,
        spec: OptimizerSpec,
        kwargs: Mapping[str, Any],
        group_args: Sequence[Mapping[str, Any]],
        dtype: torch.dtype,
        schedule: bool = False,
    ) -> None:
        self.params = initial_params(dtype)
        groups = [
            {"params": [self.params[n] for n in names], **extra}
            for names, extra in zip(GROUPS, group_args, strict=True)
        ]
        self.opt = spec.create(groups, **kwargs)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor) if schedule else None

    def step(self, k: int) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss(self.params, k).backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def state(self, name: str) -> Mapping[str, Any]:
        return self.opt.state.get(self.params[name], {})


class _KeyLog:
    """State keys seen in only one of two runs (for the notes)."""

    def __init__(self) -> None:
        self.shared: set[str] = set()
        self.only: tuple[set[str], set[str]] = (set(), set())

    def keys(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
        shared = [k for k in a if k in b]
        self.shared.update(shared)
        self.only[0].update(k for k in a if k not in b)
        self.only[1].update(k for k in b if k not in a)
        return shared


def _compare(
    step: int,
    ours: _Run,
    ref: _Run,
    params: CheckResult,
    state: CheckResult | None,
    rtol: float,
    keys: _KeyLog,
    all_keys: bool = False,
) -> None:
    for name in SHAPES:
        params.add(step, name, *difference(ours.params[name], ref.params[name]), rtol)
    if state is None:
        return
    for name in SHAPES:
        a, b = ours.state(name), ref.state(name)
        for key in a.keys() | b.keys() if all_keys else keys.keys(a, b):
            where = f"state[{name}][{key!r}]"
            if key not in a or key not in b:  # all_keys: a is the resumed run
                why = "is missing after the round trip" if key in b else "appeared in it"
                state.add(step, where, math.inf, math.inf, rtol, why=why)
            else:
                state.add(step, where, *difference(a[key], b[key]), rtol)


def _round_trip(run: _Run, build: Callable[[bool], _Run]) -> _Run:
    """A new run (from ``build``) given ``run``'s params and state_dict through torch.save and
    torch.load."""
    buffer = io.BytesIO()
    torch.save(
        {"params": {n: p.detach() for n, p in run.params.items()}, "opt": run.opt.state_dict()},
        buffer,
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)  # our own bytes, just written
    resumed = build(False)
    with torch.no_grad():
        for name, p in resumed.params.items():
            p.copy_(saved["params"][name])
    resumed.opt.load_state_dict(saved["opt"])
    return resumed


# ---------------------------------------------------------------------------- verify


def _lr_args(
    ours: OptimizerSpec, ref: OptimizerSpec, kwargs: tuple[dict, dict], opt_args: Mapping
) -> None:
    """Give an lr to each optimizer that takes one and got none: the unprefixed --opt-arg lr,
    else the reference's default lr, else the candidate's."""
    common = opt_args.get("lr", ref.default_lr())
    if common is None:
        common = ours.default_lr()
    for spec, kw in zip((ours, ref), kwargs, strict=True):
        if "lr" in kw or not spec.accepts("lr"):
            continue
        if common is None:
            raise ValueError(
                f"neither {ref.spec} nor {ours.spec} has a default lr; give --opt-arg lr=..."
            )
        kw["lr"] = common


def _group_args(
    ours: torch.optim.Optimizer, ref: torch.optim.Optimizer
) -> tuple[list[dict], list[dict], list[str]]:
    """Per-group overrides for each optimizer, and the names of the moved hyperparameters."""
    shared = [k for k in ours.defaults if k in ref.defaults]
    moved = sorted(
        k
        for k in shared
        if k != "lr"
        and _moved(ours.defaults[k]) != ours.defaults[k]
        and _moved(ref.defaults[k]) != ref.defaults[k]
    )
    out = []
    for opt in (ours, ref):
        groups = []
        for i, scale in enumerate(GROUP_LR_SCALE):
            extra: dict[str, Any] = {}
            if "lr" in shared and scale != 1.0:
                extra["lr"] = opt.defaults["lr"] * scale
            if i == 1:
                extra.update({k: _moved(opt.defaults[k]) for k in moved})
            groups.append(extra)
        out.append(groups)
    return out[0], out[1], moved


def verify(
    spec: str | type[torch.optim.Optimizer] | OptimizerSpec,
    against: str | type[torch.optim.Optimizer] | OptimizerSpec,
    *,
    opt_args: Mapping[str, Any] | None = None,
    steps: int = 200,
    dtype: torch.dtype | str = torch.float64,
    rtol: float | None = None,
    skip: Iterable[str] = (),
) -> VerifyReport:
    """Run ``spec`` and ``against`` side by side (see the module docstring) and report.

    ``opt_args`` are constructor arguments, ``{"key": v}`` for both (every optimizer that takes
    it) or ``{"SPEC:key": v}`` for one; ``skip`` names checks to leave out (state, resume,
    schedule). Raises ValueError (one line) for a spec that does not resolve, an argument a
    constructor rejects, or a bad option; a failing or raising optimizer is a failed check.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        dtype = DTYPES[dtype]
    if dtype not in DEFAULT_RTOL:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    rtol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    if not (isinstance(rtol, (int, float)) and 0 <= rtol < math.inf):
        raise ValueError(f"rtol must be a number >= 0, got {rtol!r}")
    skip = set(skip)
    if skip - set(SKIPPABLE):
        bad = sorted(skip - set(SKIPPABLE))[0]
        raise ValueError(f"cannot skip '{bad}'; checks that can be skipped: {', '.join(SKIPPABLE)}")

    ours_spec, ref_spec = resolve_optimizer(spec), resolve_optimizer(against)
    opt_args = dict(opt_args or {})
    per_spec = split_opt_args(opt_args, [ours_spec, ref_spec])
    kwargs = (dict(per_spec[ours_spec.spec]), dict(per_spec[ref_spec.spec]))
    _lr_args(ours_spec, ref_spec, kwargs, opt_args)
    probes = [
        s.create([torch.zeros(1, dtype=dtype, requires_grad=True)], **kw)
        for s, kw in zip((ours_spec, ref_spec), kwargs, strict=True)
    ]
    ours_groups, ref_groups, moved = _group_args(*probes)
    build: dict[str, Callable[[bool], _Run]] = {
        "ours": lambda sched: _Run(ours_spec, kwargs[0], ours_groups, dtype, sched),
        "ref": lambda sched: _Run(ref_spec, kwargs[1], ref_groups, dtype, sched),
    }
    names = {"ours": ours_spec.spec, "ref": ref_spec.spec}

    rows = {name: CheckResult(name) for name in CHECKS}
    for name in skip:
        rows[name].status = "skipped"
    notes = [
        "param groups: 0 = w1, b1 (constructor arguments); 1 = w2 (lr x 0.5"
        + (f"; {', '.join(moved)} moved" if moved else "")
        + "); 2 = b2 (lr x 2; no gradient on steps 1, 4, 7, ...)",
        "constructor arguments: "
        + "; ".join(
            f"{names[w]}: " + (", ".join(f"{k}={v!r}" for k, v in kw.items()) or "defaults")
            for w, kw in zip(("ours", "ref"), kwargs, strict=True)
        ),
    ]
    constant = _constant_lr(build, names, rows, rtol, steps, notes, skip)
    if "schedule" not in skip and all("lr" in p.defaults for p in probes):
        _schedule(build, names, constant, rows["schedule"], rtol, steps, notes)
    elif "schedule" not in skip:
        rows["schedule"].status = "n/a"
        notes.append("no schedule: the optimizers do not both have an lr")
    return VerifyReport(
        ours_spec.spec, ref_spec.spec, str(dtype).removeprefix("torch."), steps, rtol,
        [rows[n] for n in CHECKS], notes,
    )  # fmt: skip


def _constant_lr(
    build: Mapping[str, Callable[[bool], _Run]],
    names: Mapping[str, str],
    rows: Mapping[str, CheckResult],
    rtol: float,
    steps: int,
    notes: list[str],
    skip: set[str],
) -> dict[str, _Run]:
    """The constant-lr runs, compared after every step (params, shared state), and the resume
    branch: a round trip of SPEC after step N // 2, then stepped beside the original."""
    keys = _KeyLog()
    ours, ref = build["ours"](False), build["ref"](False)
    state_row = None if "state" in skip else rows["state"]
    resume_row = None if "resume" in skip else rows["resume"]
    mid, resumed, completed = steps // 2, None, True
    for k in range(1, steps + 1):
        if not _step_both(k, ours, ref, names, [rows["params"], state_row, resume_row]):
            completed = False
            break
        _compare(k, ours, ref, rows["params"], state_row, rtol, keys)
        if resume_row is None or resume_row.status == "FAIL":
            continue
        try:
            if k == mid:
                resumed = _round_trip(ours, build["ours"])
            elif resumed is not None:
                resumed.step(k)
        except Exception as e:
            resume_row.raised(k, f"{names['ours']} (resumed)", e)
            continue
        if resumed is not None:
            _compare(k, resumed, ours, resume_row, resume_row, 0.0, _KeyLog(), all_keys=True)
    _notes_on_state(rows["state"], keys, names, notes)
    if resumed is not None:
        notes.append(
            f"resume: {names['ours']} saved after step {mid}, reloaded, stepped to {steps}"
        )
    start = initial_params(next(iter(ref.params.values())).dtype)
    if completed and all(difference(ref.params[n], start[n])[0] == 0 for n in SHAPES):
        notes.append(f"the parameters of {names['ref']} did not move: nothing was compared")
        if rows["params"].status == "pass":
            rows["params"].status = "n/a"
    return {"ours": ours, "ref": ref}


def _step_both(k: int, ours: _Run, ref: _Run, names: Mapping[str, str], rows: list) -> bool:
    """Step both runs; on an exception mark ``rows`` failed and return False."""
    for who, run in (("ours", ours), ("ref", ref)):
        try:
            run.step(k)
        except Exception as e:
            for row in rows:
                if row is not None and row.status != "skipped":
                    row.raised(k, names[who], e)
            return False
    return True


def _notes_on_state(
    row: CheckResult, keys: _KeyLog, names: Mapping[str, str], notes: list[str]
) -> None:
    if row.status == "skipped":
        return
    only_ours, only_ref = keys.only
    if only_ours or only_ref:
        parts = [f"only {names[w]} keeps {', '.join(sorted(s))}" for w, s in
                 (("ours", only_ours), ("ref", only_ref)) if s]  # fmt: skip
        notes.append(
            "state keys differ: "
            + "; ".join(parts)
            + (
                f"; compared params and the shared keys {', '.join(sorted(keys.shared))}"
                if keys.shared
                else "; no shared key, so only the params were compared"
            )
        )
    elif keys.shared:
        notes.append(f"state compared on keys {', '.join(sorted(keys.shared))}")
    if not keys.shared and row.status == "pass":
        row.status = "n/a"
        if not (only_ours or only_ref):
            notes.append("neither optimizer keeps state")


def _schedule(
    build: Mapping[str, Callable[[bool], _Run]],
    names: Mapping[str, str],
    constant: Mapping[str, _Run],
    row: CheckResult,
    rtol: float,
    steps: int,
    notes: list[str],
) -> None:
    """Both under LambdaLR, compared step by step; how far it moved each from constant lr."""
    ours, ref = build["ours"](True), build["ref"](True)
    keys = _KeyLog()
    for k in range(1, steps + 1):
        if not _step_both(k, ours, ref, names, [row]):
            return
        _compare(k, ours, ref, row, row, rtol, keys)
    moved = {}
    for who, run in (("ours", ours), ("ref", ref)):
        moved[who] = max(difference(run.params[n], constant[who].params[n])[1] for n in SHAPES)
    notes.append(
        "schedule LambdaLR(lr x (1 + 0.5 sin 0.7k)) moved the final params from the constant-lr "
        f"run by {_fmt(moved['ours'])} ({names['ours']}) and {_fmt(moved['ref'])} "
        f"({names['ref']}) relative"
    )
    if moved["ref"] <= rtol and moved["ours"] <= rtol and row.status == "pass":
        row.status = "n/a"
        notes.append("the schedule changed neither trajectory: both read the lr once")


# ---------------------------------------------------------------------------- CLI


class UsageError(Exception):
    """A bad command line: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.verify",
        description="Check an optimizer against a reference, step by step (exit 0 equal, "
        "1 a check failed, 2 usage error).",
    )
    p.add_argument("spec", help="the optimizer to check: a built-in name, entry point or import "
                   "path (mypkg.adam:MyAdam, torch.optim.AdamW)")  # fmt: skip
    p.add_argument("--against", required=True, metavar="SPEC", help="the reference optimizer")
    p.add_argument("--opt-arg", action="append", default=[], metavar="[SPEC:]KEY=VALUE",
                   help="constructor argument (a Python literal) for both optimizers that take "
                   "it, or for SPEC only; repeatable")  # fmt: skip
    p.add_argument("--steps", type=int, default=200, help="steps per run (default 200)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float64")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance (default 1e-12 float64, 1e-5 float32)")  # fmt: skip
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help=f"leave out checks ({', '.join(SKIPPABLE)}); repeatable")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        skip = [s.strip() for item in args.skip for s in item.split(",") if s.strip()]
        report = verify(
            args.spec,
            args.against,
            opt_args=parse_opt_args(args.opt_arg),
            steps=args.steps,
            dtype=args.dtype,
            rtol=args.rtol,
            skip=skip,
        )
    except (UsageError, ValueError) as e:
        print(f"bench.verify: error: {e}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    from bench.procs import exit_now

    exit_now(main())
