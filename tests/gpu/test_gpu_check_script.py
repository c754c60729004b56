"""scripts/gpu_check.py on the CPU (``--device cpu --size tiny``, a short budget): the JSON it writes holds every
check and every timing the GPU run records, and a budget too short for a phase skips it, said so."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIPO_NO_PROGRESS": "1"}
    env.pop("OUT", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_run_writes_every_check_and_timing(tmp_path):
    out = tmp_path / "check.json"
    proc = _run("--device", "cpu", "--size", "tiny", "--phases", "setup,checks,timings", "--budget", "300",
                "--repeats", "0", "--threads", "1", "--new-tokens", "6", "--check-tokens", "4", "--responses", "16",
                "--reference-responses", "2", "--out", str(out), "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["ok"] and data["failures"] == [] and data["incomplete"] == []
    info = data["device_info"]
    assert info["device"] == "cpu" and info["torch_threads"] == 1 and info["cpu_capability"]
    assert data["setup"]["ok"] and data["setup"]["missing_after"] == []
    checks = data["checks"]
    assert checks["mod_float32"]["ok"] and checks["scoring_float32"]["ok"] and checks["soup_maths"]["ok"]
    assert checks["mod_bfloat16"]["dtype"] == "bfloat16" and checks["scoring_bfloat16"]["finite"]
    scoring = checks["scoring_float32"]
    assert scoring["batched_error"] <= scoring["allowed_error"] and scoring["truth"].startswith("float64")
    assert checks["scoring_bfloat16"]["ok"] is None and checks["scoring_bfloat16"]["one_at_a_time_error"] > 0
    timings = data["timings"]
    assert timings["dtype"] == "float32"
    for batch in ("1", "16", "64"):
        row = timings["decoding"][batch]
        for name in ("mod_2_adapters", "mod_3_adapters", "one_adapter", "one_adapter_generate"):
            assert row[name]["tokens"] == int(batch) * 6 and row[name]["tokens_per_s"] > 0
        assert row["mod_2_adapters_vs_one_adapter"] > 0 and row["mod_3_adapters_vs_one_adapter"] > 0
        assert row["one_adapter_equals_generate"] == int(batch)  # float32: sipo's decoder is greedy generate
        assert timings["scoring"][batch]["responses_per_s"] > 0
        for mix in ("mod_2_adapters", "mod_3_adapters"):
            assert timings["reference_loop"][mix][f"reference_vs_one_adapter_at_{batch}"] > 0
    assert "measured on 2 of 16" in timings["scoring"]["reference"]["note"]
    assert (tmp_path / "check.log").exists()


def test_only_the_scoring_check(tmp_path):
    """``--checks scoring``: the re-check of scoring alone (the float64 truth, then float32 and bfloat16), nothing
    else of the checks phase."""
    out = tmp_path / "check.json"
    proc = _run("--device", "cpu", "--size", "tiny", "--phases", "checks", "--checks", "scoring", "--budget", "200",
                "--threads", "1", "--out", str(out), "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["ok"] and "--checks scoring" in data["worker_checks"]["command"]
    assert sorted(data["checks"]) == ["scoring_bfloat16", "scoring_float32", "scoring_truth_seconds"]
    assert data["checks"]["scoring_float32"]["ok"]


def test_a_budget_too_short_skips_the_phases_and_says_so(tmp_path):
    out = tmp_path / "check.json"
    proc = _run("--device", "cpu", "--phases", "tests,presets", "--budget", "5", "--out", str(out),
                "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == 1
    data = json.loads(out.read_text())
    assert data["incomplete"] == ["tests", "presets"] and not data["ok"]
    assert "time budget" in data["tests"]["skipped"] and "time budget" in data["presets"]["skipped"]


@pytest.mark.parametrize("option", ["--phases", "--checks"])
def test_a_bad_argument_is_one_line_and_exit_2(tmp_path, option):
    proc = _run(option, "setup,nope", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and option in proc.stderr and "nope" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_setup_without_wheels_names_the_folder(gpu_check, tmp_path, monkeypatch):
    """A missing requirement and no wheel folder: the setup phase fails, naming what is missing and the folder."""
    monkeypatch.setattr(gpu_check, "REQUIREMENTS", ("sipo_no_such_module>=1",))
    args = gpu_check.parse_args(["--wheels", str(tmp_path / "wheels")])
    result = gpu_check.setup(args)
    assert result["ok"] is False and result["missing_before"] == ["sipo_no_such_module"]
    assert str(tmp_path / "wheels") in result["error"]


def test_failures_and_incomplete_parts_of_a_report(gpu_check):
    data = {
        "setup": {"ok": True},
        "checks": {"mod_float32": {"ok": False}, "mod_bfloat16": {"ok": None}, "soup_maths": {"ok": True}},
        "timings": {"decoding": {"1": {"prompts": 1}, "64": {"skipped": "time budget"}}, "scoring": {}},
        "tests": {"ok": False, "timed_out": False, "skipped": 2},  # a count of skipped tests, not a skipped phase
        "presets": {"smoke-float32": {"ok": True}, "demo-bfloat16": {"ok": False, "timed_out": True}},
    }
    failed, incomplete = gpu_check.failures_of(data)
    assert failed == ["checks.mod_float32", "tests"]
    assert incomplete == ["timings.decoding.64", "presets.demo-bfloat16"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_sigterm_stops_the_child_processes(tmp_path):
    """The children run in process groups of their own (so that a deadline can end each with what it started);
    a SIGTERM of the script itself still ends them before it exits, and the JSON says it was interrupted."""
    import signal
    import time

    work = tmp_path / "work"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIPO_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--device", "cpu", "--phases", "timings", "--budget", "600",
                             "--out", str(tmp_path / "x.json"), "--work-dir", str(work)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _processes_mentioning(str(work / "worker_timings.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(work / "worker_timings.json")), "the worker never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _processes_mentioning(str(work / "worker_timings.json")) == []
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["ok"] is False and data["interrupted"].startswith("SystemExit")
