"""Settings shared by every test tier: nothing downloads, no progress bars, reproducible property tests.

The environment variables are set at import, before any test module imports transformers or huggingface_hub
(both read them once, when first imported).
"""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import settings

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["SIPO_NO_PROGRESS"] = "1"

# No example database: a failing example is reported in the test output, and no .hypothesis/ folder is written
# into the repository.
settings.register_profile("sipo", database=None)
settings.load_profile("sipo")


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """``sipo.cli.main`` points the root logger at the ``sys.stderr`` of its moment, which is a test's capture
    stream; put the handlers back afterwards, so that a later test never logs into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
