"""Several processes give the run of one process: ``accelerate launch`` with 2 CPU processes vs ``sipo run``.

Both runs use configs/smoke.yaml (a tiny random Llama) on the 149 HelpSteer rows of
tests/fixtures/helpsteer_smollm2.jsonl, with step counts chosen so that no training epoch ends in a partial batch
(see docs/scale.md): sft 3 steps x 8 of its examples, dpo 1 step x 4 of each objective's 24 pairs, realign
2 steps x 2 of its 2 * selected pairs. ``train.batch_size`` is the global batch, so the 2-process run gives each
process half of the same batches and DDP averages the gradients: the updates equal the 1-process updates up to
float rounding (all-reduce sums in another order). Measured on the 2-core CPU: adapter weights differ by < 1e-6,
implicit-reward scores by < 1e-6, and greedy decoding gives the same tokens, so every generated text, id and
selection is identical; only float scores differ, within tolerance.

The run also spreads generation over both processes: review and rewrite see 32 candidates, two shards of 16, one
per process, merged by candidate_id.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sipo.errors import ConfigError
from sipo.training import per_process_batch_size

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "smoke.yaml")
DDP_CPU = str(REPO / "configs" / "accelerate" / "ddp_cpu.yaml")
OVERRIDES = [
    "data.path=tests/fixtures/helpsteer_smollm2.jsonl",
    "model.max_prompt_tokens=1024", "model.random.max_position_embeddings=2048",
    "data.max_conflict_prompts=20",
    "sft.train.batch_size=8", "sft.train.max_steps=3",
    "dpo.train.batch_size=4", "dpo.train.max_steps=1", "dpo.train.learning_rate=1e-3",
    "realign.train.batch_size=2", "realign.train.max_steps=2",
]
IDENTICAL_FILES = ("prepare/train_conflict.jsonl", "r1/sample/candidates.jsonl", "r1/review/reviews.jsonl",
                   "r1/rewrite/rewrites.jsonl")
SCORE_TOL = 1e-5
"""Implicit rewards are sums of ~50 float32 log-prob differences times beta; measured differences are < 1e-6."""


def test_per_process_batch_size_splits_the_global_batch():
    """8 examples per step over 2 processes -> 4 each; 6 over 4 cannot be split evenly."""
    assert per_process_batch_size(8, 2) == 4
    assert per_process_batch_size(4, 1) == 4
    with pytest.raises(ConfigError, match="train.batch_size"):
        per_process_batch_size(6, 4)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("multiprocess")
    one, two = base / "one", base / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIPO_NO_PROGRESS": "1", "SIPO_CACHE": str(base / "cache")}
    _run([sys.executable, "-m", "sipo", "run", SMOKE, f"run_dir={one}", *OVERRIDES], env)
    _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", DDP_CPU, "--num_processes", "2",
          "--main_process_port", str(_free_port()), "-m", "sipo", "run", SMOKE, f"run_dir={two}", *OVERRIDES],
         env)
    return one, two


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_the_second_run_used_two_processes(runs):
    one, two = runs
    stages = sorted(p.relative_to(one) for p in one.rglob("manifest.json"))
    assert stages == sorted(p.relative_to(two) for p in two.rglob("manifest.json"))
    for run, expected in ((one, 1), (two, 2)):
        assert {json.loads((run / stage).read_text())["processes"] for stage in stages} == {expected}


@pytest.mark.slow
@pytest.mark.parametrize("name", IDENTICAL_FILES)
def test_generated_texts_are_identical(runs, name):
    one, two = runs
    assert (one / name).read_bytes() == (two / name).read_bytes()


@pytest.mark.slow
def test_the_generation_was_sharded_over_both_processes(runs):
    """32 candidates (8 prompts x 4 weights) make two review shards of 16: one per process."""
    _, two = runs
    assert len(_rows(two / "r1" / "review" / "reviews.jsonl")) == 32


@pytest.mark.slow
def test_selection_is_the_same(runs):
    """Same selected responses for the same prompts; the judge scores stored with them agree within tolerance."""
    one, two = runs
    a, b = _rows(one / "r1/filter/selected.jsonl"), _rows(two / "r1/filter/selected.jsonl")
    assert a, "the filter kept nothing, so realign is not exercised; change the overrides"
    assert [(r["prompt_id"], r["candidate_id"], r["response"]) for r in a] == \
        [(r["prompt_id"], r["candidate_id"], r["response"]) for r in b]
    for x, y in zip(a, b):
        assert x["judge_scores"].keys() == y["judge_scores"].keys()
        for judge, value in x["judge_scores"].items():
            assert math.isclose(value, y["judge_scores"][judge], rel_tol=0, abs_tol=SCORE_TOL)


@pytest.mark.slow
def test_adapters_agree_up_to_float_rounding(runs):
    from safetensors.torch import load_file

    one, two = runs
    files = sorted(p.relative_to(one) for p in one.rglob("*.safetensors"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.safetensors"))
    assert len(files) >= 5  # the sft model, the dpo adapters and the realigned adapters
    for rel in files:
        a, b = load_file(one / rel), load_file(two / rel)
        assert a.keys() == b.keys()
        worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert worst < 1e-5, f"{rel}: max difference {worst:g}"


@pytest.mark.slow
def test_evaluation_and_report_agree(runs):
    one, two = runs
    a, b = _rows(one / "evaluate/scores.jsonl"), _rows(two / "evaluate/scores.jsonl")
    key = [(r["method"], r["round"], json.dumps(r["weights"], sort_keys=True), r["prompt_id"], r["response"])
           for r in a]
    assert key == [(r["method"], r["round"], json.dumps(r["weights"], sort_keys=True), r["prompt_id"],
                    r["response"]) for r in b]
    for x, y in zip(a, b):
        for objective, value in x["scores"].items():
            assert math.isclose(value, y["scores"][objective], rel_tol=0, abs_tol=SCORE_TOL)
    report_a = json.loads((one / "report/report.json").read_text())
    report_b = json.loads((two / "report/report.json").read_text())
    assert report_a["methods"].keys() == report_b["methods"].keys()
    for method, ra in report_a["methods"].items():
        rb = report_b["methods"][method]
        assert math.isclose(ra["hypervolume"], rb["hypervolume"], rel_tol=1e-2, abs_tol=1e-6)
        assert [p["weights"] for p in ra["points"]] == [p["weights"] for p in rb["points"]]
        for pa, pb in zip(ra["points"], rb["points"]):
            for objective, value in pa["scores"].items():
                assert math.isclose(value, pb["scores"][objective], rel_tol=0, abs_tol=SCORE_TOL)
