"""The torchvision tasks on tiny files in the real on-disk formats, read through torchvision's
own MNIST / FashionMNIST / CIFAR10 classes (nothing is mocked in bench's loading code).

(F)MNIST: big-endian idx-ubyte files under <root>/<Class>/raw/. CIFAR-10: python pickle batches
and batches.meta under <root>/cifar-10-batches-py/. torchvision checks CIFAR files against the real
data set's MD5 sums (class attributes train_list / test_list / meta); the test points those
attributes at the fixture files' own MD5 sums, so torchvision's integrity check still runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from bench import data as D
from bench import tasks as T
from bench.run import main

N_TRAIN, N_TEST = 48, 24


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: magic (0, 0, type 0x08 = uint8, ndim), big-endian int32 sizes, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, cls: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = root / cls / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        arrays[prefix] = (x, y)
    return arrays


def write_cifar10(root: Path, seed: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {}
    per_batch = N_TRAIN // 5
    arrays = {"train": [], "test": []}
    for name, n, split in [(f"data_batch_{i}", per_batch, "train") for i in range(1, 6)] + [
        ("test_batch", N_TEST, "test")
    ]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).tolist()
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "data": x, "labels": y}))
        arrays[split].append((x, y))
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    for p in folder.iterdir():
        files[p.name] = hashlib.md5(p.read_bytes()).hexdigest()
    return arrays, files


@pytest.fixture()
def cifar_md5(monkeypatch):
    """Point torchvision's expected CIFAR-10 checksums at the fixture files written by the test."""

    def apply(md5: dict[str, str]) -> None:
        monkeypatch.setattr(
            tvd.CIFAR10,
            "train_list",
            [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)],
        )
        monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
        monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5["batches.meta"]})

    yield apply
    D.load_torchvision.cache_clear()


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_mnist_files_load_through_torchvision(tmp_path, name):
    arrays = write_mnist_like(tmp_path, name, seed=1)
    D.load_torchvision.cache_clear()
    d = D.load_torchvision(name, str(tmp_path))
    assert d.x_train.shape == (N_TRAIN, 1, 28, 28) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (N_TEST, 1, 28, 28)
    np.testing.assert_array_equal(d.x_train[:, 0].numpy(), arrays["train"][0])
    np.testing.assert_array_equal(d.y_test.numpy(), arrays["t10k"][1])
    x = D.normalise(name, d.x_train[:4])
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    D.load_torchvision.cache_clear()


def test_cifar10_files_load_through_torchvision(tmp_path, cifar_md5):
    arrays, md5 = write_cifar10(tmp_path, seed=2)
    cifar_md5(md5)
    D.load_torchvision.cache_clear()
    d = D.load_torchvision("CIFAR10", str(tmp_path))
    assert d.x_train.shape == (N_TRAIN // 5 * 5, 3, 32, 32)
    expected = np.concatenate([x for x, _ in arrays["train"]]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(d.x_train.numpy(), expected)  # CHW order survives the round trip
    assert d.y_train.tolist() == [label for _, y in arrays["train"] for label in y]
    x = D.normalise("CIFAR10", d.x_test)
    assert abs(float(x.mean())) < 0.5  # normalised per channel (uniform noise: mean ~0.02)


def test_cifar10_corrupted_file_is_refused(tmp_path, cifar_md5):
    _, md5 = write_cifar10(tmp_path, seed=3)
    cifar_md5(md5)
    with (tmp_path / "cifar-10-batches-py" / "data_batch_2").open("ab") as f:
        f.write(b"x")  # torchvision's MD5 check must catch this
    with pytest.raises(D.DataMissingError, match="CIFAR10 not found or incomplete"):
        D.prepare_torchvision("CIFAR10", tmp_path)


@pytest.mark.parametrize(
    "task, cls",
    [("mnist_mlp", "MNIST"), ("fmnist_2c2d", "FashionMNIST"), ("cifar10_3c3d", "CIFAR10")],
)
def test_torchvision_task_runs_end_to_end(tmp_path, cifar_md5, capsys, task, cls):
    data_dir = tmp_path / "data"
    if cls == "CIFAR10":
        cifar_md5(write_cifar10(data_dir, seed=4)[1])
    else:
        write_mnist_like(data_dir, cls, seed=4)
    out = tmp_path / "store"
    argv = [
        "--task",
        task,
        "--optim",
        "sgd",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--eval-every",
        "3",
    ]
    code = main([*argv, "--data-dir", str(data_dir), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (record_path,) = (out / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok"
    assert record["curves"]["step"] == [0, 1, 2, 3, 4, 5, 6]
    accs = [a for a in record["curves"]["test_acc"] if a is not None]
    assert len(accs) == 3 and all(0 <= a <= 1 for a in accs)  # steps 0, 3, 6 on the test split


@pytest.mark.parametrize("task", ["mnist_mlp", "fmnist_2c2d", "cifar10_3c3d"])
def test_missing_data_is_one_line_exit_2(tmp_path, capsys, task):
    code = main(
        ["--task", task, "--out", str(tmp_path / "s"), "--data-dir", str(tmp_path / "none")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--download" in err and "Traceback" not in err
    assert not list((tmp_path / "s" / "runs").glob("*.json"))


def test_deepobs_architectures_shapes_and_sizes():
    sizes = {"mnist_mlp": (1, 28, 28), "fmnist_2c2d": (1, 28, 28), "cifar10_3c3d": (3, 32, 32)}
    n_params = {}
    for name, shape in sizes.items():
        model = T.TASKS[name].model()
        assert model(torch.zeros(2, *shape)).shape == (2, 10)
        n_params[name] = sum(p.numel() for p in model.parameters())
    # DeepOBS's parameter counts for these three nets
    assert n_params == {"mnist_mlp": 1_336_610, "fmnist_2c2d": 3_274_634, "cifar10_3c3d": 895_210}
