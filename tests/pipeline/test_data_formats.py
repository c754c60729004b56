"""End to end: one dataset per objective in TRL's format (HH-RLHF helpful-base + harmless-base), filled labels,
the user's own test prompts, and the pipeline-health warning with ``--strict``.

``configs/smoke-hh.yaml`` on the tiny random model: the ``label`` stage fills each pair's missing label with the
other objective's round-1 adapter, which gives conflicting prompts; the evaluation runs on exactly the prompts of
``data.test_path``. With this seed the filter keeps none of the candidates, so SIPO does nothing: the run must say
so at the end, at the top of report.md, and fail under ``--strict`` (exit code 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipo.data.formats import load_test_prompts
from sipo.report.health import STRICT_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]

HARMLESS = ROOT / "tests" / "fixtures" / "hh_harmless_sample.jsonl"


def run_sipo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("sipo")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "sipo"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SIPO_NO_PROGRESS": "1"}
    return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text(encoding="utf-8"))["counts"]


@pytest.mark.slow
def test_hh_per_objective_files_with_test_path_and_strict(tmp_path):
    run_dir = tmp_path / "run"
    test_file = tmp_path / "my_test.jsonl"
    # Three harmless-base rows of the fixture (TRL format) as the user's own test set; their pairs leave training.
    test_file.write_text("".join(line + "\n" for line in HARMLESS.read_text(encoding="utf-8").splitlines()[-3:]),
                         encoding="utf-8")
    result = run_sipo("run", "--strict", "configs/smoke-hh.yaml", f"run_dir={run_dir}",
                         f"data.test_path={test_file}", timeout=600)

    label = manifest(run_dir, "label")
    assert label["filled"]["helpful"] > 0 and label["filled"]["harmless"] > 0, label
    assert label["conflicting_pairs"] > 0 and label["train_conflict_prompts"] > 0, label
    pairs = read_jsonl(run_dir / "label" / "pairs.jsonl")
    assert all(len(p["filled"]) == 1 and p["unlabelled"] == [] for p in pairs)
    assert all(p["preferred"][p["filled"][0]] is not None or p["scores_a"] == p["scores_b"] for p in pairs)
    conflict = read_jsonl(run_dir / "label" / "train_conflict.jsonl")
    assert conflict and all(p["conflict"] for p in conflict)
    assert manifest(run_dir, "r1/sample")["prompts"] == len(conflict)

    expected = {r.prompt_id for r in load_test_prompts(test_file)}
    assert len(expected) == 3
    assert {r["prompt_id"] for r in read_jsonl(run_dir / "prepare" / "test_prompts.jsonl")} == expected
    assert {r["prompt_id"] for r in read_jsonl(run_dir / "evaluate" / "scores.jsonl")} == expected
    assert manifest(run_dir, "prepare")["pairs_of_test_path_prompts_dropped"] == 3

    assert manifest(run_dir, "r1/filter")["selected"] == 0, "this seeded run is the example of an empty filter"
    report = json.loads((run_dir / "report" / "report.json").read_text(encoding="utf-8"))
    warnings = report["pipeline"]["warnings"]
    assert any("the filter kept no response" in w for w in warnings)
    assert report["pipeline"]["funnel"][0]["filter_survivors"] == 0
    assert result.returncode == STRICT_EXIT_CODE, result.stderr[-2000:]
    assert "pipeline health: round 1: the filter kept no response" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("sipo: strict: ")
    report_md = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "Warning: SIPO's self-improvement did nothing useful" in report_md.split("- Judge:")[0]
    # ... and what limits it: the funnel's numbers and the settings that move them.
    assert "## What to change" in report_md and "under each judge alone" in report_md
    # Without --strict the same finished run exits 0 (every stage skipped), still printing the warning.
    again = run_sipo("run", "configs/smoke-hh.yaml", f"run_dir={run_dir}", f"data.test_path={test_file}")
    assert again.returncode == 0 and "the filter kept no response" in again.stderr
