"""User mistakes through the real console script (a subprocess, as a user runs it): exit code 2, the last line of
stderr is one ``sipo: error: ...`` line naming the file and line or the config key, no traceback unless
``--debug``, and nothing half-written in the run directory. Ctrl-C ends a run with exit code 130 and one line.

The case-by-case coverage (every kind of bad row, config key and path) is in ``tests/unit/test_bad_input.py``,
in process; these tests check what only a real process shows (stderr, the exit status, signals).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
HELPSTEER = ROOT / "tests" / "fixtures" / "helpsteer_sample.jsonl"


def sipo_command() -> list[str]:
    script = Path(sys.executable).with_name("sipo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sipo"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SIPO_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", SIPO_NO_PROGRESS="1")
    return env


def sipo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*sipo_command(), *args], cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("sipo: error: "), result.stderr[-3000:]
    assert sum(line.startswith("sipo: error:") for line in lines) == 1
    return lines[-1]


def bad_data(tmp_path: Path) -> Path:
    """The fixture's first 5 rows, then a row whose verbosity is a string (line 6)."""
    lines = HELPSTEER.read_text(encoding="utf-8").splitlines()[:5]
    lines.append(lines[0].replace('"verbosity": ', '"verbosity": "high", "old": '))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_data_row(tmp_path):
    data, run_dir = bad_data(tmp_path), tmp_path / "run"
    result = sipo("run", str(SMOKE), f"run_dir={run_dir}", f"data.path={data}", "model.device=cpu")
    line = error_line(result)
    assert line.startswith(f"sipo: error: {data}:6: score column 'verbosity' must be a number, got a string"), line
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert all(f == "config.yaml" or Path(f).name.startswith(".") for f in files), files
    assert not list(run_dir.rglob("manifest.json"))


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    data = bad_data(tmp_path)
    result = sipo("--debug", "run", str(SMOKE), f"run_dir={tmp_path / 'run'}", f"data.path={data}",
                  "model.device=cpu")
    assert result.returncode != 0 and result.returncode != 2
    assert "Traceback" in result.stderr and "DataError" in result.stderr


@pytest.mark.parametrize(("overrides", "fragment"), [
    pytest.param(["sample.grid.explicit=[[0.5,0.4]]"], "config key 'sample.grid.explicit[0]': weights must sum to 1",
                 id="weights"),
    pytest.param(["model.name_or_path=/nonexistent/model"],
                 "config key 'model.name_or_path': model folder '/nonexistent/model'", id="model-path"),
    pytest.param(["data.path=/nonexistent/rows.jsonl"], "/nonexistent/rows.jsonl: no such file or folder (data.path)",
                 id="data-path", marks=pytest.mark.slow),
])
def test_config_mistake_is_the_only_line(tmp_path, overrides, fragment):
    """Mistakes caught before any stage starts print nothing but the error, and write nothing."""
    run_dir = tmp_path / "run"
    result = sipo("run", str(SMOKE), f"run_dir={run_dir}", *overrides)
    line = error_line(result)
    assert fragment in line, line
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not run_dir.exists()


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    line = error_line(sipo("report", str(tmp_path)))
    assert f"{tmp_path / 'config.yaml'}: not found" in line


def test_unknown_stage_name(tmp_path):
    line = error_line(sipo("stage", "r9/sample", str(SMOKE), f"run_dir={tmp_path / 'run'}"))
    assert "unknown stage 'r9/sample'" in line


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "line"), [(signal.SIGINT, 130, "sipo: interrupted;"),
                                                  (signal.SIGTERM, 143, "sipo: terminated (SIGTERM);")],
                         ids=["sigint", "sigterm"])
def test_ctrl_c_ends_with_one_line_and_the_run_resumes(tmp_path, sig, code, line):
    """SIGINT (Ctrl-C) or SIGTERM while the sft stage runs: exit 130 / 143, one line, finished stages kept (prepare
    is not re-run), the lock released."""
    run_dir = tmp_path / "run"
    args = ["run", str(SMOKE), f"run_dir={run_dir}", "model.device=cpu", "sft.train.max_steps=1000"]
    # A shell that starts a job in the background without job control makes it ignore SIGINT, and an ignored signal
    # stays ignored across exec: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen([*sipo_command(), *args], cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (run_dir / "sft" / ".started").is_file():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "sft never started"
        time.sleep(0.05)
    time.sleep(2)  # into the stage's work
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(line)
    assert (run_dir / "prepare" / "manifest.json").is_file()
    assert not (run_dir / "sft" / "manifest.json").exists()
    from sipo.artifacts import RunDir
    from sipo.configure import load_config
    from sipo.pipeline import plan, stages_to_run
    from sipo.runlock import run_lock

    cfg = load_config(SMOKE, args[2:])
    assert [s.id for s in stages_to_run(cfg, RunDir(run_dir), plan(cfg))][0] == "sft"
    with run_lock(run_dir):  # released by the interrupted run
        pass
