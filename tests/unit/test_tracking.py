"""Tracking without a model: the loss-curve summary, the run log, and the check of ``train.report_to``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sipo.configure import load_config
from sipo.errors import ConfigError
from sipo.tracking import CURVE_POINTS, STAGE_STARTS, Tracking, run_log, summarize_steps

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_summary_of_a_loss_curve():
    records = [{"step": s, "loss": 1.0 / s, "rewards/accuracies": s / 100, "rewards/margins": 0.1 * s}
               for s in range(1, 101)]
    summary = summarize_steps(records)
    assert summary["logged_steps"] == 100 and summary["min_loss"] == 0.01
    assert summary["mean_loss"] == pytest.approx(sum(1.0 / s for s in range(1, 101)) / 100)
    assert len(summary["loss_curve"]) <= CURVE_POINTS + 1
    assert summary["loss_curve"][0] == [1, 1.0] and summary["loss_curve"][-1] == [100, 0.01]
    assert summarize_steps([{"step": 1, "grad_norm": 2.0}]) == {"logged_steps": 0}


def test_a_stage_names_each_model_it_trains(tmp_path):
    """The run name and TensorBoard folder of an adapter come from the stage and the adapter's name, and
    TensorBoard is a callback of ours (writing into the run directory), the other trackers transformers'."""
    cfg = load_config(SMOKE, [f"run_dir={tmp_path / 'run'}", "train.report_to=[tensorboard]", "train.logging_steps=3"])
    tracking = Tracking.for_stage(cfg, tmp_path / "run", "r1/realign").for_adapter("correctness")
    assert tracking.run_name == "run/r1/realign/correctness"
    assert tracking.tensorboard_dir == tmp_path / "run" / "tensorboard" / "r1/realign" / "correctness"
    assert tracking.arguments() == {"report_to": "none", "run_name": "run/r1/realign/correctness", "logging_steps": 3}
    recorder, tensorboard = tracking.callbacks([])
    assert tensorboard.logging_dir == str(tracking.tensorboard_dir)
    assert len(Tracking("x").callbacks([])) == 1


def _stage_starts(logger: logging.Logger) -> None:
    logger.warning("prepare      running: ...", extra={STAGE_STARTS: True})  # (the CLI logs it at INFO)


def test_run_log_waits_for_a_stage_and_records_the_error(tmp_path):
    logger = logging.getLogger("sipo.test")
    root = tmp_path / "run"
    with pytest.raises(ConfigError), run_log(root):
        logger.warning("before the folder exists")
        root.mkdir()
        logger.warning("after")
        _stage_starts(logger)  # a stage runs: the log is written from here on
        raise ConfigError("config key 'x': bad")
    lines = (root / "run.log").read_text().splitlines()
    assert lines[0].startswith("===== ")
    assert lines[1].endswith("before the folder exists") and lines[2].endswith("after")
    assert lines[3].endswith("prepare      running: ...")
    assert lines[4] == "sipo: error: config key 'x': bad"
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
    with run_log(tmp_path):
        _stage_starts(logging.getLogger("sipo.test"))
        logging.getLogger("sipo.test").warning("still runs")
    assert not (tmp_path / "run.log").exists()
