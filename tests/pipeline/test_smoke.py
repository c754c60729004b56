"""End to end through the console script: ``sipo run configs/smoke.yaml`` twice, and the command line's help.

The smoke run trains and decodes a tiny random model on the HelpSteer fixture (every stage, every default method);
its numbers mean nothing, but every file of the run directory must be there and well formed, and a second run
must skip every stage.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipo.cli import build_parser
from sipo.pipeline import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The preset has no validation prompts; one (10 % of the fixture's 14 prompts) makes evaluate decode the validation
# front too, a few responses more.
WITH_VALIDATION = "data.validation_fraction=0.1"
SMOKE_STAGES = ["prepare", "sft", "dpo", "r1/sample", "r1/review", "r1/rewrite", "r1/combine", "r1/filter",
                "r1/realign", "evaluate", "report"]


def sipo_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m sipo``."""
    script = Path(sys.executable).with_name("sipo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sipo"]


def run_sipo(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SIPO_NO_PROGRESS": "1"}
    start = time.perf_counter()
    result = subprocess.run([*sipo_command(), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    return result, time.perf_counter() - start


# --- command line (fast) --------------------------------------------------------------------------------------


def test_top_level_help_names_the_stages_and_config_keys():
    result, _ = run_sipo("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for command in ("run", "stage", "report"):
        assert command in text
    for stage in STAGE_NAMES:
        assert re.search(rf"^\s+{stage}\s", text, re.MULTILINE), f"stage {stage} missing from --help"
    for key in ("run_dir", "objectives", "methods", "model.", "name_or_path", "data.", "source", "combine.rule",
                "realign.", "alpha", "eval."):
        assert key in text, f"config key {key} missing from --help"


@pytest.mark.parametrize("command", ["run", "stage"])
def test_subcommand_help_names_the_stages_and_config_keys(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for stage in STAGE_NAMES:
        assert re.search(rf"^\s+{stage}\s", text, re.MULTILINE), f"stage {stage} missing from {command} --help"
    if command == "run":
        for key in ("run_dir", "objectives", "methods", "--dry-run", "--force", "key=value"):
            assert key in text


def test_report_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--help"])
    text = capsys.readouterr().out
    assert "run_dir" in text and "report.json" in text


def test_a_config_mistake_is_one_line_and_exit_code_2(tmp_path):
    result, _ = run_sipo("run", "configs/smoke.yaml", f"run_dir={tmp_path / 'run'}", "dpo.bta=0.2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'dpo.bta'" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_dry_run_lists_the_stages_and_writes_nothing(tmp_path):
    result, _ = run_sipo("run", "configs/smoke.yaml", f"run_dir={tmp_path / 'run'}", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("stages:")[1].split() == SMOKE_STAGES
    assert not (tmp_path / "run").exists()


# --- the smoke run (slow) -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    result, seconds = run_sipo("run", "configs/smoke.yaml", f"run_dir={run_dir}", WITH_VALIDATION, timeout=3600)
    print(f"first smoke run: {seconds:.1f}s")
    return run_dir, result, seconds


@pytest.mark.slow
def test_smoke_run_succeeds(smoke_run):
    run_dir, result, _ = smoke_run
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{len(SMOKE_STAGES)} stage(s) ran, 0 skipped" in result.stderr
    assert (run_dir / "config.yaml").is_file()


@pytest.mark.slow
def test_smoke_report(smoke_run):
    run_dir, result, _ = smoke_run
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((run_dir / "report" / "report.json").read_text())
    test_prompts = json.loads((run_dir / "evaluate" / "manifest.json").read_text())["counts"]["prompts"]
    assert 1 <= test_prompts <= 3  # data.max_test_prompts: 3
    assert report["objectives"] == ["correctness", "verbosity"]
    assert report["judge"] == "implicit"
    assert len(report["reference_point"]) == 2
    for method in ("sft", "dpo_soups", "mod", "sipo"):
        entry = report["methods"][method]
        assert entry["points"], method
        assert isinstance(entry["hypervolume"], float) and math.isfinite(entry["hypervolume"]), method
        assert all(0 <= i < len(entry["points"]) for i in entry["front"])
        for point in entry["points"]:
            assert set(point["scores"]) == {"correctness", "verbosity"} and point["n"] == test_prompts
    # eval grid resolution 2: (1, 0), (0.5, 0.5), (0, 1); sft is one point
    assert len(report["methods"]["sft"]["points"]) == 1
    assert len(report["methods"]["mod"]["points"]) == 3
    assert len(report["methods"]["sipo"]["points"]) == 3
    assert (run_dir / "report" / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    # the validation front (same reference point); no validity conditions outside the synthetic benchmark
    validation = report["validation"]
    assert validation["prompts"] == json.loads((run_dir / "evaluate" / "manifest.json").read_text())[
        "counts"]["validation_prompts"] >= 1
    assert set(validation["methods"]) == set(report["methods"])
    assert all(math.isfinite(m["hypervolume"]) for m in validation["methods"].values())
    assert "validity" not in report and "oracle_gain_share" not in report
    validation_ids = {json.loads(line)["prompt_id"]
                      for line in (run_dir / "evaluate" / "validation_scores.jsonl").read_text().splitlines()}
    test_ids = {json.loads(line)["prompt_id"]
                for line in (run_dir / "evaluate" / "scores.jsonl").read_text().splitlines()}
    assert validation_ids and not validation_ids & test_ids
    for name in ("scores.jsonl", "summary.csv", "report.md"):
        assert (run_dir / "report" / name).stat().st_size > 0


@pytest.mark.slow
def test_smoke_manifests_hold_counts(smoke_run):
    run_dir, result, _ = smoke_run
    assert result.returncode == 0, result.stderr[-4000:]
    manifests = {}
    for stage in SMOKE_STAGES:
        path = run_dir / stage / "manifest.json"
        assert path.is_file(), stage
        manifests[stage] = json.loads(path.read_text())
        assert manifests[stage]["stage"] == stage
        assert manifests[stage]["counts"], f"{stage} stored no counts"
        assert len(manifests[stage]["fingerprint"]) == 16
    prompts = manifests["prepare"]["counts"]["train_conflict_prompts"]
    assert 1 <= prompts <= 4  # data.max_conflict_prompts: 4
    sample = manifests["r1/sample"]["counts"]
    assert sample["weight_vectors"] == 4  # 0.8, 0.6, 0.4, 0.2
    assert sample["candidates"] == sample["prompts"] * 4
    assert manifests["r1/review"]["counts"]["reviews"] == sample["candidates"]
    assert manifests["r1/combine"]["counts"]["candidates"] == sample["candidates"]
    filtered = manifests["r1/filter"]["counts"]
    assert filtered["judges"] == 2 + 4  # two round-1 adapters + four soups
    assert filtered["selected"] + filtered["dropped_prompts"] == filtered["prompts"]
    assert manifests["r1/realign"]["counts"]["pairs"] == 2 * filtered["selected"]
    evaluated = manifests["evaluate"]["counts"]
    assert evaluated["responses"] == evaluated["points"] * evaluated["prompts"]
    for stage in SMOKE_STAGES:
        assert not (run_dir / stage / "shards").exists(), f"{stage} left its shards"
    for objective in ("correctness", "verbosity"):
        assert (run_dir / "dpo" / objective / "adapter_config.json").is_file()
        assert (run_dir / "r1" / "realign" / objective / "adapter_config.json").is_file()
    assert (run_dir / "sft" / "model" / "config.json").is_file()


@pytest.mark.slow
def test_second_smoke_run_skips_every_stage_quickly(smoke_run):
    run_dir, first, first_seconds = smoke_run
    assert first.returncode == 0, first.stderr[-4000:]
    mtimes = {stage: (run_dir / stage / "manifest.json").stat().st_mtime_ns for stage in SMOKE_STAGES}
    result, seconds = run_sipo("run", "configs/smoke.yaml", f"run_dir={run_dir}", WITH_VALIDATION, timeout=600)
    print(f"first smoke run: {first_seconds:.1f}s, second: {seconds:.1f}s")
    assert result.returncode == 0, result.stderr[-4000:]
    for stage in SMOKE_STAGES:
        assert re.search(rf"{re.escape(stage)}\s+skipped", result.stderr), f"{stage} was not skipped"
    assert f"0 stage(s) ran, {len(SMOKE_STAGES)} skipped" in result.stderr
    assert {stage: (run_dir / stage / "manifest.json").stat().st_mtime_ns for stage in SMOKE_STAGES} == mtimes
    assert seconds < 25, f"a fully finished run took {seconds:.1f}s to skip its stages"
