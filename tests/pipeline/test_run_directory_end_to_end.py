"""A run directory that cannot lie, end to end (``python -m sipo`` subprocesses on ``configs/smoke.yaml`` shrunk by
:data:`TINY`; marked slow).

One finished run (module fixture) is copied into each test: a finished run is checked without writing anything;
two runs with different settings on one directory never mix (the second exits 2 at once with one line); a deleted
output re-runs its stage and the later ones only, back to the same report; and after an edited data file, a forced
middle stage and a changed setting in turn, a final ``sipo run`` holds the same report, byte for byte, as a clean
run of the same config.

Every run uses ``data.path=data.jsonl`` relative to its working folder, so that a run directory copied next to
another data file names the same data path and only the content differs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
DATA = REPO / "tests" / "fixtures" / "helpsteer_smoke.jsonl"

TINY = [
    "model.device=cpu", "model.max_response_tokens=32", "data.max_conflict_prompts=3", "data.max_test_prompts=2",
    "sft.train.max_steps=1", "dpo.train.max_steps=2", "realign.train.max_steps=1", "sample.grid.resolution=3",
    "sample.decode.max_new_tokens=8", "review.decode.max_new_tokens=6", "rewrite.decode.max_new_tokens=6",
    "filter.soups=false", "eval.grid.resolution=1", "eval.decode.max_new_tokens=6", "methods=[sft,mod,sipo]",
]

REPORT_FILES = ["report/report.json", "report/report.md", "report/summary.csv", "report/scores.jsonl",
                "evaluate/scores.jsonl", "r1/filter/selected.jsonl"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SIPO_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               SIPO_NO_PROGRESS="1")
    return env


def command(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sipo", "run", str(SMOKE), f"run_dir={run_dir}", "data.path=data.jsonl", *TINY,
            *args]


def sipo_run(folder: Path, run_dir: Path, *args: str, expect: int = 0) -> str:
    """``sipo run`` in ``folder`` (where ``data.jsonl`` lives); returns stderr."""
    done = subprocess.run(command(run_dir, *args), cwd=folder, env=environment(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == expect, done.stderr[-3000:]
    return done.stderr


def ran(log: str) -> list[str]:
    return re.findall(r"^\S+ (\S+)\s+running:", log, flags=re.MULTILINE)


def snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def stale_stages(folder: Path, run_dir: Path, *args: str) -> list[str]:
    """The stages a run of this config would not skip (in process: nothing is written)."""
    from sipo.artifacts import RunDir
    from sipo.configure import load_config
    from sipo.pipeline import plan, stages_to_run

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        cfg = load_config(SMOKE, [f"run_dir={run_dir}", "data.path=data.jsonl", *TINY, *args])
        return [s.id for s in stages_to_run(cfg, RunDir(run_dir), plan(cfg))]
    finally:
        os.chdir(cwd)


def assert_same_reports(a: Path, b: Path) -> None:
    """Byte-identical report files (both run directories are named ``run``, so the titles are equal too)."""
    assert a.name == b.name
    for name in REPORT_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def workspace(root: Path, data: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "data.jsonl").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run: ``<folder>/run`` next to ``<folder>/data.jsonl``."""
    folder = workspace(tmp_path_factory.mktemp("finished") / "w", DATA.read_bytes())
    log = sipo_run(folder, folder / "run")
    assert ran(log)[0] == "prepare" and ran(log)[-1] == "report"
    return folder


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    folder = tmp_path / "w"
    shutil.copytree(finished, folder, symlinks=True)
    return folder


@pytest.mark.slow
def test_a_finished_run_is_checked_without_writing(copy):
    """Nothing under the run directory is created, replaced or modified (as on read-only storage)."""
    before = snapshot(copy / "run")
    log = sipo_run(copy, copy / "run")
    assert ran(log) == [] and "0 stage(s) ran, 11 skipped" in log
    assert snapshot(copy / "run") == before


@pytest.mark.slow
def test_a_second_run_with_other_settings_is_refused_at_once(finished, copy):
    """While one run (realign.alpha=0.5) writes the directory, another (dpo.beta=0.5) exits 2 with one line naming
    the first one's pid; the directory ends as a finished run of the first one's config, with nothing of the other."""
    run_dir = copy / "run"
    log_path = copy / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(command(run_dir, "realign.alpha=0.5"), cwd=copy, env=environment(),
                                 stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while "running:" not in log_path.read_text():
            assert first.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The first run holds the lock from before its first stage; on an idle machine its three stages finish
        # before the second process has imported torch, so it is paused (still holding the lock) while the
        # second one tries.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            second = subprocess.run(command(run_dir, "dpo.beta=0.5"), cwd=copy, env=environment(),
                                    capture_output=True, text=True, timeout=300)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert time.monotonic() - start < 60  # at once, not after the first run
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert "Traceback" not in second.stderr
        assert re.fullmatch(rf"sipo: error: {re.escape(str(run_dir))}: another sipo run is writing this run directory "
                            rf"\(pid {first.pid} on \S+, started \S+\); wait for it to finish or use another run_dir",
                            lines[-1]), lines[-1]
        assert first.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert ran(log_path.read_text()) == ["r1/realign", "evaluate", "report"]
    assert stale_stages(copy, run_dir, "realign.alpha=0.5") == []
    assert json.loads((run_dir / "dpo" / "manifest.json").read_text()) == \
        json.loads((finished / "run" / "dpo" / "manifest.json").read_text())


@pytest.mark.slow
def test_two_runs_started_together_never_mix(copy):
    """Started at the same moment with different settings: either one is refused (exit 2, one line) or they ran one
    after the other; in both cases the directory is a finished run of exactly one of the two configs."""
    run_dir = copy / "run"
    settings = ("realign.alpha=0.5", "eval.grid.resolution=2")
    procs = [subprocess.Popen(command(run_dir, setting), cwd=copy, env=environment(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for setting in settings]
    results = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("sipo: error: ") and "another sipo run" in err
    finished_configs = [s for s in settings if not stale_stages(copy, run_dir, s)]
    assert len(finished_configs) == 1, finished_configs


@pytest.mark.slow
def test_a_deleted_output_reruns_its_stage_and_the_later_ones_to_the_same_report(finished, copy):
    (copy / "run" / "r1" / "filter" / "selected.jsonl").unlink()  # its manifest stays
    log = sipo_run(copy, copy / "run")
    assert ran(log) == ["r1/filter", "r1/realign", "evaluate", "report"]
    assert_same_reports(finished / "run", copy / "run")


@pytest.mark.slow
def test_edits_forced_stages_and_settings_end_as_a_clean_run(copy, tmp_path):
    """Edit the data, force a middle stage, change a setting, in turn; then a final run equals a clean run of the
    final config and data."""
    run_dir = copy / "run"
    lines = (copy / "data.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    rows[0]["verbosity"] = (rows[0]["verbosity"] + 2) % 5
    rows[5]["correctness"] = (rows[5]["correctness"] + 1) % 5
    edited = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (copy / "data.jsonl").write_bytes(edited)
    assert ran(sipo_run(copy, run_dir))[0] == "prepare"
    log = subprocess.run([*command(run_dir), "--force", "r1/review"], cwd=copy, env=environment(),
                         capture_output=True, text=True, timeout=900)
    assert log.returncode == 0, log.stderr[-3000:]
    assert ran(log.stderr) == ["r1/review", "r1/rewrite", "r1/combine", "r1/filter", "r1/realign", "evaluate",
                               "report"]
    assert ran(sipo_run(copy, run_dir, "combine.rule=no_worse")) == ["r1/combine", "r1/filter", "r1/realign",
                                                                      "evaluate", "report"]
    assert ran(sipo_run(copy, run_dir, "combine.rule=no_worse")) == []

    clean = workspace(tmp_path / "clean", edited)
    sipo_run(clean, clean / "run", "combine.rule=no_worse")
    assert_same_reports(clean / "run", run_dir)
