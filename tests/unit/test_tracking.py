"""Tracking without a model: the loss-curve summary, the run log, and the check of ``train.report_to``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sipo.configure import load_config
from sipo.errors import ConfigError
from sipo.tracking import CURVE_POINTS, StageTracking, run_log, stage_tracking, summarize_steps

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_summary_of_a_loss_curve():
    records = [{"step": s, "loss": 1.0 / s, "rewards/accuracies": s / 100, "rewards/margins": 0.1 * s}
               for s in range(1, 101)]
    summary = summarize_steps(records)
    assert summary["logged_steps"] == 100
    assert summary["first_loss"] == 1.0 and summary["last_loss"] == summary["min_loss"] == 0.01
    assert summary["mean_loss"] == pytest.approx(sum(1.0 / s for s in range(1, 101)) / 100)
    assert len(summary["loss_curve"]) <= CURVE_POINTS + 1
    assert summary["loss_curve"][0] == [1, 1.0] and summary["loss_curve"][-1] == [100, 0.01]
    assert summary["last_accuracies"] == 1.0 and summary["last_margins"] == pytest.approx(10.0)
    assert summarize_steps([{"step": 1, "grad_norm": 2.0}]) == {"logged_steps": 0}


def test_adapter_labels_come_from_the_trainers_scratch_folder(tmp_path):
    tracking = StageTracking("run/dpo", [], 1, tmp_path)
    assert tracking.label_of(tmp_path / ".correctness.trainer.ab12") == "correctness"
    assert tracking.label_of(tmp_path / ".correctness0.5-verbosity0.5.trainer.x") == "correctness0.5-verbosity0.5"
    assert tracking.label_of(tmp_path / "elsewhere") == "elsewhere"


def test_run_log_waits_for_a_stage_and_records_the_error(tmp_path):
    logger = logging.getLogger("sipo.test")
    root = tmp_path / "run"
    with pytest.raises(ConfigError), run_log(root):
        logger.warning("before the folder exists")
        root.mkdir()
        logger.warning("after")
        with stage_tracking(None, root, "prepare"):  # a stage runs: the log is written from here on
            raise ConfigError("config key 'x': bad")
    lines = (root / "run.log").read_text().splitlines()
    assert lines[0].startswith("===== ")
    assert lines[1].endswith("before the folder exists") and lines[2].endswith("after")
    assert lines[3] == "sipo: error: config key 'x': bad"
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("sipo").handlers)


def test_a_command_that_runs_no_stage_writes_no_log(tmp_path):
    with pytest.raises(ConfigError), run_log(tmp_path / "never"):
        raise ConfigError("no")
    assert not (tmp_path / "never").exists()
    with run_log(tmp_path):  # every stage finished: nothing runs, nothing is written
        logging.getLogger("sipo.test").info("prepare      skipped")
    assert not (tmp_path / "run.log").exists()


def test_report_to_is_checked():
    assert load_config(SMOKE, ["train.report_to=[tensorboard]"]).train.report_to == ["tensorboard"]
    with pytest.raises(ConfigError, match="'train.report_to': unknown tracker 'tensorbord'"):
        load_config(SMOKE, ["train.report_to=[tensorbord]"])
    with pytest.raises(ConfigError, match="train.logging_steps"):
        load_config(SMOKE, ["train.logging_steps=0"])


def test_run_log_on_read_only_storage_is_skipped(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def refuse(file, mode="r", *args, **kwargs):
        if str(file).endswith("run.log"):
            raise PermissionError(30, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    with run_log(tmp_path), stage_tracking(None, tmp_path, "prepare"):
        logging.getLogger("sipo.test").warning("still runs")
    assert not (tmp_path / "run.log").exists()
