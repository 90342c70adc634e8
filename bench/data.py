"""Data sets for the runner's tasks, loaded whole as tensors (no DataLoader).

mnist1d is generated locally by the `mnist1d` package (its default arguments: 5000 samples, seed 42,
80/20 train/test split) and cached as ``<data_dir>/mnist1d/mnist1d-<key>.npz``. MNIST, FashionMNIST
and CIFAR-10 are read through torchvision's own dataset classes from ``<data_dir>`` (the folder
layout torchvision expects: ``MNIST/raw/...``, ``FashionMNIST/raw/...``, ``cifar-10-batches-py/``).
Images stay uint8 until they reach the run's device; normalisation happens there.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "OPTBENCH_DATA"


class DataMissingError(RuntimeError):
    """A data set is not on disk (and --download was not given, or downloading failed)."""


def default_data_dir() -> Path:
    """``$OPTBENCH_DATA`` when set, else ``~/.cache/optbench/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "optbench" / "data"


@dataclass(frozen=True)
class ArrayData:
    """A classification data set as CPU tensors: inputs (float32 or uint8) and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


# ---------------------------------------------------------------------------- mnist1d


def _mnist1d_args():
    from mnist1d.data import get_dataset_args  # imports scipy and matplotlib: only when generating

    return get_dataset_args()  # the package defaults; `url` is never used by make_dataset


def mnist1d_cache_path(data_dir: str | os.PathLike) -> Path:
    """Where the generated arrays are cached, keyed by the package version (its default arguments
    define the data set)."""
    from importlib import metadata

    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return Path(data_dir) / "mnist1d" / f"mnist1d-{version}-defaults.npz"


def _generate_mnist1d() -> dict[str, np.ndarray]:
    """Run the package's generator (~1 s), restoring numpy's global RNG (which it reseeds)."""
    from mnist1d.data import make_dataset

    state = np.random.get_state()
    try:
        d = make_dataset(_mnist1d_args())
    finally:
        np.random.set_state(state)
    return {
        "x": d["x"].astype(np.float32),
        "y": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32),
        "y_test": d["y_test"].astype(np.int64),
    }


def prepare_mnist1d(data_dir: str | os.PathLike) -> Path:
    """Generate and cache mnist1d in ``data_dir`` unless already there (atomic write)."""
    path = mnist1d_cache_path(data_dir)
    if path.exists():
        return path
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_writable(path.parent)  # before generating, so an unusable folder fails at once
        np.savez(tmp, **_generate_mnist1d())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        where = path.parent
        raise DataMissingError(
            f"cannot write mnist1d to {where} ({e.strerror}); {_CHOOSE}"
        ) from None
    return path


def _check_writable(folder: Path) -> None:
    probe = folder / f".probe.{os.getpid()}.tmp"
    probe.write_bytes(b"")
    probe.unlink()


_CHOOSE = f"choose a writable folder with --data-dir or ${DATA_ENV}"


@lru_cache(maxsize=4)
def load_mnist1d(data_dir: str) -> ArrayData:
    """The cached arrays when present, else generated in memory (nothing is written here)."""
    path = mnist1d_cache_path(data_dir)
    if path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = _generate_mnist1d()
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return ArrayData(t["x"], t["y"], t["x_test"], t["y_test"])


# ---------------------------------------------------------------------------- torchvision

# name -> (torchvision class name, where its files live under data_dir, image mean, image std)
TORCHVISION = {
    "MNIST": ("MNIST", "MNIST/raw", (0.0,), (1.0,)),
    "FashionMNIST": ("FashionMNIST", "FashionMNIST/raw", (0.0,), (1.0,)),
    "CIFAR10": (
        "CIFAR10",
        "cifar-10-batches-py",
        (0.49139968, 0.48215841, 0.44653091),
        (0.24703223, 0.24348513, 0.26158784),
    ),
}
TRAIN_SIZES = {"MNIST": 60_000, "FashionMNIST": 60_000, "CIFAR10": 50_000}  # the published splits


def _dataset(name: str, data_dir: str, train: bool, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[name][0])
    try:
        return cls(root=data_dir, train=train, download=download)
    except OSError as e:  # a data folder that is a file, read-only, or under /proc
        raise DataMissingError(
            f"cannot read or download {name} in {data_dir} ({e.strerror}); {_CHOOSE}"
        ) from None
    except RuntimeError as e:  # torchvision: "Dataset not found ..." / "... corrupted"
        where = Path(data_dir) / TORCHVISION[name][1]
        how = (
            "downloading failed; check your connection or fetch the files by hand"
            if download
            else "rerun with --download (needs internet) or put the files there"
        )
        raise DataMissingError(f"{name} not found or incomplete in {where} ({e}); {how}") from None


def prepare_torchvision(name: str, data_dir: str | os.PathLike, download: bool = False) -> None:
    """Check (or, with download, fetch) both splits; raises DataMissingError with a one-line fix."""
    for train in (True, False):
        _dataset(name, str(data_dir), train, download)


@lru_cache(maxsize=2)
def load_torchvision(name: str, data_dir: str) -> ArrayData:
    """Both splits as uint8 NCHW image tensors and int64 labels, straight from torchvision."""

    def split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = _dataset(name, data_dir, train, download=False)
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (F)MNIST NHW, CIFAR NHWC
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    x, y = split(True)
    xt, yt = split(False)
    return ArrayData(x, y, xt, yt)


def train_size(dataset: str, data_dir: str | os.PathLike) -> int:
    """The number of training samples of a prepared data set (mnist1d: read from its cache;
    torchvision's: the published split sizes)."""
    if dataset == "mnist1d":
        return len(load_mnist1d(str(data_dir)).y_train)
    return TRAIN_SIZES[dataset]


def normalise(name: str, x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 ((x / 255) - mean) / std, on whatever device ``x`` is on."""
    _, _, mean, std = TORCHVISION[name]
    shape = (1, -1, 1, 1)
    m = torch.tensor(mean, device=x.device).view(shape)
    s = torch.tensor(std, device=x.device).view(shape)
    return (x.float().div_(255.0) - m) / s
