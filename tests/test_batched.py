"""bench.batched.train_batch against separate train_one_run calls, member by member, with the
registry's optimizers (different lrs and schedules in one batch through their per-run lr)."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

from bench import batched as B
from bench import data as D
from bench import tasks as T
from bench.train import RunConfig, make_optimizer, train_one_run

# ---------------------------------------------------------------------------- recording factory


class Recorder:
    """The registry's optimizer factory, keeping the optimizer and the lr of every step."""

    def __init__(self):
        self.opt = None
        self.lrs_seen: list = []

    def __call__(self, name, params, lr, opt_args):
        self.opt = B.registry_optimizer(name, params, lr, opt_args)
        step = self.opt.step

        def recording_step():
            self.lrs_seen.append(self.opt.param_groups[0]["lr"])
            step()

        self.opt.step = recording_step
        return self.opt


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    D.prepare_mnist1d(path)
    return str(path)


def config(**kw) -> RunConfig:
    base = dict(
        task="rosenbrock", optim="sgd", sched="constant", seed=0, steps=500, batch_size=None
    )
    base.update(kw)
    base.setdefault("lr", T.TASKS[base["task"]].default_lr(base["optim"]))
    base.setdefault("eval_every", base["steps"])
    return RunConfig(**base)


def worst_relative(a: dict, b: dict, keys=None) -> float:
    """The largest |a - b| / |a| over the logged values of two records' curves (timings aside);
    fails unless both log the same rows and leave the same values empty."""
    worst = 0.0
    for key in keys or [k for k in a["curves"] if k != "elapsed_s"]:
        va, vb = a["curves"][key], b["curves"][key]
        assert len(va) == len(vb), (key, len(va), len(vb))
        for x, y in zip(va, vb, strict=True):
            assert (x is None) == (y is None), key
            if x is not None and x != y:
                worst = max(worst, abs(x - y) / abs(x) if x else math.inf)
    return worst


def assert_equal_to_separate(configs, batch, rel, keys=None, fallback=False) -> list[dict]:
    """Each batched record against train_one_run's: the same fields and, within rel, curves."""
    separate = [train_one_run(c) for c in configs]
    for i, (s, b) in enumerate(zip(separate, batch, strict=True)):
        assert s["status"] == b["status"], (i, s["error"], b["error"])
        info = {k: v for k, v in b["batch"].items() if not (fallback and k == "fallback")}
        assert set(b) == set(s) | {"batch"} and info == {"size": len(configs), "index": i}
        for k in ("run_id", "config", "diverged_at_step", "divergence", "error", "device"):
            assert b[k] == s[k], k
        assert s["summary"]["steps_done"] == b["summary"]["steps_done"]
        assert worst_relative(s, b, keys) <= rel, (configs[i], worst_relative(s, b, keys))
        json.dumps(b, allow_nan=False)
    return separate


def curves_without_timing(record):
    return {k: v for k, v in record["curves"].items() if k != "elapsed_s"}


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("task", "beale"),
        ("optim", "adam"),
        ("opt_args", {"weight_decay": 0.1}),
        ("steps", 10),
        ("batch_size", 7),
        ("device", "meta"),
        ("threads", 2),
        ("eval_every", 3),
        ("data_dir", "/elsewhere"),
    ],
)
def test_members_must_share_everything_but_seed_lr_and_schedule(field, value):
    a = config(steps=20)
    b = dataclasses.replace(a, seed=1, **{field: value})
    with pytest.raises(ValueError, match=f"must share {field}: configs\\[1\\]"):
        B.train_batch([a, b])
    assert B.batch_key(a) != B.batch_key(b)


def test_batch_key_and_check_accept_different_seeds_lrs_and_schedules():
    a = config(steps=20)
    others = [
        dataclasses.replace(a, seed=3),
        dataclasses.replace(a, lr=0.5),
        dataclasses.replace(a, sched="exponential", sched_args={"decay_rate": 0.5}),
        dataclasses.replace(a, warmup=5),
    ]
    B.check_batch([a, *others])
    assert {B.batch_key(c) for c in [a, *others]} == {B.batch_key(a)}


@pytest.mark.parametrize(
    "configs, message",
    [
        ([], "at least one RunConfig"),
        (["rosenbrock"], r"configs\[0\] must be a RunConfig, got str"),
        ([config(), config()], r"configs\[1\] is the same run as configs\[0\]"),
    ],
)
def test_bad_batches_are_refused(configs, message):
    with pytest.raises(ValueError, match=message):
        B.train_batch(configs)


# ---------------------------------------------------------------------------- schedules


def test_member_schedules_give_each_member_its_separate_runs_lrs():
    steps = 40
    configs = [
        config(steps=steps, lr=0.1),
        config(steps=steps, lr=0.1, seed=1),
        config(steps=steps, lr=0.3),
        config(steps=steps, lr=0.1, sched="piecewise"),  # lr-dependent values
        config(steps=steps, lr=0.2, sched="piecewise"),
        config(steps=steps, lr=0.2, sched="polynomial100", warmup=5),  # lr-dependent end
        config(steps=steps, lr=0.2, sched="exponential", sched_args={"decay_rate": 0.5}),
        config(steps=steps, lr=0.2, sched="cosine_restarts", warmup=3),
    ]
    schedules = B.MemberSchedules(configs)
    assert schedules.distinct == 7  # the first two share a schedule
    separate = []
    for c in configs:
        opt, sched = make_optimizer(c, [torch.zeros(2, requires_grad=True)])
        separate.append((opt, sched))
    for _ in range(steps):
        assert schedules.lrs() == [float(opt.param_groups[0]["lr"]) for opt, _ in separate]
        schedules.step()
        for opt, sched in separate:
            opt.step()
            sched.step()


# ---------------------------------------------------------------------------- equality: surfaces

SURFACES = [s for s in T.TASKS if T.TASKS[s].is_surface]
SURFACE_OF = {o: SURFACES[k % len(SURFACES)] for k, o in enumerate(T.OPTIMIZER_NAMES)}
SCHED_OF = {
    o: ("constant", "exponential", "piecewise")[k % 3] for k, o in enumerate(T.OPTIMIZER_NAMES)
}


@pytest.mark.parametrize("optim", T.OPTIMIZER_NAMES)
def test_surface_batch_equals_separate_runs(optim):
    """Registry optimizer, shared lr and schedule; each optimizer on another surface and
    schedule, every other one with warm-up."""
    warmup = 10 * (T.OPTIMIZER_NAMES.index(optim) % 2)
    configs = [
        config(task=SURFACE_OF[optim], optim=optim, sched=SCHED_OF[optim], seed=s, warmup=warmup)
        for s in range(3)
    ]
    assert_equal_to_separate(configs, B.train_batch(configs, fallback=False), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("optim", T.OPTIMIZER_NAMES)
@pytest.mark.parametrize("task", SURFACES)
def test_every_surface_and_optimizer_equals_separate_runs(task, optim):
    configs = [config(task=task, optim=optim, sched="cosine", seed=s) for s in range(2)]
    assert_equal_to_separate(configs, B.train_batch(configs, fallback=False), rel=1e-12)


@pytest.mark.parametrize("optim", T.OPTIMIZER_NAMES)
@pytest.mark.parametrize("task", ["rosenbrock", "rastrigin"])
def test_per_member_lrs_and_schedules_on_surfaces(task, optim):
    """Four lrs and four schedules in one batch, through a tensor lr: every member's curves
    (lr included) equal its separate run's."""
    base = T.TASKS[task].default_lr(optim)
    configs = [
        config(task=task, optim=optim, lr=base),
        config(task=task, optim=optim, lr=base / 3, sched="exponential", warmup=20),
        config(task=task, optim=optim, lr=base * 2, sched="piecewise"),
        config(task=task, optim=optim, lr=base / 2, sched="cosine", seed=4),
    ]
    recorder = Recorder()
    batch = B.train_batch(configs, make_optimizer=recorder, fallback=False)
    separate = assert_equal_to_separate(configs, batch, rel=1e-12)
    assert all(isinstance(lr, torch.Tensor) and lr.shape == (4,) for lr in recorder.lrs_seen)
    assert len(recorder.lrs_seen) == 500
    for i, s in enumerate(separate):  # update j used member i's lr: row j's lr in its record
        assert [float(lr[i]) for lr in recorder.lrs_seen] == s["curves"]["lr"][1:]
    assert len({tuple(r["curves"]["lr"]) for r in batch}) == 4


# ---------------------------------------------------------------------------- equality: networks


@dataclasses.dataclass(frozen=True)
class Float64Task(T.Task):
    """mnist1d_mlp in float64: the same init (drawn in float32, then widened) and data."""

    def build(self, seed, device, data_dir, batch_size=None):
        data = D.load_mnist1d(str(data_dir))
        model = T.mnist1d_mlp().double()
        size = batch_size or self.batch_size
        return T.ClassificationProblem(model, data, size, seed, device, lambda x: x.double())


@pytest.fixture
def mlp64(monkeypatch):
    fields = {f.name: getattr(T.TASKS["mnist1d_mlp"], f.name) for f in dataclasses.fields(T.Task)}
    monkeypatch.setitem(T.TASKS, "mnist1d_mlp64", Float64Task(**{**fields, "name": "mlp64"}))
    return "mnist1d_mlp64"


def test_float64_mlp_batch_equals_separate_runs(mlp64, data_dir):
    configs = [
        config(task=mlp64, optim="adam", lr=1e-2, seed=s, steps=500, batch_size=100,
               eval_every=100, data_dir=data_dir)
        for s in range(3)
    ]  # fmt: skip
    separate = assert_equal_to_separate(configs, B.train_batch(configs, fallback=False), rel=1e-8)
    assert len({r["curves"]["train_loss"][-1] for r in separate}) == 3  # seeds do differ


@pytest.mark.parametrize(
    "optim, lr", [("sgd", 0.3), ("adam", 1e-2), ("momentum", 0.05), ("rprop", 1e-3)]
)
def test_float64_mlp_per_member_lrs_and_schedules(mlp64, data_dir, optim, lr):
    steps = 500
    common = dict(task=mlp64, optim=optim, steps=steps, batch_size=100, eval_every=50,
                  data_dir=data_dir)  # fmt: skip
    configs = [
        config(**common, lr=lr, seed=0),
        config(**common, lr=lr / 3, seed=1, sched="cosine"),
        config(**common, lr=lr * 2, seed=0, sched="staircase", warmup=10),
    ]
    recorder = Recorder()
    batch = B.train_batch(configs, make_optimizer=recorder, fallback=False)
    assert_equal_to_separate(configs, batch, rel=1e-8)
    assert all(isinstance(lr, torch.Tensor) and lr.shape == (3,) for lr in recorder.lrs_seen)


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_float32_mnist1d_mlp_first_100_losses(data_dir, optim):
    configs = [
        config(task="mnist1d_mlp", optim=optim, seed=s, steps=100, batch_size=100, eval_every=50,
               data_dir=data_dir)
        for s in range(4)
    ]  # fmt: skip
    batch = B.train_batch(configs, fallback=False)
    assert_equal_to_separate(configs, batch, rel=1e-5, keys=["step", "lr", "train_loss"])
    assert_equal_to_separate(configs, batch, rel=1e-4, keys=["test_loss", "test_acc"])


def test_float32_per_member_lrs_add_no_rounding(data_dir):
    """A member's curve is the same bits with the per-run lr (members' lrs differ) as in a batch
    where every member has its lr (a float lr). (Against the separate run, float32 batched
    matrix products may drift further at some lrs: the rounding of bmm, not of the lr.)"""
    common = dict(task="mnist1d_mlp", optim="adam", steps=60, batch_size=100, eval_every=30,
                  data_dir=data_dir)  # fmt: skip
    mixed = [config(**common, seed=0, lr=1e-2), config(**common, seed=1, lr=5e-3)]
    shared = [config(**common, seed=0, lr=5e-3), config(**common, seed=1, lr=5e-3)]
    a = B.train_batch(mixed, fallback=False)
    b = B.train_batch(shared, fallback=False)
    assert curves_without_timing(a[1]) == curves_without_timing(b[1])
    assert a[0]["curves"]["lr"] != a[1]["curves"]["lr"]


@pytest.mark.slow
def test_float32_mnist1d_mlp_full_length_within_the_seed_spread(data_dir):
    """Full-length float32 runs part ways after a few hundred steps (rounding is amplified: two
    threads instead of one move a seed's final test accuracy by a few points too), so one run's
    final accuracy is not compared; over 8 seeds, the batched runs' mean final test accuracy is
    within half the separate runs' seed-to-seed spread of theirs."""
    configs = [
        config(task="mnist1d_mlp", optim="adam", seed=s, steps=4000, batch_size=100,
               eval_every=200, data_dir=data_dir)
        for s in range(8)
    ]  # fmt: skip
    batch = B.train_batch(configs, fallback=False)
    separate = assert_equal_to_separate(configs, batch, rel=math.inf)  # rows and statuses
    accs = [r["summary"]["final_test_acc"] for r in separate]
    batched_accs = [r["summary"]["final_test_acc"] for r in batch]
    mean = sum(accs) / len(accs)
    batched_mean = sum(batched_accs) / len(batched_accs)
    assert abs(batched_mean - mean) <= (max(accs) - min(accs)) / 2, (accs, batched_accs)
    largest = max(abs(a - b) for a, b in zip(accs, batched_accs, strict=True))
    print(f"final test accuracy: separate {accs}, batched {batched_accs}, largest difference "
          f"{largest:.3f}")  # fmt: skip


def test_float32_mnist1d_cnn_first_losses(data_dir):
    """Convolutions, Unflatten and Flatten go through vmap (grouped convolutions). Grouped and
    separate convolutions round differently, and Adam amplifies that where its second moment
    is small (one seed reaches 5e-5 by step 40 on some CPUs), so 20 steps are compared."""
    configs = [
        config(task="mnist1d_cnn", optim="adam", seed=s, steps=20, batch_size=100, eval_every=20,
               data_dir=data_dir)
        for s in range(3)
    ]  # fmt: skip
    batch = B.train_batch(configs, fallback=False)
    assert_equal_to_separate(configs, batch, rel=1e-5, keys=["step", "lr", "train_loss"])


def test_the_same_batch_gives_the_same_bits(data_dir):
    configs = [
        config(task="mnist1d_cnn", optim="adam", seed=s, steps=20, batch_size=100, eval_every=10,
               data_dir=data_dir)
        for s in range(3)
    ]  # fmt: skip
    first, again = B.train_batch(configs, fallback=False), B.train_batch(configs, fallback=False)
    assert [curves_without_timing(r) for r in first] == [curves_without_timing(r) for r in again]


class Residual(torch.nn.Module):
    """Not a Sequential, with a Linear and an elementwise layer inside: run by vmap whole."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Tanh())
        self.register_buffer("shift", torch.randn(5))

    def forward(self, x):
        return x + self.inner(x) - self.shift


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)),
        lambda: torch.nn.Sequential(torch.nn.Linear(5, 7, bias=False), torch.nn.GELU()),
        lambda: torch.nn.Sequential(
            Residual(), torch.nn.Flatten(0), torch.nn.Unflatten(0, (-1, 2))
        ),
        Residual,
    ],
)
def test_stacked_forward_is_each_members_forward(make):
    torch.manual_seed(0)
    models = [make().double() for _ in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    forward = B.stacked_forward(models[0], params, buffers)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    expected = torch.stack([m(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(forward(x), expected, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------- divergence


def test_diverged_member_stops_alone_and_is_frozen():
    """Member 2's lr is far too large: its record ends at its divergence row as the separate run's
    does, its parameters stay where that row logged them, and the other members' curves are the
    same bits as in the batch without it and in the batch with a sane member in its place."""
    lrs = [1e-3, 5e-4, 1.0, 2e-3]
    configs = [config(lr=lr, steps=300) for lr in lrs]
    recorder = Recorder()
    batch = B.train_batch(configs, make_optimizer=recorder, fallback=False)
    assert [r["status"] for r in batch] == ["ok", "ok", "diverged", "ok"]
    assert_equal_to_separate(configs, batch, rel=1e-12)
    k = batch[2]["diverged_at_step"]
    assert 0 < k < 300 and batch[2]["curves"]["step"][-1] == k
    frozen = recorder.opt.param_groups[0]["params"][0][2].tolist()
    assert frozen == [batch[2]["curves"]["x"][-1], batch[2]["curves"]["y"][-1]]

    without = B.train_batch(configs[:2] + configs[3:], make_optimizer=Recorder(), fallback=False)
    sane = [*configs[:2], config(lr=1.5e-3, steps=300), configs[3]]
    replaced = B.train_batch(sane, make_optimizer=Recorder(), fallback=False)
    for i, j in ((0, 0), (1, 1), (3, 2)):
        assert curves_without_timing(batch[i]) == curves_without_timing(without[j])
        assert curves_without_timing(batch[i]) == curves_without_timing(replaced[i])


def test_diverged_network_member_leaves_the_others_bitwise_unchanged(data_dir):
    common = dict(task="mnist1d_mlp", optim="sgd", steps=60, batch_size=100, eval_every=20,
                  data_dir=data_dir)  # fmt: skip
    configs = [config(**common, seed=s, lr=lr) for s, lr in ((0, 0.3), (1, 1e4), (2, 0.1))]
    batch = B.train_batch(configs, make_optimizer=Recorder(), fallback=False)
    assert [r["status"] for r in batch] == ["ok", "diverged", "ok"]
    sane = [configs[0], config(**common, seed=1, lr=0.2), configs[2]]
    replaced = B.train_batch(sane, make_optimizer=Recorder(), fallback=False)
    for i in (0, 2):
        assert curves_without_timing(batch[i]) == curves_without_timing(replaced[i])
    separate = train_one_run(configs[1])
    assert separate["status"] == "diverged"
    assert separate["diverged_at_step"] == batch[1]["diverged_at_step"]


def test_a_nan_member_does_not_reach_the_others_gradients(data_dir):
    configs = [
        config(task="mnist1d_mlp", seed=s, steps=10, batch_size=100, data_dir=data_dir)
        for s in range(3)
    ]

    def gradients(poison: bool) -> list[torch.Tensor]:
        stacked = B.stack_problems(T.TASKS["mnist1d_mlp"], configs, torch.device("cpu"))
        if poison:
            with torch.no_grad():
                stacked.params[0][1].fill_(math.nan)
        losses = stacked.train_losses()
        assert losses.isnan().tolist() == [False, poison, False]
        losses.sum().backward()
        return [p.grad for p in stacked.params]

    for clean, poisoned in zip(gradients(False), gradients(True), strict=True):
        assert poisoned[1].isnan().any()
        assert torch.equal(clean[[0, 2]], poisoned[[0, 2]])


# ---------------------------------------------------------------------------- failures, records


def test_a_failing_batch_falls_back_to_separate_runs():
    configs = [config(steps=30, seed=s) for s in range(2)]
    configs.append(config(steps=30, sched="exponential", sched_args={"decay_rate": -1.0}))

    batch = B.train_batch(configs)
    separate = [train_one_run(c) for c in configs]
    assert [r["status"] for r in batch] == ["ok", "ok", "failed"]
    for i, (b, s) in enumerate(zip(batch, separate, strict=True)):
        assert b["batch"]["index"] == i and "decay_rate" in b["batch"]["fallback"]
        assert b["error"] == s["error"]
        assert curves_without_timing(b) == curves_without_timing(s)
    with pytest.raises(ValueError, match="decay_rate"):
        B.train_batch(configs, fallback=False)


def test_an_optimizer_from_outside_is_not_batched():
    """It may couple elements (a norm over a tensor would mix the members)."""
    configs = [config(optim="torch.optim.SGD", lr=1e-3, steps=20, seed=s) for s in range(2)]
    assert not B.batchable(configs[0]) and B.batchable(config())
    batch = B.train_batch(configs)
    assert all("not built in" in r["batch"]["fallback"] for r in batch)
    assert_equal_to_separate(configs, batch, rel=0.0, fallback=True)


def test_a_surface_that_is_not_elementwise_is_not_batched(monkeypatch):
    """Written for 0-d x and y, (x * y).sum() is x * y; on the stacked columns it mixes members.
    The runner groups it (a surface_task), the batch finds out and runs them separately."""
    task = T.surface_task("coupled", fn=lambda x, y: x**2 + y**2 + (x * y).sum(),
                          start=(1.0, 2.0), steps=20, lr=0.01)  # fmt: skip
    monkeypatch.setitem(T.TASKS, "coupled", task)
    configs = [config(task="coupled", steps=20, seed=s) for s in range(2)]
    assert B.make_jobs(configs) == [B.Batch(tuple(configs))]
    batch = B.train_batch(configs)
    assert all("not elementwise" in r["batch"]["fallback"] for r in batch)
    assert_equal_to_separate(configs, batch, rel=0.0, fallback=True)


def test_memory_does_not_grow_with_the_steps():
    """Two members that diverge early in a very long run: the loop keeps nothing per step."""
    import tracemalloc

    configs = [config(lr=lr, steps=2_000_000) for lr in (1.0, 2.0)]
    tracemalloc.start()
    try:
        batch = B.train_batch(configs, fallback=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r["status"] for r in batch] == ["diverged", "diverged"]
    assert peak < 4_000_000, peak


def test_registry_optimizers_with_different_lrs_run_batched():
    """No fallback: the registry's optimizers take the members' lrs as one per-run lr."""
    configs = [config(optim="adam", lr=lr, steps=100) for lr in (0.1, 0.03)]
    batch = B.train_batch(configs)
    assert all("fallback" not in r["batch"] for r in batch)
    assert_equal_to_separate(configs, batch, rel=1e-12)


def test_timings_are_the_batchs_divided_among_members():
    configs = [config(steps=200, seed=s) for s in range(4)]
    t = time.perf_counter()
    batch = B.train_batch(configs, fallback=False)
    wall = time.perf_counter() - t
    assert 0 < sum(r["summary"]["wall_s"] for r in batch) <= wall
    assert len({r["summary"]["wall_s"] for r in batch}) == 1
    assert len({tuple(r["curves"]["elapsed_s"]) for r in batch}) == 1
    assert batch[0]["summary"]["train_s"] <= batch[0]["summary"]["wall_s"]


def test_progress_is_called_at_every_row():
    seen = []
    B.train_batch(
        [config(steps=30, seed=s) for s in range(2)],
        fallback=False,
        progress=lambda step, steps: seen.append((step, steps)),
    )
    assert seen == [(j, 30) for j in range(1, 31)]


def test_batch_on_device_equals_separate_runs(device, data_dir):
    configs = [
        config(task="mnist1d_mlp", optim="adam", seed=s, steps=50, batch_size=100, eval_every=25,
               data_dir=data_dir, device=str(device))
        for s in range(3)
    ]  # fmt: skip
    batch = B.train_batch(configs, fallback=False)
    assert_equal_to_separate(configs, batch, rel=1e-5, keys=["step", "lr", "train_loss"])
    surfaces = [config(optim="adam", seed=s, device=str(device)) for s in range(2)]
    assert_equal_to_separate(surfaces, B.train_batch(surfaces, fallback=False), rel=1e-12)
