"""``accelerate launch`` with one process runs the smoke preset on CUDA (configs/accelerate/ddp.yaml), in
bfloat16. The CPU's accelerate launches are tested in tests/pipeline/test_multiprocess.py (two processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_accelerate_launch_runs_the_smoke_preset_on_cuda(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIPO_NO_PROGRESS": "1", "SIPO_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "1",
               "-m", "sipo", "run", str(REPO / "configs" / "smoke.yaml"), f"run_dir={run_dir}",
               "model.device=cuda", "model.dtype=bfloat16"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert set(report["methods"]) == {"sft", "dpo", "dpo_soups", "mod", "sipo"}
    manifest = json.loads((run_dir / "dpo" / "manifest.json").read_text())
    assert manifest["processes"] == 1
