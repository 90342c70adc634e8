"""train_one_run (config -> record), the tasks and the store, without the command line."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import pandas as pd
import pytest
import torch

from bench import store as S
from bench import tasks as T
from bench.train import RunConfig, _jsonable, row_steps, train_one_run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def config(**kw) -> RunConfig:
    base = dict(
        task="long_valley",
        optim="sgd",
        sched="constant",
        seed=0,
        steps=20,
        batch_size=None,
        lr=0.05,
    )
    base.update(kw)
    base.setdefault("eval_every", base["steps"])
    return RunConfig(**base)


def test_row_steps_cap_and_include_evals_and_last():
    rows, evals = row_steps(20, 7)
    assert rows == list(range(21)) and evals == {0, 7, 14, 20}
    rows, evals = row_steps(4000, 200)
    assert len(rows) == 501 and rows[:3] == [0, 8, 16] and rows[-1] == 4000 and evals <= set(rows)
    rows, _ = row_steps(1001, 1001)
    assert rows[-1] == 1001 and len(rows) <= 502


def test_run_id_is_stable_and_covers_what_changes_the_numbers():
    a = config()
    assert a.run_id == config().run_id and len(a.run_id) == 12
    assert a.run_id == config(data_dir="/elsewhere").run_id  # where data lives is not identity
    for change in (dict(seed=1), dict(lr=0.051), dict(opt_args={"momentum": 0.5}), dict(threads=2)):
        assert config(**change).run_id != a.run_id, change
    assert pickle.loads(pickle.dumps(a)) == a  # can travel to a worker process


def _jsonable_reference(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable_reference(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable_reference(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


@pytest.mark.parametrize(
    "value",
    [[1.0, 2.5], (1, 2), [True, 3], [1.0, math.nan], [1e308, 1e308], [math.inf, -math.inf],
     [None, 1.0], [[1.0, math.inf]], ["a", 1.0], [{"a": math.nan}], [], {1: (math.nan, 2.0)},
     [torch.tensor(1.0), torch.tensor(2.0)], [torch.ones(2), torch.ones(2)]],
)  # fmt: skip
def test_jsonable_fast_path_equals_the_element_by_element_rule(value):
    got, want = _jsonable(value), _jsonable_reference(value)
    assert type(got) is type(want) and repr(got) == repr(want)
    assert got is not value  # a new list, never the caller's


def test_run_id_is_cached_per_instance_and_follows_replace():
    c = RunConfig(task="rosenbrock", optim="sgd", sched="constant", seed=0, steps=5,
                  batch_size=None, lr=0.1)  # fmt: skip
    assert c.run_id is c.run_id
    d = dataclasses.replace(c, lr=0.2)
    assert d.run_id != c.run_id and pickle.loads(pickle.dumps(d)).run_id == d.run_id


def test_long_valley_sgd_matches_closed_form():
    """f = 0.05 x^2 + 5 y^2, gradient descent: x_k = x_0 (1 - 0.1 lr)^k, y_k = y_0 (1 - 10 lr)^k."""
    lr, steps = 0.05, 20
    record = train_one_run(config(lr=lr, steps=steps))
    assert record["status"] == "ok", record["error"]
    c = record["curves"]
    assert c["step"] == list(range(steps + 1))
    for k in (0, 1, 5, steps):
        assert c["x"][k] == pytest.approx(-4.0 * (1 - 0.1 * lr) ** k, rel=1e-12)
        assert c["y"][k] == pytest.approx(1.0 * (1 - 10 * lr) ** k, rel=1e-12, abs=1e-300)
    # train_loss at row k>0 is the loss measured by update k, i.e. at theta_{k-1}; row 0 at theta_0
    f = lambda x, y: 0.05 * x**2 + 5 * y**2  # noqa: E731
    assert c["train_loss"][0] == pytest.approx(f(c["x"][0], c["y"][0]))
    assert c["train_loss"][3] == pytest.approx(f(c["x"][2], c["y"][2]))
    assert c["lr"] == [lr] * (steps + 1)
    assert all(v is None for v in c["test_loss"] + c["test_acc"])  # surfaces have no test split
    json.dumps(record, allow_nan=False)  # strict JSON


def test_divergence_stops_the_run_at_the_bound():
    record = train_one_run(config(task="rosenbrock", lr=1.0, steps=200))
    assert record["status"] == "diverged"
    k = record["diverged_at_step"]
    assert 0 < k < 200 and record["curves"]["step"][-1] == k
    assert "bound" in record["divergence"]
    last = record["curves"]["train_loss"][-1]
    assert last is None or last > T.TASKS["rosenbrock"].diverge_above


def test_failed_run_records_the_message(data_dir):
    record = train_one_run(
        config(task="mnist1d_logreg", batch_size=10**6, steps=5, data_dir=data_dir)
    )
    assert record["status"] == "failed"
    assert "batch size 1000000 exceeds" in record["error"]
    json.dumps(record, allow_nan=False)


def test_mnist1d_run_is_deterministic_and_learns(data_dir):
    cfg = config(
        task="mnist1d_mlp",
        optim="adam",
        lr=1e-2,
        steps=200,
        batch_size=100,
        eval_every=100,
        data_dir=data_dir,
    )
    a, b = train_one_run(cfg), train_one_run(cfg)
    assert a["curves"]["train_loss"] == b["curves"]["train_loss"]
    assert a["curves"]["test_acc"] == b["curves"]["test_acc"]
    acc = a["curves"]["test_acc"]
    assert acc[0] < 0.2 and acc[-1] > 0.4  # chance is 0.1
    assert a["threads"] == 1 and a["summary"]["steps_done"] == 200
    other_seed = train_one_run(dataclasses.replace(cfg, seed=1))
    assert other_seed["curves"]["train_loss"] != a["curves"]["train_loss"]


def test_threads_are_restored():
    before = torch.get_num_threads()
    train_one_run(config(threads=1))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", [n for n, t in T.TASKS.items() if t.is_surface])
def test_surfaces_minimum_and_start(name):
    task = T.TASKS[name]
    f = task.surface
    xm, ym = (torch.tensor(v, dtype=torch.float64) for v in task.minimum)
    x0, y0 = (torch.tensor(v, dtype=torch.float64) for v in task.start)
    assert float(f(x0, y0)) > float(f(xm, ym)) + 0.5
    xm.requires_grad_(True)
    ym.requires_grad_(True)
    gx, gy = torch.autograd.grad(f(xm, ym), (xm, ym))
    assert abs(float(gx)) < 1e-9 and abs(float(gy)) < 1e-9  # a stationary point


def test_store_writes_atomically_and_rebuilds_tables(tmp_path):
    records = [train_one_run(config(seed=s)) for s in (1, 0)]
    with S.Store(tmp_path) as store:
        for r in records:
            store.add(r)
    summary = pd.read_csv(tmp_path / "summary.csv")
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert list(summary.columns) == S.SUMMARY_COLUMNS and list(curves.columns) == S.CURVE_COLUMNS
    assert summary["seed"].tolist() == [0, 1]  # sorted, whatever the finishing order
    assert len(curves) == 2 * 21
    assert not list(tmp_path.rglob("*.tmp"))
    # a crash after a record was written but before the tables: the next open rebuilds them
    (tmp_path / "summary.csv").unlink()
    with S.Store(tmp_path):
        pass
    assert pd.read_csv(tmp_path / "summary.csv")["run_id"].tolist() == summary["run_id"].tolist()


def test_curves_csv_holds_every_records_curves_value_for_value(tmp_path, data_dir):
    records = [
        train_one_run(config(task="mnist1d_logreg", optim="adam", lr=0.01, steps=30,
                             eval_every=10, data_dir=data_dir)),  # test metrics on some rows
        train_one_run(config(task="rosenbrock", seed=1)),  # x and y, no test metrics
        train_one_run(config(task="rosenbrock", lr=10.0, steps=50)),  # diverged: NaN, inf
        {**train_one_run(config(seed=2)), "status": "failed", "curves": {}},  # no rows
    ]  # fmt: skip
    with S.Store(tmp_path) as store:
        for r in records:
            store.add(r)
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert list(curves.columns) == S.CURVE_COLUMNS
    for r in records:
        rows = curves[curves["run_id"] == r["run_id"]]
        c = r["config"]
        assert len(rows) == len(r["curves"].get("step", []))
        for key in S.CURVE_COLUMNS[5:13]:
            want = [math.nan if v is None else v for v in r["curves"].get(key, [])]
            assert rows[key].tolist() == pytest.approx(want, rel=0, abs=0, nan_ok=True), key
        for key, value in [("task", c["task"]), ("optim", c["optim"]), ("sched", c["sched"]),
                           ("seed", c["seed"]), ("lr0", c["lr"])]:  # fmt: skip
            assert (rows[key] == value).all(), key
    assert curves["step"].dtype == "int64"
    assert len(curves) == sum(len(r["curves"].get("step", [])) for r in records) > 30


def test_store_lock_refuses_a_second_writer(tmp_path):
    with S.Store(tmp_path), pytest.raises(S.StoreError, match="in use"):
        S.Store(tmp_path).open()


def test_nonfinite_values_become_empty_cells(tmp_path):
    record = train_one_run(config(task="rosenbrock", lr=10.0, steps=50))
    assert record["status"] == "diverged"
    with S.Store(tmp_path) as store:
        store.add(record)
    curves = pd.read_csv(tmp_path / "curves.csv")
    last = curves["train_loss"].iloc[-1]
    assert math.isnan(last) or last > T.TASKS["rosenbrock"].diverge_above
