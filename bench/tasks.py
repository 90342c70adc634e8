"""The task catalogue: every built-in task, written with the public constructors a user's task uses.

    bench.surface_task(name, *, fn, start, steps, lr=None, bound=None, target=None)
    bench.classification_task(name, *, model, data, steps, batch_size, lr=None, eval_every=None,
                              target=None)

Each returns a :class:`Task`; ``Task.build(seed, device, data_dir)`` instantiates its problem
(see ``bench.protocols`` for the contract: ``params``, ``train_loss()``, ``evaluate()``). Copy
any entry of the catalogue at the end of this file into your own module and run it with
``python -m bench.run --task mymodule:my_task``.

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
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench import data as D
from bench.protocols import Problem

OPTIMIZER_NAMES = ("adadelta", "adagrad", "adam", "momentum", "nesterov", "rmsprop", "rprop", "sgd")
#: What time-to-target measures, and whether higher or lower is better.
TARGET_METRICS = {"train_loss": "min", "test_loss": "min", "test_acc": "max"}

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


# ---------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """A benchmark problem and its defaults; made by :func:`surface_task`,
    :func:`classification_task` or, for any object with ``build``, :func:`as_task`."""

    name: str
    description: str
    steps: int | None  # None: --steps is required
    batch_size: int | None  # None: full-batch (the surfaces) or the task's own batching
    lr: float | Mapping[str, float] | None  # default initial lr: one, per optimizer, or none
    # the run stops as diverged when the train loss exceeds this (or is NaN/Inf)
    diverge_above: float
    eval_every: int | None  # None: at the last step only
    dataset: str | None = None  # a name for the data ("mnist1d", a key of data.TORCHVISION)
    surface: Callable | None = None
    start: tuple[float, float] | None = None
    minimum: tuple[float, float] | None = None
    model: Callable[[], nn.Module] | None = field(default=None, repr=False)
    target_metric: str = "train_loss"  # what --target / steps_to_target measure (TARGET_METRICS)
    target: float | None = None  # the default target of that metric (None: no target)
    data: Callable[[str], Any] | None = field(default=None, repr=False)  # data_dir -> 4 tensors
    transform: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    prepare_data: Callable[[str, bool], None] | None = field(default=None, repr=False)
    builder: Callable[[int, torch.device, str], Problem] | None = field(default=None, repr=False)

    @property
    def is_surface(self) -> bool:
        return self.surface is not None

    def lr_for(self, optim: str) -> float | None:
        """The task's default initial lr for optimizer ``optim`` (its spec), or None."""
        if isinstance(self.lr, Mapping):
            value = self.lr.get(optim)
            return None if value is None else float(value)
        return None if self.lr is None else float(self.lr)

    def default_lr(self, optim: str) -> float | None:
        """The task's lr for ``optim``, else a built-in optimizer's registry default, else None
        (an outside optimizer then uses its constructor's default)."""
        lr = self.lr_for(optim)
        if lr is not None:
            return lr
        import optimizers

        if optim in optimizers.available():
            return float(optimizers.defaults(optim)["lr"])
        return None

    def prepare(self, data_dir: str, download: bool = False) -> None:
        """Make sure the data is on disk (generate mnist1d, check or fetch torchvision sets)."""
        if self.prepare_data is not None:
            self.prepare_data(str(data_dir), download)

    def build(
        self, seed: int, device: torch.device, data_dir: str, batch_size: int | None = None
    ) -> Problem:
        """Instantiate the problem; call after torch.manual_seed(seed) so the init is seeded."""
        if self.builder is not None:
            return self.builder(seed, device, str(data_dir))
        if self.surface is not None:
            return SurfaceProblem(self.surface, self.start, device)
        model = self.model()
        data = _array_data(self.name, self.data(str(data_dir)))
        size = batch_size or self.batch_size
        return ClassificationProblem(model, data, size, seed, device, self.transform)


def _array_data(name: str, data: Any) -> D.ArrayData:
    """A data callable's result as ArrayData: four tensors, inputs and int64 labels."""
    if isinstance(data, D.ArrayData):
        return data
    parts = tuple(data) if isinstance(data, Sequence) else ()
    if len(parts) != 4 or not all(isinstance(t, torch.Tensor) for t in parts):
        raise ValueError(
            f"task '{name}': data(data_dir) must return 4 tensors (x_train, y_train, x_test, "
            f"y_test), got {type(data).__name__}"
        )
    x, y, xt, yt = parts
    for what, t in (("y_train", y), ("y_test", yt)):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"task '{name}': {what} must hold integer class labels, got {t.dtype}")
    if len(x) != len(y) or len(xt) != len(yt):
        raise ValueError(
            f"task '{name}': inputs and labels differ in length (train {len(x)} vs {len(y)}, "
            f"test {len(xt)} vs {len(yt)})"
        )
    return D.ArrayData(x, y.long(), xt, yt.long())


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or "," in name:
        raise ValueError(f"a task name is a non-empty string without commas, got {name!r}")
    return name


def _check_positive_int(what: str, value: Any, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_number(what: str, value: Any, positive: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return float(value)


def _check_lr(name: str, lr: Any) -> float | dict[str, float] | None:
    """None, a positive float, or {optimizer spec: positive float}."""
    if lr is None:
        return None
    if isinstance(lr, Mapping):
        return {
            str(k): _check_number(f"task '{name}': lr for {k!r}", v, positive=True)
            for k, v in lr.items()
        }
    return _check_number(f"task '{name}': lr", lr, positive=True)


def _check_callable(name: str, what: str, value: Any, signature: str) -> Callable:
    if not callable(value):
        raise ValueError(
            f"task '{name}': {what} must be a callable {signature}, got {type(value).__name__}"
        )
    return value


def surface_task(
    name: str,
    *,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start: tuple[float, float],
    steps: int,
    lr: float | Mapping[str, float] | None = None,
    bound: float | None = None,
    target: float | None = None,
    minimum: tuple[float, float] | None = None,
    description: str = "",
) -> Task:
    """A 2-D test function: minimise ``fn(x, y)`` from ``start`` (one float64 parameter [x, y]).

    Args:
        name: the task's name.
        fn: ``fn(x, y) -> 0-d tensor``, written with torch operations (autograd differentiates
            it); x and y are 0-d float64 tensors.
        start: the starting point ``(x, y)``.
        steps: default number of updates.
        lr: default initial lr: one for every optimizer, or ``{optimizer spec: lr}`` (the
            others use their own default lr).
        bound: a run whose loss exceeds it has diverged (default: only NaN or infinity).
        target: the loss level for time-to-target (``steps_to_target`` in summary.csv).
        minimum: where the minimum is (drawn by the trajectory figures).
        description: one line for ``--list``.

    Every step logs the point (x, y), so trajectories can be drawn as for the built-in surfaces.
    """
    name = _check_name(name)
    steps = _check_positive_int(f"task '{name}': steps", steps)
    _check_callable(name, "fn", fn, "(x, y) -> tensor")
    points = {"start": start, "minimum": minimum}
    for what, point in points.items():
        if point is None and what == "minimum":
            continue
        if not isinstance(point, Sequence) or len(point) != 2:
            raise ValueError(f"task '{name}': {what} must be a point (x, y), got {point!r}")
        points[what] = tuple(_check_number(f"task '{name}': {what}", v) for v in point)
    return Task(
        name=name,
        description=description,
        steps=steps,
        batch_size=None,
        lr=_check_lr(name, lr),
        diverge_above=math.inf if bound is None else _check_number(f"task '{name}': bound", bound),
        eval_every=steps,  # a surface has no test split: the evaluation only logs the point
        surface=fn,
        start=points["start"],
        minimum=points["minimum"],
        target_metric="train_loss",
        target=None if target is None else _check_number(f"task '{name}': target", target),
    )


def classification_task(
    name: str,
    *,
    model: Callable[[], nn.Module],
    data: Callable[[str], Any],
    steps: int,
    batch_size: int,
    lr: float | Mapping[str, float] | None = None,
    eval_every: int | None = None,
    target: float | None = None,
    bound: float = 100.0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prepare: Callable[[str, bool], None] | None = None,
    dataset: str | None = None,
    description: str = "",
) -> Task:
    """Minibatch cross-entropy of ``model()`` on a data set held whole on the run's device.

    Args:
        name: the task's name.
        model: ``() -> nn.Module``, called after ``torch.manual_seed(seed)`` (the init is
            seeded); its output is the class logits.
        data: ``(data_dir) -> (x_train, y_train, x_test, y_test)`` tensors (labels: integer
            classes), called once per run; make it deterministic (cache it if it is slow).
        steps: default number of updates.
        batch_size: default minibatch size (epochs: a seeded permutation, incomplete last batch
            dropped).
        lr: default initial lr: one for every optimizer, or ``{optimizer spec: lr}`` (the others
            use their own default lr).
        eval_every: steps between test-set evaluations (default: ``steps // 10``).
        target: the test accuracy for time-to-target (``steps_to_target`` in summary.csv).
        bound: a run whose train loss exceeds it has diverged.
        transform: applied to the inputs once they are on the device (e.g. uint8 images to
            normalised floats, so the copy to the device stays small).
        prepare: ``(data_dir, download) -> None``, run before the sweep to fetch or check the data.
        dataset: a name for the data set (shown by ``--list``).
        description: one line for ``--list``.

    A run's ``evaluate()`` reports ``test_loss`` and ``test_acc`` on the test split.
    """
    name = _check_name(name)
    _check_callable(name, "model", model, "() -> nn.Module")
    _check_callable(name, "data", data, "(data_dir) -> (x_train, y_train, x_test, y_test)")
    steps = _check_positive_int(f"task '{name}': steps", steps)
    every = _check_positive_int(f"task '{name}': eval_every", eval_every, optional=True)
    if target is not None:
        target = _check_number(f"task '{name}': target", target)
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"task '{name}': target is a test accuracy in [0, 1], got {target}")
    for what, fn in (("transform", transform), ("prepare", prepare)):
        if fn is not None:
            _check_callable(name, what, fn, "")
    return Task(
        name=name,
        description=description,
        steps=steps,
        batch_size=_check_positive_int(f"task '{name}': batch_size", batch_size),
        lr=_check_lr(name, lr),
        diverge_above=_check_number(f"task '{name}': bound", bound, positive=True),
        eval_every=every or max(1, steps // 10),
        dataset=dataset,
        model=model,
        target_metric="test_acc",
        target=target,
        data=data,
        transform=transform,
        prepare_data=prepare,
    )


def as_task(obj: Any, name: str | None = None) -> Task:
    """A :class:`Task` for any object with ``build(seed, device, data_dir)`` (the protocol in
    ``bench.protocols``), its optional attributes read with their documented defaults."""
    if isinstance(obj, Task):
        return obj
    build = getattr(obj, "build", None)
    if isinstance(obj, type) or not callable(build):
        raise ValueError(
            f"{name or type(obj).__name__!r} is a {type(obj).__name__}, not a task (an object "
            "with build(seed, device, data_dir))"
        )
    name = _check_name(name or getattr(obj, "name", None) or type(obj).__name__)
    steps = _check_positive_int(f"task '{name}': steps", getattr(obj, "steps", None), True)
    every = _check_positive_int(
        f"task '{name}': eval_every", getattr(obj, "eval_every", None), True
    )
    bound = getattr(obj, "diverge_above", None)
    metric = getattr(obj, "target_metric", "train_loss")
    if metric not in TARGET_METRICS:
        raise ValueError(
            f"task '{name}': target_metric must be one of {', '.join(TARGET_METRICS)}, "
            f"got {metric!r}"
        )
    target = getattr(obj, "target", None)
    prepare = getattr(obj, "prepare", None)
    return Task(
        name=name,
        description=str(getattr(obj, "description", "") or ""),
        steps=steps,
        batch_size=None,
        lr=_check_lr(name, getattr(obj, "lr", None)),
        diverge_above=math.inf if bound is None else _check_number(f"task '{name}': bound", bound),
        eval_every=every,
        target_metric=metric,
        target=None if target is None else _check_number(f"task '{name}': target", target),
        prepare_data=prepare if callable(prepare) else None,
        builder=build,
    )


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


# ---------------------------------------------------------------------------- data


def mnist1d(data_dir: str) -> D.ArrayData:
    """The mnist1d package's default data set: 4000 train / 1000 test samples of 40 floats."""
    return D.load_mnist1d(str(data_dir))


def prepare_mnist1d(data_dir: str, download: bool = False) -> None:
    """Generate mnist1d into ``data_dir`` once (no download: the package makes it)."""
    D.prepare_mnist1d(data_dir)


def torchvision_data(name: str) -> dict[str, Any]:
    """The ``classification_task`` arguments of a torchvision data set (MNIST, FashionMNIST,
    CIFAR10): uint8 images loaded as they are, normalised on the device."""
    return dict(
        data=partial(D.load_torchvision, name),
        transform=partial(D.normalise, name),
        prepare=partial(D.prepare_torchvision, name),
        dataset=name,
    )


# ---------------------------------------------------------------------------- the catalogue

# Default initial lr per task and optimizer (used without --lr). Surfaces: picked by hand from a
# 10-point log grid (1e-4 .. 3, 500 steps): a good final loss, not next to divergence. mnist1d:
# the best final test accuracy on a 9-point log grid (1e-4 .. 1, 1000 steps, seed 0) among the lrs
# whose 3x larger neighbour did not diverge (mnist1d_cnn reuses mnist1d_mlp's, checked to train).
# The torchvision tasks use common values (SGD 0.1 / 0.05, momentum 1e-2, Adam 1e-3), not tuned
# here, where those data sets are not available offline. Adadelta keeps lr = 1, the published
# rule.
#
# Targets (time-to-target; --target overrides them). Surfaces: a train loss f(x, y) that the
# better tuned optimizers reach in the default 500 steps at their default lr (rastrigin: the
# global basin, which none of them reaches from its start). Classifiers: a test accuracy the good
# optimizers reach with the default lrs and steps on mnist1d (seed 0); the torchvision tasks'
# targets are DeepOBS-like levels, not calibrated here (no data offline).
# fmt: off
CATALOGUE = [
    surface_task(
        "rosenbrock", fn=rosenbrock, start=(-1.2, 1.0), minimum=(1.0, 1.0), steps=500,
        bound=1e6, target=0.05, description="Rosenbrock's banana valley (1-x)^2 + 100(y-x^2)^2",
        lr=dict(sgd=2e-3, momentum=1e-3, nesterov=1e-3, adagrad=1.0, rmsprop=1e-2, adam=0.1,
                rprop=1e-2, adadelta=1.0),
    ),
    surface_task(
        "beale", fn=beale, start=(1.0, 1.5), minimum=(3.0, 0.5), steps=500,
        bound=1e6, target=0.01, description="Beale's function: flat plateaus, steep ridges",
        lr=dict(sgd=1e-2, momentum=1e-3, nesterov=1e-3, adagrad=1.0, rmsprop=1e-2, adam=0.1,
                rprop=1e-2, adadelta=1.0),
    ),
    surface_task(
        "saddle", fn=saddle, start=(1.0, 0.01), minimum=(0.0, math.sqrt(2.0)), steps=500,
        bound=1e6, target=-0.99,
        description="x^2 - y^2 + y^4/4: a saddle at 0 between minima at (0, +-sqrt 2)",
        lr=dict(sgd=1e-2, momentum=1e-2, nesterov=1e-2, adagrad=0.1, rmsprop=1e-2, adam=1e-2,
                rprop=1e-2, adadelta=1.0),
    ),
    surface_task(
        "long_valley", fn=long_valley, start=(-4.0, 1.0), minimum=(0.0, 0.0), steps=500,
        bound=1e6, target=1e-3, description="narrow valley 0.05x^2 + 5y^2 (condition number 100)",
        lr=dict(sgd=0.1, momentum=3e-2, nesterov=3e-2, adagrad=0.3, rmsprop=1e-2, adam=3e-2,
                rprop=1e-2, adadelta=1.0),
    ),
    surface_task(
        "rastrigin", fn=rastrigin, start=(-2.2, 2.6), minimum=(0.0, 0.0), steps=500,
        bound=1e6, target=1.0, description="Rastrigin's egg crate, many local minima",
        lr=dict(sgd=1e-3, momentum=1e-3, nesterov=1e-3, adagrad=0.1, rmsprop=1e-2, adam=1e-2,
                rprop=1e-2, adadelta=1.0),
    ),
    classification_task(
        "mnist1d_logreg", model=mnist1d_logreg, data=mnist1d, prepare=prepare_mnist1d,
        dataset="mnist1d", steps=2000, batch_size=100, eval_every=100, target=0.30,
        description="mnist1d (4000 train / 1000 test, 40 features): logistic regression",
        lr=dict(sgd=0.1, momentum=1e-2, nesterov=1e-2, adagrad=0.1, rmsprop=3e-3, adam=3e-3,
                rprop=0.3, adadelta=1.0),
    ),
    classification_task(
        "mnist1d_mlp", model=mnist1d_mlp, data=mnist1d, prepare=prepare_mnist1d,
        dataset="mnist1d", steps=4000, batch_size=100, eval_every=200, target=0.65,
        description="mnist1d: MLP 40-100-100-10 (ReLU), the mnist1d paper's model",
        lr=dict(sgd=0.3, momentum=0.1, nesterov=0.1, adagrad=3e-2, rmsprop=3e-3, adam=1e-2,
                rprop=3e-2, adadelta=1.0),
    ),
    classification_task(
        "mnist1d_cnn", model=mnist1d_cnn, data=mnist1d, prepare=prepare_mnist1d,
        dataset="mnist1d", steps=4000, batch_size=100, eval_every=200, target=0.90,
        description="mnist1d: 3 strided conv1d layers (25 channels) + linear, the mnist1d "
                    "paper's ConvBase",
        lr=dict(sgd=0.3, momentum=0.1, nesterov=0.1, adagrad=3e-2, rmsprop=3e-3, adam=1e-2,
                rprop=3e-2, adadelta=1.0),
    ),
    classification_task(
        "mnist_mlp", model=deepobs_mlp, **torchvision_data("MNIST"),
        steps=3000, batch_size=128, eval_every=300, target=0.97,
        description="MNIST: DeepOBS mnist_mlp, 784-1000-500-100-10",
        lr=dict(sgd=0.1, momentum=1e-2, nesterov=1e-2, adagrad=1e-2, rmsprop=1e-3, adam=1e-3,
                rprop=1e-3, adadelta=1.0),
    ),
    classification_task(
        "fmnist_2c2d", model=deepobs_2c2d, **torchvision_data("FashionMNIST"),
        steps=3000, batch_size=128, eval_every=300, target=0.90,
        description="Fashion-MNIST: DeepOBS fmnist_2c2d, 2 conv + 2 dense layers",
        lr=dict(sgd=0.05, momentum=1e-2, nesterov=1e-2, adagrad=1e-2, rmsprop=1e-3, adam=1e-3,
                rprop=1e-3, adadelta=1.0),
    ),
    classification_task(
        "cifar10_3c3d", model=deepobs_3c3d, **torchvision_data("CIFAR10"),
        steps=5000, batch_size=128, eval_every=500, target=0.70,
        description="CIFAR-10: DeepOBS cifar10_3c3d, 3 conv + 3 dense layers",
        lr=dict(sgd=0.05, momentum=1e-2, nesterov=1e-2, adagrad=1e-2, rmsprop=1e-3, adam=1e-3,
                rprop=1e-3, adadelta=1.0),
    ),
]
# fmt: on


# ---------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {t.name: t for t in CATALOGUE}
_RESOLVED: dict[str, tuple[Task, str | None]] = {}  # spec -> (task, "dist==version"), this process


def available() -> list[str]:
    """Task names in registry order (surfaces, mnist1d, torchvision)."""
    return list(TASKS)


def resolve(spec: str) -> tuple[Task, str | None]:
    """``(task, "distribution==version" or None)`` for a task spec: a built-in name, an
    entry-point name or an import path (``bench.specs.resolve_task``), resolved once per process.
    Raises ValueError (one line) when it does not resolve."""
    if spec in TASKS:
        return TASKS[spec], None
    if spec not in _RESOLVED:
        from bench import specs

        found = specs.resolve_task(spec)
        version = f"{found.distribution}=={found.version}" if found.version else None
        _RESOLVED[spec] = (as_task(found.task, name=spec), version)
    return _RESOLVED[spec]


def get(spec: str) -> Task:
    """The task a spec names (see :func:`resolve`)."""
    return resolve(spec)[0]


def find(spec: str) -> Task | None:
    """A built-in task or one resolved earlier in this process; None otherwise (imports
    nothing)."""
    found = TASKS.get(spec) or _RESOLVED.get(spec)
    return found[0] if isinstance(found, tuple) else found


def register(task: Any) -> str:
    """Make a task object (``bench.sweep(task=obj)``) known to this process under its name;
    returns the name, its spec. It cannot be rebuilt in other processes."""
    made = as_task(task)
    if made.name in TASKS and TASKS[made.name] is not made:
        raise ValueError(f"task name '{made.name}' is a built-in task's; give yours another name")
    _RESOLVED[made.name] = (made, None)
    return made.name
