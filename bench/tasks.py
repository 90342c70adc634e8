"""The task registry: data + model + loss + metrics + default steps, batch size and lr.

A `Task` is a description; `Task.build(seed, device, data_dir)` instantiates a `Problem` whose
`train_loss()` returns the loss of the next minibatch (a 0-d tensor, not synchronised), whose
`evaluate()` returns test metrics, and whose `position()` returns (x, y) on the 2-D surfaces.

2-D surfaces (parameters are one float64 tensor ``[x, y]``; loss f(x, y); no test split):
    rosenbrock   (1 - x)^2 + 100 (y - x^2)^2                          min f(1, 1) = 0
    beale        (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2   min f(3, 0.5) = 0
    saddle       x^2 - y^2 + y^4 / 4   saddle at 0, minima f(0, +-sqrt 2) = -1
    long_valley  0.05 x^2 + 5 y^2      Hessian diag(0.1, 10): condition number 100, min f(0, 0) = 0
    rastrigin    20 + sum_i (x_i^2 - 10 cos 2 pi x_i)                min f(0, 0) = 0
Classification (cross-entropy loss; test loss and accuracy on the held-out split):
    mnist1d_logreg / mnist1d_mlp / mnist1d_cnn: the mnist1d paper's models on 4000/1000 samples;
    mnist_mlp / fmnist_2c2d / cifar10_3c3d: DeepOBS's architectures and initialisations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bench import data as D

OPTIMIZER_NAMES = ("adadelta", "adagrad", "adam", "momentum", "nesterov", "rmsprop", "rprop", "sgd")


# ---------------------------------------------------------------------------- problems


class SurfaceProblem:
    """Minimise f(x, y) from a fixed start; the whole 'data set' is the function itself."""

    def __init__(self, fn: Callable, start: tuple[float, float], device: torch.device) -> None:
        self.fn = fn
        self.xy = nn.Parameter(torch.tensor(start, dtype=torch.float64, device=device))
        self.params = [self.xy]

    def train_loss(self) -> torch.Tensor:
        return self.fn(self.xy[0], self.xy[1])

    def evaluate(self) -> dict[str, float]:
        return {}

    def position(self) -> tuple[float, float] | None:
        x, y = self.xy.detach().tolist()
        return x, y


class ClassificationProblem:
    """Minibatch cross-entropy on a data set held on the device, batched by index.

    Each epoch draws a permutation from a seeded CPU ``torch.Generator`` (one host-to-device copy
    per epoch); batches are consecutive slices of it, the last incomplete one is dropped.
    """

    def __init__(
        self,
        model: nn.Module,
        data: D.ArrayData,
        batch_size: int,
        seed: int,
        device: torch.device,
        prep: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if batch_size > len(data.y_train):
            raise ValueError(
                f"batch size {batch_size} exceeds the {len(data.y_train)} training samples"
            )
        prep = prep or (lambda x: x)
        self.model = model.to(device)
        self.params = list(self.model.parameters())
        self.x_train = prep(data.x_train.to(device))
        self.y_train = data.y_train.to(device)
        self.x_test = prep(data.x_test.to(device))
        self.y_test = data.y_test.to(device)
        self.batch_size = batch_size
        self.device = device
        self.gen = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        self.perm = torch.empty(0, dtype=torch.int64, device=device)
        self.pos = 0

    def _next_batch(self) -> torch.Tensor:
        b = self.batch_size
        if self.pos + b > len(self.perm):
            perm = torch.randperm(len(self.y_train), generator=self.gen)
            self.perm = perm.to(self.device, non_blocking=True)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + b]
        self.pos += b
        return idx

    def train_loss(self) -> torch.Tensor:
        idx = self._next_batch()
        return F.cross_entropy(self.model(self.x_train[idx]), self.y_train[idx])

    @torch.no_grad()
    def evaluate(self, chunk: int = 2000) -> dict[str, float]:
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for i in range(0, len(self.y_test), chunk):
            out = self.model(self.x_test[i : i + chunk])
            y = self.y_test[i : i + chunk]
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
        n = len(self.y_test)
        return {"test_loss": loss.item() / n, "test_acc": correct.item() / n}

    def position(self) -> tuple[float, float] | None:
        return None


# ---------------------------------------------------------------------------- surfaces


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(x, y):
    return x**2 - y**2 + y**4 / 4


def long_valley(x, y):
    return 0.05 * x**2 + 5 * y**2


def rastrigin(x, y):
    two_pi = 2 * math.pi
    return 20 + x**2 - 10 * torch.cos(two_pi * x) + y**2 - 10 * torch.cos(two_pi * y)


# ---------------------------------------------------------------------------- models


def _trunc_normal_init(model: nn.Module, std: float, bias: float) -> nn.Module:
    """TensorFlow's truncated normal (cut at 2 std), as DeepOBS initialises its MNIST nets."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.constant_(m.bias, bias)
    return model


class TFMaxPool2d(nn.Module):
    """Max-pooling with TensorFlow's 'same' padding (extra zero padding at the bottom/right).

    Zero padding equals -inf padding here because it always follows a ReLU (as in DeepOBS).
    """

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph = max((math.ceil(h / self.stride) - 1) * self.stride + self.kernel - h, 0)
        pw = max((math.ceil(w / self.stride) - 1) * self.stride + self.kernel - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.max_pool2d(x, self.kernel, self.stride)


def mnist1d_logreg() -> nn.Module:
    return nn.Linear(40, 10)


def mnist1d_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )


def mnist1d_cnn() -> nn.Module:
    """The mnist1d paper's ConvBase: three strided conv1d layers (25 channels), a linear head."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 25, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(125, 10),
    )


def deepobs_mlp() -> nn.Module:
    """DeepOBS mnist_mlp: 784-1000-500-100-10 ReLU, truncated normal(0.03) weights, zero biases."""
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 1000),
        nn.ReLU(),
        nn.Linear(1000, 500),
        nn.ReLU(),
        nn.Linear(500, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    return _trunc_normal_init(model, std=3e-2, bias=0.0)


def deepobs_2c2d() -> nn.Module:
    """DeepOBS fmnist_2c2d: conv5x5(32)-pool-conv5x5(64)-pool-fc1024-fc10, 'same' padding."""
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        TFMaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        TFMaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    )
    return _trunc_normal_init(model, std=0.05, bias=0.05)


def deepobs_3c3d() -> nn.Module:
    """DeepOBS cifar10_3c3d: conv5(64)-conv3(96)-conv3(128, same), each ReLU + 3x3/2 max-pool,
    then fc512-fc256-fc10; Xavier-normal conv and Xavier-uniform dense weights, zero biases.
    (DeepOBS's L2 penalty of 0.002 on the weights is not applied.)"""
    model = nn.Sequential(
        nn.Conv2d(3, 64, 5),
        nn.ReLU(),
        TFMaxPool2d(3, 2),
        nn.Conv2d(64, 96, 3),
        nn.ReLU(),
        TFMaxPool2d(3, 2),
        nn.Conv2d(96, 128, 3, padding=1),
        nn.ReLU(),
        TFMaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 128, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Task:
    """A benchmark problem and its documented defaults."""

    name: str
    description: str
    steps: int
    batch_size: int | None  # None: full-batch (the surfaces)
    lr: Mapping[str, float]  # default initial lr per optimizer (used when --lr is not given)
    diverge_above: (
        float  # the run stops as diverged when the train loss exceeds this (or is NaN/Inf)
    )
    eval_every: int
    dataset: str | None = None  # "mnist1d", a key of data.TORCHVISION, or None
    surface: Callable | None = None
    start: tuple[float, float] | None = None
    minimum: tuple[float, float] | None = None
    model: Callable[[], nn.Module] | None = field(default=None, repr=False)
    target_metric: str = "train_loss"  # what --target / steps_to_target measure (TARGET_METRICS)
    target: float = 0.0  # the default target of that metric (see TARGETS)

    @property
    def is_surface(self) -> bool:
        return self.surface is not None

    def default_lr(self, optim: str) -> float:
        if optim in self.lr:
            return self.lr[optim]
        import optimizers  # an optimizer added after this table was written: its own default

        return float(optimizers.defaults(optim)["lr"])

    def prepare(self, data_dir: str, download: bool = False) -> None:
        """Make sure the data is on disk (generate mnist1d, check or fetch torchvision sets)."""
        if self.dataset == "mnist1d":
            D.prepare_mnist1d(data_dir)
        elif self.dataset is not None:
            D.prepare_torchvision(self.dataset, data_dir, download)

    def build(
        self, seed: int, device: torch.device, data_dir: str, batch_size: int | None = None
    ) -> SurfaceProblem | ClassificationProblem:
        """Instantiate the problem; call after torch.manual_seed(seed) so the init is seeded."""
        if self.surface is not None:
            return SurfaceProblem(self.surface, self.start, device)
        if self.dataset == "mnist1d":
            data, prep = D.load_mnist1d(str(data_dir)), None
        else:
            data = D.load_torchvision(self.dataset, str(data_dir))
            prep = partial(D.normalise, self.dataset)
        model = self.model()
        return ClassificationProblem(model, data, batch_size or self.batch_size, seed, device, prep)


# Default initial lr per task and optimizer (used without --lr). Surfaces: picked by hand from a
# 10-point log grid (1e-4 .. 3, 500 steps): a good final loss, not next to divergence. mnist1d:
# the best final test accuracy on a 9-point log grid (1e-4 .. 1, 1000 steps, seed 0) among the lrs
# whose 3x larger neighbour did not diverge (mnist1d_cnn reuses mnist1d_mlp's, checked to train).
# The torchvision tasks use common values (SGD 0.1 / 0.05, momentum 1e-2, Adam 1e-3), not tuned
# here, where those data sets are not available offline. Adadelta keeps lr = 1, the published
# rule. The README has the table.
# fmt: off
LR_COLUMNS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "rprop", "adadelta")
DEFAULT_LR: dict[str, tuple[float, ...]] = {
    "rosenbrock":     (2e-3, 1e-3, 1e-3, 1.0,  1e-2, 0.1,  1e-2, 1.0),
    "beale":          (1e-2, 1e-3, 1e-3, 1.0,  1e-2, 0.1,  1e-2, 1.0),
    "saddle":         (1e-2, 1e-2, 1e-2, 0.1,  1e-2, 1e-2, 1e-2, 1.0),
    "long_valley":    (0.1,  3e-2, 3e-2, 0.3,  1e-2, 3e-2, 1e-2, 1.0),
    "rastrigin":      (1e-3, 1e-3, 1e-3, 0.1,  1e-2, 1e-2, 1e-2, 1.0),
    "mnist1d_logreg": (0.1,  1e-2, 1e-2, 0.1,  3e-3, 3e-3, 0.3,  1.0),
    "mnist1d_mlp":    (0.3,  0.1,  0.1,  3e-2, 3e-3, 1e-2, 3e-2, 1.0),
    "mnist1d_cnn":    (0.3,  0.1,  0.1,  3e-2, 3e-3, 1e-2, 3e-2, 1.0),
    "mnist_mlp":      (0.1,  1e-2, 1e-2, 1e-2, 1e-3, 1e-3, 1e-3, 1.0),
    "fmnist_2c2d":    (0.05, 1e-2, 1e-2, 1e-2, 1e-3, 1e-3, 1e-3, 1.0),
    "cifar10_3c3d":   (0.05, 1e-2, 1e-2, 1e-2, 1e-3, 1e-3, 1e-3, 1.0),
}
# fmt: on
assert set(LR_COLUMNS) == set(OPTIMIZER_NAMES)


# Time-to-target: the default target per task (`--target` overrides it), and the metric it applies
# to. Surfaces: the train loss f(x, y) (logged every step), a value that the better tuned
# optimizers reach in the default 500 steps at their default lr (rastrigin: the global basin,
# which none of them reaches from its start). Classifiers: the test accuracy at evaluation steps,
# a level the good optimizers reach with the default lrs and steps on mnist1d (seed 0); the
# torchvision tasks' targets are DeepOBS-like levels, not calibrated here (no data offline).
TARGET_METRICS = {"train_loss": "min", "test_loss": "min", "test_acc": "max"}
TARGETS: dict[str, tuple[str, float]] = {
    "rosenbrock": ("train_loss", 0.05),
    "beale": ("train_loss", 0.01),
    "saddle": ("train_loss", -0.99),
    "long_valley": ("train_loss", 1e-3),
    "rastrigin": ("train_loss", 1.0),
    "mnist1d_logreg": ("test_acc", 0.30),
    "mnist1d_mlp": ("test_acc", 0.65),
    "mnist1d_cnn": ("test_acc", 0.90),
    "mnist_mlp": ("test_acc", 0.97),
    "fmnist_2c2d": ("test_acc", 0.90),
    "cifar10_3c3d": ("test_acc", 0.70),
}


def _lrs(task: str) -> dict[str, float]:
    return dict(zip(LR_COLUMNS, DEFAULT_LR[task], strict=True))


def _surface(name, description, fn, start, minimum) -> Task:
    return Task(name, description, steps=500, batch_size=None, lr=_lrs(name), diverge_above=1e6,
                eval_every=500, surface=fn, start=start, minimum=minimum,
                target_metric=TARGETS[name][0], target=TARGETS[name][1])  # fmt: skip


def _classifier(name, description, dataset, model, steps, batch_size, eval_every) -> Task:
    return Task(name, description, steps=steps, batch_size=batch_size, lr=_lrs(name),
                diverge_above=100.0, eval_every=eval_every, dataset=dataset,
                model=model, target_metric=TARGETS[name][0], target=TARGETS[name][1])  # fmt: skip


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _surface("rosenbrock", "Rosenbrock's banana valley (1-x)^2 + 100(y-x^2)^2",
                 rosenbrock, (-1.2, 1.0), (1.0, 1.0)),
        _surface("beale", "Beale's function: flat plateaus, steep ridges",
                 beale, (1.0, 1.5), (3.0, 0.5)),
        _surface("saddle", "x^2 - y^2 + y^4/4: a saddle at 0 between minima at (0, +-sqrt 2)",
                 saddle, (1.0, 0.01), (0.0, math.sqrt(2.0))),
        _surface("long_valley", "narrow valley 0.05x^2 + 5y^2 (condition number 100)",
                 long_valley, (-4.0, 1.0), (0.0, 0.0)),
        _surface("rastrigin", "Rastrigin's egg crate, many local minima",
                 rastrigin, (-2.2, 2.6), (0.0, 0.0)),
        _classifier("mnist1d_logreg", "mnist1d (4000 train / 1000 test, 40 features): logistic "
                    "regression", "mnist1d", mnist1d_logreg, 2000, 100, 100),
        _classifier("mnist1d_mlp", "mnist1d: MLP 40-100-100-10 (ReLU), the mnist1d paper's model",
                    "mnist1d", mnist1d_mlp, 4000, 100, 200),
        _classifier("mnist1d_cnn", "mnist1d: 3 strided conv1d layers (25 channels) + linear, the "
                    "mnist1d paper's ConvBase", "mnist1d", mnist1d_cnn, 4000, 100, 200),
        _classifier("mnist_mlp", "MNIST: DeepOBS mnist_mlp, 784-1000-500-100-10",
                    "MNIST", deepobs_mlp, 3000, 128, 300),
        _classifier("fmnist_2c2d", "Fashion-MNIST: DeepOBS fmnist_2c2d, 2 conv + 2 dense layers",
                    "FashionMNIST", deepobs_2c2d, 3000, 128, 300),
        _classifier("cifar10_3c3d", "CIFAR-10: DeepOBS cifar10_3c3d, 3 conv + 3 dense layers",
                    "CIFAR10", deepobs_3c3d, 5000, 128, 500),
    ]
}  # fmt: skip


def available() -> list[str]:
    """Task names in registry order (surfaces, mnist1d, torchvision)."""
    return list(TASKS)
