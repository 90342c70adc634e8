"""optimizers/ public API: registry, validation messages, flag conflicts and path choice."""

from __future__ import annotations

import pytest
import torch

import optimizers
from optimizers import SGD, Adadelta, Adagrad, Adam, Momentum, RMSprop, Rprop


def params() -> list[torch.Tensor]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_available_is_the_agreed_sorted_list():
    assert optimizers.available() == [
        "adadelta", "adagrad", "adam", "momentum", "nesterov", "rmsprop", "rprop", "sgd",
    ]  # fmt: skip


@pytest.mark.parametrize("name", optimizers.available())
def test_create_builds_each_optimizer_with_its_defaults(name):
    opt = optimizers.create(name, params())
    assert isinstance(opt, torch.optim.Optimizer)
    for key, value in optimizers.defaults(name).items():
        assert opt.param_groups[0][key] == value


def test_create_passes_kwargs_and_nesterov_is_momentum_with_nesterov():
    opt = optimizers.create("adam", params(), lr=3e-4, betas=(0.8, 0.9))
    assert isinstance(opt, Adam) and opt.param_groups[0]["lr"] == 3e-4
    nesterov = optimizers.create("nesterov", params(), lr=0.1)
    assert isinstance(nesterov, Momentum) and nesterov.param_groups[0]["nesterov"] is True
    assert optimizers.defaults("nesterov")["nesterov"] is True
    assert optimizers.defaults("adam") == {
        "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
        "maximize": False, "decoupled_weight_decay": False,
    }  # fmt: skip


def test_unknown_name_suggests_a_close_match():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; did you mean 'adam'\? "
                       r"choose from adadelta, adagrad, adam,"):  # fmt: skip
        optimizers.create("adamm", params())
    with pytest.raises(ValueError, match="unknown optimizer 'zzz'; choose from"):
        optimizers.defaults("zzz")


def test_unknown_kwarg_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"optimizer 'adam' does not accept 'momentum'; "
                       r"it accepts lr, betas, eps, weight_decay, amsgrad"):  # fmt: skip
        optimizers.create("adam", params(), momentum=0.9)
    with pytest.raises(ValueError, match="did you mean 'betas'"):
        optimizers.create("adam", params(), beta=(0.9, 0.99))
    with pytest.raises(ValueError, match="does not accept 'nesterov'"):
        optimizers.create("nesterov", params(), nesterov=False)


def test_bad_value_raises_the_constructors_error():
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optimizers.create("sgd", params(), lr=-1)


BAD = [
    (SGD, {"lr": -0.1}, "Invalid learning rate: -0.1"),
    (SGD, {"momentum": -0.5}, "Invalid momentum value: -0.5"),
    (SGD, {"weight_decay": -1e-4}, "Invalid weight_decay value: -0.0001"),
    (SGD, {"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "zero dampening"),
    (Momentum, {"momentum": -0.1}, "Invalid momentum value: -0.1"),
    (Momentum, {"nesterov": True, "momentum": 0}, "Nesterov momentum requires a momentum"),
    (Momentum, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    (Adagrad, {"lr_decay": -1}, "Invalid lr_decay value: -1"),
    (Adagrad, {"initial_accumulator_value": -1}, "Invalid initial_accumulator_value value: -1"),
    (Adagrad, {"eps": -1}, "Invalid epsilon value: -1"),
    (RMSprop, {"alpha": -0.1}, "Invalid alpha value: -0.1"),
    (RMSprop, {"momentum": -0.1}, "Invalid momentum value: -0.1"),
    (RMSprop, {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    (Adam, {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    (Adam, {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
    (Adam, {"eps": -1}, "Invalid epsilon value: -1"),
    (Adam, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    (Rprop, {"etas": (1.0, 1.2)}, "Invalid eta values: 1.0, 1.2"),
    (Rprop, {"etas": (0.5, 1.0)}, "Invalid eta values: 0.5, 1.0"),
    (Rprop, {"lr": -1}, "Invalid learning rate: -1"),
    (Adadelta, {"rho": 1.5}, "Invalid rho value: 1.5"),
    (Adadelta, {"rho": -0.1}, "Invalid rho value: -0.1"),
    (Adadelta, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD)
def test_validation_matches_torch_messages(cls, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        cls(params(), **kwargs)


def test_edge_values_torch_accepts_are_accepted():
    RMSprop(params(), alpha=2.0)  # torch has no upper bound on alpha
    Adadelta(params(), rho=1.0)
    Adam(params(), betas=(0.0, 0.0))
    Rprop(params(), step_sizes=(10, 1))  # torch does not check step_sizes
    SGD(params(), dampening=-1)  # nor dampening


@pytest.mark.parametrize("cls", [SGD, Momentum, Adagrad, RMSprop, Adam, Rprop, Adadelta])
def test_fused_and_foreach_together_raise_like_torch(cls):
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        cls(params(), fused=True, foreach=True)


def test_fused_rejects_integer_params_at_the_first_step_like_torch():
    p = torch.zeros(3, dtype=torch.int64)
    opt = Adam([p], fused=True)  # torch checks devices and dtypes at the first step
    p.grad = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating"):
        opt.step()


def test_empty_and_bare_tensor_params_raise_like_torch():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        Adam([])
    with pytest.raises(TypeError, match="params argument given to the optimizer"):
        Adam(torch.zeros(3))
