"""N runs of one task and one optimizer trained as one batched model: ``train_batch(configs)``.

Every optimizer here is elementwise, so N independent runs are one run on parameters stacked along
a new leading dimension (member i is slice i of every tensor):

    theta = stack(theta_1 .. theta_N),  L(theta) = sum_i L_i(theta_i),  dL/dtheta_i = dL_i/dtheta_i

so one forward, one backward of the sum and one optimizer step train all N. Member i is built,
initialised and fed minibatches exactly as ``train_one_run(configs[i])`` would (its own
``task.build`` after ``torch.manual_seed(seed_i)``, its own permutation generator), uses the lr
its own schedule gives at every step, and is logged with ``bench.train``'s row semantics. Each
record therefore equals the separate run's up to rounding (batched matrix products may sum in
another order); its timings are the batch's divided by N. A member whose train loss diverges ends
its record at that row exactly as the separate run would; from then on its slice of every
parameter is restored after each step (frozen), and its NaNs cannot reach another slice because
nothing here reduces across members except the final sum, whose gradient is 1 for every member.

The optimizer's param group lr is a float when all members share their lr and schedule, else a
float64 tensor of the N members' lrs (an optbench optimizer extension, ``optimizers._base.run_lr``:
a 1-D lr applies along the leading dimension of every parameter), assigned after construction.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from bench import tasks as T
from bench.train import (
    FORMAT_VERSION,
    LogSteps,
    RunConfig,
    _jsonable,
    _summarise,
    device_name,
    train_one_run,
    versions,
)

#: The RunConfig fields every member of a batch shares; seed, lr, sched, sched_args and warmup
#: may differ.
SHARED_FIELDS = (
    "task",
    "optim",
    "opt_args",
    "steps",
    "batch_size",
    "device",
    "threads",
    "eval_every",
    "data_dir",
    "optim_version",
    "task_version",
)

#: Test samples per forward pass when evaluating a member (as ClassificationProblem.evaluate).
EVAL_CHUNK = 2000

#: (optimizer name, stacked params, lr, opt_args) -> optimizer, built with a float lr; the batch
#: then sets ``param_groups[0]["lr"]`` to a float or an (N,) tensor (one lr per member) per step.
OptimizerFactory = Callable[[str, list[Tensor], Any, dict[str, Any]], torch.optim.Optimizer]

#: Called at every logged row with (step, steps).
BatchProgress = Callable[[int, int], None]


def registry_optimizer(
    name: str, params: list[Tensor], lr: float | Tensor, opt_args: dict[str, Any]
) -> torch.optim.Optimizer:
    """The separate run's optimizer: ``optimizers.create(name, params, lr=lr, **opt_args)``.

    Only the built-in optimizers: they are elementwise, which stacking needs. An optimizer from
    outside may couple elements (a norm over a tensor would mix the members), so it is refused
    (NotImplementedError; train_batch then runs the members separately)."""
    import optimizers

    if name not in optimizers.available():
        raise NotImplementedError(f"optimizer '{name}' is not built in; only those are batched")
    return optimizers.create(name, params, lr=lr, **opt_args)


def batch_key(config: RunConfig) -> str:
    """The shared fields of ``config`` as a string: configs with equal keys can be batched."""
    return json.dumps([getattr(config, f) for f in SHARED_FIELDS], sort_keys=True, default=repr)


def check_batch(configs: Sequence[RunConfig]) -> None:
    """Raise ValueError unless ``configs`` is a non-empty list of distinct RunConfigs that agree
    on every field of SHARED_FIELDS."""
    if not configs:
        raise ValueError("train_batch needs at least one RunConfig, got none")
    for i, c in enumerate(configs):
        if not isinstance(c, RunConfig):
            raise ValueError(f"configs[{i}] must be a RunConfig, got {type(c).__name__}")
    first = configs[0]
    for i, c in enumerate(configs[1:], start=1):
        for f in SHARED_FIELDS:
            if getattr(c, f) != getattr(first, f):
                raise ValueError(
                    f"configs of one batch must share {f}: configs[{i}] has {getattr(c, f)!r}, "
                    f"configs[0] has {getattr(first, f)!r} (only seed, lr, sched, sched_args and "
                    "warmup may differ)"
                )
    seen: dict[str, int] = {}
    for i, c in enumerate(configs):
        if c.run_id in seen:
            raise ValueError(
                f"configs[{i}] is the same run as configs[{seen[c.run_id]}] (run id {c.run_id})"
            )
        seen[c.run_id] = i


def train_batch(
    configs: Sequence[RunConfig],
    *,
    make_optimizer: OptimizerFactory = registry_optimizer,
    fallback: bool = True,
    progress: BatchProgress | None = None,
) -> list[dict[str, Any]]:
    """Train ``configs`` as one batched model; return their records in order.

    Record i equals ``train_one_run(configs[i])`` (same keys, run id, status and curves, to
    rounding) plus ``"batch": {"size": N, "index": i}``; ``elapsed_s``, ``wall_s`` and ``train_s``
    are the batch's divided by N. If the batched run raises (a bad member config, an optimizer
    that rejects a tensor lr...), each member is run separately instead (``fallback``; off: the
    exception propagates) and its ``batch`` entry carries ``"fallback": <the error>``.
    Raises ValueError when the configs cannot form a batch (see ``check_batch``).
    """
    configs = list(configs)
    check_batch(configs)
    n = len(configs)
    try:
        records = _train_stacked(configs, make_optimizer, progress)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if not fallback:
            raise
        lines = str(e).strip().splitlines()
        error = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        records = [train_one_run(c) for c in configs]
        for i, r in enumerate(records):
            r["batch"] = {"size": n, "index": i, "fallback": error}
        return records
    for i, r in enumerate(records):
        r["batch"] = {"size": n, "index": i}
    return records


# ---------------------------------------------------------------------------- the loop


def _train_stacked(
    configs: list[RunConfig], make_optimizer: OptimizerFactory, progress: BatchProgress | None
) -> list[dict[str, Any]]:
    start = time.perf_counter()
    first = configs[0]
    n = len(configs)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(first.threads)
        device = torch.device(first.device)
        started_at, vers, name = (
            time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            versions(),
            device_name(device),
        )
        records = [_new_record(c, started_at, vers, name) for c in configs]
        curves = [{k: [] for k in _CURVE_KEYS} for _ in configs]
        summaries = [{"steps_done": 0, "train_s": 0.0} for _ in configs]
        _loop(configs, device, make_optimizer, records, curves, summaries, progress)
    finally:
        torch.set_num_threads(threads_before)
    wall_s = (time.perf_counter() - start) / n
    for r, c, s in zip(records, curves, summaries, strict=True):
        r["curves"] = _jsonable(c)
        r["summary"] = _jsonable(_summarise(c, s, wall_s))
    return records


_CURVE_KEYS = ("step", "lr", "train_loss", "test_loss", "test_acc", "elapsed_s", "x", "y")


def _new_record(config: RunConfig, started_at: str, vers: dict, name: str) -> dict[str, Any]:
    """The fields train_one_run's record starts with, in its order."""
    return {
        "run_id": config.run_id,
        "format": FORMAT_VERSION,
        "config": _jsonable(asdict(config)),
        "status": "failed",
        "error": None,
        "diverged_at_step": None,
        "divergence": None,
        "started_at": started_at,
        "versions": vers,
        "threads": config.threads,
        "device": config.device,
        "device_name": name,
    }


def _loop(configs, device, make_optimizer, records, curves, summaries, progress) -> None:
    """train.py's loop with every per-run quantity a vector over the N members."""
    first, n = configs[0], len(configs)
    task = T.get(first.task)
    stacked = stack_problems(task, configs, device)
    schedules = MemberSchedules(configs)
    lrs = schedules.lrs()
    per_member_lr = schedules.distinct > 1
    # Built with a float lr (the constructor keeps torch's one-element rule for tensor lrs),
    # then given the per-member lrs; initial_lr is what a separate run's scheduler sets (Rprop
    # derives its step sizes from it).
    opt = make_optimizer(first.optim, stacked.params, lrs[0], first.opt_args)
    group = opt.param_groups[0]
    group["lr"] = _group_lr(lrs, per_member_lr, device)
    group["initial_lr"] = _group_lr([c.lr for c in configs], per_member_lr, device)
    steps = first.steps
    log = LogSteps(steps, first.eval_every)
    bound = task.diverge_above
    frozen = _Frozen(stacked.params)
    rows = _Rows(n)

    active = list(range(n))  # members still logged
    is_active = torch.ones(n, dtype=torch.bool, device=device)
    for r in records:
        r["status"] = "ok"
    acc = torch.zeros(n, dtype=torch.float64, device=device)  # loss sums since the last row
    n_acc = 0
    t0 = time.perf_counter()
    row0: dict[str, list] | None = None
    for j in range(steps + 1):
        if j > 0:
            lrs = schedules.lrs()
            group["lr"] = _group_lr(lrs, per_member_lr, device)
            losses = stacked.train_losses()
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            acc += losses.detach()
            n_acc += 1
            if j == 1 or log.is_row(j):
                lr_used = lrs
            if j == 1:
                first_losses, first_lrs = losses.detach().clone(), lrs
            opt.step()
            frozen.restore()
            schedules.step()
            if not log.is_row(j):
                continue
        if j == 0:  # row 0 is measured before any update; its loss is the first minibatch's
            row0 = stacked.measure(active, log.is_eval(j))
            continue
        mean_losses = acc / n_acc
        acc.zero_()
        n_acc = 0
        elapsed = (time.perf_counter() - t0) / n
        if row0 is not None:
            rows.add(0, first_lrs, first_losses.double(), row0, 0.0)
            row0 = None
        rows.add(j, lr_used, mean_losses, stacked.measure(active, log.is_eval(j)), elapsed)
        bad = (~torch.isfinite(mean_losses) | (mean_losses > bound)) & is_active
        diverged = bad.nonzero().flatten().tolist() if bad.any() else []
        for i in diverged:
            loss = mean_losses[i].item()
            records[i]["status"] = "diverged"
            records[i]["diverged_at_step"] = j
            records[i]["divergence"] = f"train loss {loss:.4g} at step {j} (bound {bound:g})"
        if progress is not None:
            progress(j, steps)
        if diverged:
            rows.end(diverged)
            frozen.add(diverged)
            is_active[diverged] = False
            active = [i for i in active if i not in diverged]
            if not active:
                break
    rows.end(active)
    rows.fill(curves, summaries)


class _Rows:
    """The batch's logged rows as columns, each row an N-list or an (N,) tensor over the members
    (train.py's row semantics per member); member i's curves are the rows logged before it ended
    (diverged, or the batch finished). Appending a row is O(1) Python calls, whatever N, and
    tensors are read back once, in ``fill``."""

    KEYS = ("lr", "train_loss", "test_loss", "test_acc", "x", "y")

    def __init__(self, n: int) -> None:
        self.n = n
        self.step: list[int] = []
        self.elapsed: list[float] = []
        self.columns: dict[str, list[list]] = {k: [] for k in self.KEYS}
        self.ends: dict[int, int] = {}  # member -> how many rows it has
        self.none = [None] * n

    def add(
        self, step: int, lrs: list[float], losses: Tensor, measured: dict[str, list | Tensor],
        elapsed: float,
    ) -> None:  # fmt: skip
        self.step.append(step)
        self.elapsed.append(elapsed)
        self.columns["lr"].append(lrs)
        self.columns["train_loss"].append(losses)
        for key in self.KEYS[2:]:
            self.columns[key].append(measured.get(key, self.none))

    def end(self, members: list[int]) -> None:
        for i in members:
            self.ends.setdefault(i, len(self.step))

    def fill(self, curves: list[dict[str, list]], summaries: list[dict[str, Any]]) -> None:
        """Each member's rows into its curves (as ``bench.train._append`` writes them) and its
        steps_done / train_s (those of its last row) into its summary."""
        by_member = {k: _by_member(rows, self.n) for k, rows in self.columns.items()}
        elapsed = [round(e, 6) for e in self.elapsed]
        for i, k in self.ends.items():
            c = curves[i]
            c["step"] = self.step[:k]
            for key in self.KEYS:  # (the lrs are floats: MemberSchedules.lrs)
                c[key] = by_member[key][i][:k]
            c["elapsed_s"] = elapsed[:k]
            if k:  # (row 0 is step 0 at 0 s)
                summaries[i]["steps_done"] = self.step[k - 1]
                summaries[i]["train_s"] = self.elapsed[k - 1]


def _by_member(rows: list, n: int) -> list[list]:
    """Rows of N values (lists, or tensors read back in one ``tolist``) as N per-member lists."""
    if not rows:
        return [[] for _ in range(n)]
    if all(isinstance(row, Tensor) for row in rows):
        return torch.stack(rows).T.tolist()
    rows = [row.tolist() if isinstance(row, Tensor) else row for row in rows]
    return [list(member) for member in zip(*rows, strict=True)]


def _group_lr(lrs: list[float], per_member: bool, device: torch.device) -> float | Tensor:
    """The optimizer group's lr: a float when all members share it, else the (N,) float64 tensor
    (the optimizer casts it to each parameter's dtype)."""
    if per_member:
        return torch.tensor(lrs, dtype=torch.float64, device=device)
    return lrs[0]


class _Frozen:
    """Members whose slices are put back after every optimizer step (diverged runs)."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.members: list[int] = []
        self.index: Tensor | None = None
        self.values: list[Tensor] = []

    @torch.no_grad()
    def add(self, members: list[int]) -> None:
        self.members += members
        self.index = torch.tensor(self.members, device=self.params[0].device)
        self.values = [p.index_select(0, self.index) for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        if self.index is not None:
            for p, v in zip(self.params, self.values, strict=True):
                p.index_copy_(0, self.index, v)


# ---------------------------------------------------------------------------- schedules


class MemberSchedules:
    """Each member's lr at every step, from the schedule ``schedulers.create`` builds for it, as
    ``train.make_optimizer`` builds the separate run's.

    Members with one (sched, sched_args, warmup) share one scheduler over a dummy optimizer that
    has one param group per distinct initial lr. The schedules are per-group closed forms (and
    warm-up's LinearLR is per group too), so each group's lrs are those of a one-group run.
    ``lrs()`` is the lr of the next update; call ``step()`` after each update.
    """

    def __init__(self, configs: Sequence[RunConfig]) -> None:
        import optimizers
        import schedulers

        specs: dict[str, tuple[RunConfig, dict[float, int]]] = {}
        slots = []
        for c in configs:
            spec = json.dumps([c.sched, c.sched_args, c.warmup], sort_keys=True, default=repr)
            _, lrs = specs.setdefault(spec, (c, {}))
            slots.append((spec, lrs.setdefault(c.lr, len(lrs))))
        self._groups: list[dict[str, Any]] = []
        offset: dict[str, int] = {}
        self._schedulers = []
        for spec, (c, lrs) in specs.items():
            groups = [{"params": [torch.zeros(0, requires_grad=True)], "lr": lr} for lr in lrs]
            dummy = optimizers.SGD(groups)
            self._schedulers.append(
                schedulers.create(c.sched, dummy, c.steps, warmup_steps=c.warmup, **c.sched_args)
            )
            dummy.step()  # a no-op (no gradients) that tells torch the optimizer steps first
            offset[spec] = len(self._groups)
            self._groups += dummy.param_groups
        self._index = [offset[spec] + g for spec, g in slots]
        self.distinct = len(self._groups)

    def lrs(self) -> list[float]:
        values = [float(g["lr"]) for g in self._groups]
        return [values[k] for k in self._index]

    def step(self) -> None:
        for s in self._schedulers:
            s.step()


# ---------------------------------------------------------------------------- stacked problems


def stack_problems(
    task: T.Task, configs: Sequence[RunConfig], device: torch.device
) -> StackedSurface | StackedClassifier:
    """Build every member's problem as train_one_run does, then stack them (NotImplementedError
    for a problem type that has no stacked form)."""
    problems = []
    for c in configs:
        _manual_seed(c.seed, device)
        problem = task.build(c.seed, device, c.data_dir, c.batch_size)
        if isinstance(problem, T.ClassificationProblem) and problems:
            # keep only what differs between members; the data is the first member's
            problem = (problem.model, problem.gen)
        problems.append(problem)
    if isinstance(problems[0], T.SurfaceProblem):
        return StackedSurface(problems, configs[0].task)
    if isinstance(problems[0], T.ClassificationProblem):
        head = problems[0]
        models = [head.model] + [m for m, _ in problems[1:]]
        gens = [head.gen] + [g for _, g in problems[1:]]
        return StackedClassifier(head, models, gens)
    raise NotImplementedError(f"no batched form for {type(problems[0]).__name__}")


def _manual_seed(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` as far as a member built on ``device`` draws from it: on a CPU
    only the CPU generator, since torch.manual_seed also queues the seed for every accelerator
    not yet initialised, formatting a stack trace for each (most of a surface batch's set-up)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


class StackedSurface:
    """N points on one 2-D surface: one (N, 2) float64 parameter, losses f(x_i, y_i).

    f applied to the columns gives every member's loss when f is elementwise in x and y (the
    built-in surfaces are). A function of one's own may not be: f must give N values that equal
    the members' own at their starts, else NotImplementedError (and separate runs)."""

    def __init__(self, problems: list[T.SurfaceProblem], name: str = "") -> None:
        self.fn = problems[0].fn
        self.xy = torch.stack([p.xy.detach() for p in problems]).requires_grad_()
        self.params = [self.xy]
        with torch.no_grad():
            stacked = self.fn(self.xy[:, 0], self.xy[:, 1])
            alone = torch.stack([p.train_loss() for p in problems])
        if stacked.shape != alone.shape or not torch.allclose(
            stacked, alone, rtol=1e-12, atol=0.0, equal_nan=True
        ):
            raise NotImplementedError(f"surface '{name}' is not elementwise in x and y")

    def train_losses(self) -> Tensor:
        return self.fn(self.xy[:, 0], self.xy[:, 1])

    def measure(self, members: list[int], evaluate: bool) -> dict[str, Tensor]:
        """Every member's position: {"x": (N,), "y": (N,)}, copies of this step's."""
        xy = self.xy.detach()
        return {"x": xy[:, 0].clone(), "y": xy[:, 1].clone()}


class StackedClassifier:
    """N copies of one network, their parameters stacked (``torch.func.stack_module_state``) and
    run by ``stacked_forward`` on an (N, B, ...) minibatch: member i's loss is its own mean
    cross-entropy on its own minibatch. Test metrics are computed member by member (evaluation
    is rare; this keeps its memory that of one run and its numbers independent of the others)."""

    def __init__(self, head: T.ClassificationProblem, models: list[nn.Module], gens: list) -> None:
        self.x_train, self.y_train = head.x_train, head.y_train
        self.x_test, self.y_test = head.x_test, head.y_test
        self.named_params, self.buffers = stack_module_state(models)
        self.params = list(self.named_params.values())
        self.order = MinibatchOrder(gens, len(self.y_train), head.batch_size, head.device)
        self.base = copy.deepcopy(models[0]).to("meta")
        self.forward = stacked_forward(self.base, self.named_params, self.buffers)

    def train_losses(self) -> Tensor:
        idx = self.order.next()
        # (index_select on the flat indices: the same rows as x[idx], without advanced
        # indexing's general machinery)
        flat = idx.flatten()
        x = self.x_train.index_select(0, flat).view(*idx.shape, *self.x_train.shape[1:])
        logits = self.forward(x)
        y = self.y_train.index_select(0, flat).view(idx.shape)
        # (N, C, B) is cross-entropy's (batch, class, extra) form: no copy of a transposed view
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)

    @torch.no_grad()
    def measure(self, members: list[int], evaluate: bool) -> dict[str, list]:
        """The test metrics of ``members`` as N-lists (None for the others); {} when not
        ``evaluate``."""
        if not evaluate:
            return {}
        got = {i: self.evaluate(i) for i in members}
        return {k: [got[i][k] if i in got else None for i in range(len(self.params[0]))]
                for k in ("test_loss", "test_acc")}  # fmt: skip

    def evaluate(self, i: int, chunk: int = EVAL_CHUNK) -> dict[str, float]:
        """Member i's test metrics, computed as ``ClassificationProblem.evaluate`` computes them
        (its chunks, its sums), so they depend on no other member."""
        params = {k: v[i] for k, v in self.named_params.items()}
        buffers = {k: v[i] for k, v in self.buffers.items()}
        loss = torch.zeros((), dtype=torch.float64, device=self.y_test.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.y_test.device)
        for start in range(0, len(self.y_test), chunk):
            out = functional_call(
                self.base, (params, buffers), (self.x_test[start : start + chunk],)
            )
            y = self.y_test[start : start + chunk]
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
        n = len(self.y_test)
        return {"test_loss": loss.item() / n, "test_acc": correct.item() / n}


#: Modules applied elementwise, hence directly to stacked activations.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity)


def stacked_forward(
    module: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], prefix: str = ""
) -> Callable[[Tensor], Tensor]:
    """``x -> y``: ``module`` applied member by member to x of shape (N, B, ...), member i with
    slice i of the stacked ``params`` and ``buffers`` (named as in ``module.named_parameters``).

    nn.Sequential goes layer by layer; nn.Linear is one batched matrix product
    ``y_i = x_i W_i^T + b_i`` (``baddbmm``); elementwise activations apply as they are; any other
    module (convolutions, pooling, reshapes, a model that is not a Sequential) is run by
    ``vmap`` over ``functional_call`` (torch's batching rule makes a convolution a grouped one).
    """
    if isinstance(module, nn.Sequential):
        layers = [
            stacked_forward(child, params, buffers, f"{prefix}{name}.")
            for name, child in module.named_children()
        ]

        def sequential(x: Tensor) -> Tensor:
            for layer in layers:
                x = layer(x)
            return x

        return sequential
    own_params = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
    own_buffers = {k[len(prefix) :]: v for k, v in buffers.items() if k.startswith(prefix)}
    if isinstance(module, nn.Linear):
        weight, bias = own_params["weight"], own_params.get("bias")

        def linear(x: Tensor) -> Tensor:
            # y_i^T = W_i x_i^T + b_i, computed in that (N, out, M) layout and returned as its
            # (N, M, out) view: W's gradient is then laid out as W (no copy when it is
            # accumulated), and the next Linear's x^T is this buffer itself
            flat = x if x.dim() == 3 else x.reshape(x.shape[0], -1, x.shape[-1])
            xt = flat.transpose(1, 2)
            if bias is None:
                yt = torch.bmm(weight, xt)
            else:
                yt = torch.baddbmm(bias.unsqueeze(2), weight, xt)
            y = yt.transpose(1, 2)
            return y if x.dim() == 3 else y.reshape(*x.shape[:-1], yt.shape[1])

        return linear
    if isinstance(module, ELEMENTWISE) and not own_params and not own_buffers:
        return module
    per_member = vmap(lambda p, b, x: functional_call(module, (p, b), (x,)))
    return lambda x: per_member(own_params, own_buffers, x)


class MinibatchOrder:
    """Every member's minibatch indices, drawn as ``ClassificationProblem`` draws them: each
    epoch a ``randperm`` from the member's own generator, consecutive slices of ``batch_size``,
    the incomplete last one dropped. Members share the data size and batch size, so their epochs
    turn over at the same steps and ``next()`` is one slice of an (N, n) permutation table."""

    def __init__(self, gens: list, n: int, batch_size: int, device: torch.device) -> None:
        self.gens, self.n, self.batch_size, self.device = gens, n, batch_size, device
        self.perm = torch.empty(len(gens), 0, dtype=torch.int64, device=device)
        self.pos = 0

    def next(self) -> Tensor:
        b = self.batch_size
        if self.pos + b > self.perm.shape[1]:
            perm = torch.stack([torch.randperm(self.n, generator=g) for g in self.gens])
            self.perm = perm.to(self.device, non_blocking=True)
            self.pos = 0
        idx = self.perm[:, self.pos : self.pos + b]
        self.pos += b
        return idx


# ---------------------------------------------------------------------------- jobs for the runner

#: --max-batch's default: members per batch by task kind (see docs/vectorized.md). A classifier
#: is compute-bound on a CPU, so batches of 8 lose little per run against 16 and give --jobs 2
#: two batches where a sweep cell has 16 runs; the surfaces are pure per-step overhead.
DEFAULT_MAX_BATCH = {"surface": 256, "classification": 8}


@dataclass(frozen=True)
class Batch:
    """An executor job of several runs trained together by ``train_batch``."""

    configs: tuple[RunConfig, ...]


def batchable(config: RunConfig) -> bool:
    """Whether ``config`` can join a batch: a built-in optimizer (they take per-run lrs) on a
    task made by ``surface_task`` or ``classification_task`` (not a user ``build``)."""
    import optimizers

    if config.optim not in optimizers.available():
        return False
    try:
        task = T.get(config.task)
    except Exception:
        return False
    return task.builder is None and (task.is_surface or task.model is not None)


def make_jobs(
    configs: Sequence[RunConfig], vectorize: str = "auto", max_batch: int | None = None
) -> list[RunConfig | Batch]:
    """The executor jobs of ``configs``: with ``vectorize="auto"``, batchable configs with equal
    ``batch_key`` grouped in their order into the fewest batches of at most ``max_batch``
    (default: by task kind, DEFAULT_MAX_BATCH), of sizes as equal as possible (12 runs with 8 at
    most: 6 and 6, so parallel workers finish together); a group of one, and everything else,
    as single runs. The grouping depends only on the configs and max_batch, so a sweep's
    batches (hence its numbers) are the same whatever the executor or --jobs."""
    if vectorize == "off":
        return list(configs)
    groups: dict[str, list[RunConfig]] = {}
    jobs: list[RunConfig | Batch | str] = []
    for c in configs:
        if not batchable(c):
            jobs.append(c)
            continue
        key = batch_key(c)
        if key not in groups:
            groups[key] = []
            jobs.append(key)  # the group's place: where its first member was
        groups[key].append(c)
    out: list[RunConfig | Batch] = []
    for job in jobs:
        if not isinstance(job, str):
            out.append(job)
            continue
        members = groups[job]
        kind = "surface" if T.get(members[0].task).is_surface else "classification"
        size = max_batch or DEFAULT_MAX_BATCH[kind]
        count = -(-len(members) // size)  # ceil
        for k in range(count):
            chunk = members[k * len(members) // count : (k + 1) * len(members) // count]
            out.append(Batch(tuple(chunk)) if len(chunk) > 1 else chunk[0])
    return out
