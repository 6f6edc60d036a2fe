"""Shared fixtures: the device x dtype matrix (set by nox) and a clean Pyro state."""

from __future__ import annotations

import os

import pyro
import pytest
import torch

DEVICE = os.environ.get("GUIDE_CORE_TEST_DEVICE", "cpu")
DTYPE = {"float32": torch.float32, "float64": torch.float64}[
    os.environ.get("GUIDE_CORE_TEST_DTYPE", "float32")
]


def pytest_report_header(config: pytest.Config) -> str:
    return f"guide_core matrix: device={DEVICE} dtype={DTYPE}"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("GUIDE_CORE_TEST_DEVICE=cuda but CUDA is not available")
    skip_cuda = pytest.mark.skip(reason="needs GUIDE_CORE_TEST_DEVICE=cuda")
    for item in items:
        if "cuda" in item.keywords and DEVICE != "cuda":
            item.add_marker(skip_cuda)


@pytest.fixture
def device() -> torch.device:
    """The device under test (``GUIDE_CORE_TEST_DEVICE``)."""
    return torch.device(DEVICE)


@pytest.fixture
def dtype() -> torch.dtype:
    """The default dtype under test (``GUIDE_CORE_TEST_DTYPE``)."""
    return DTYPE


@pytest.fixture(autouse=True)
def _pyro_state():
    """Each test starts with an empty param store, a fixed seed and the matrix's
    dtype and device as torch's defaults."""
    old_dtype, old_device = torch.get_default_dtype(), torch.get_default_device()
    torch.set_default_dtype(DTYPE)
    torch.set_default_device(DEVICE)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    try:
        yield
    finally:
        pyro.clear_param_store()
        torch.set_default_dtype(old_dtype)
        torch.set_default_device(old_device)
