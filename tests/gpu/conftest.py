"""The device of each test in tests/gpu: every check runs on the CPU (in the normal suite, as CI runs it) and on
CUDA (marked ``gpu``: ``pytest -m gpu tests/gpu`` on a GPU machine, skipped where CUDA is missing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The checks live in scripts/device_checks.py (test tooling, not part of the installed package).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return request.param


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    """The tiny models gain nothing from intra-op threads on a shared CPU (see tests/component/conftest.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
