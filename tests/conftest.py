"""Shared pytest fixtures: the devices to parametrize over (CUDA ones skip cleanly when absent),
and a data folder per test module."""

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each test using this fixture runs on CPU and, when present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data folder per test module, so a module's tests generate their data sets once."""
    return str(tmp_path_factory.mktemp("data"))
