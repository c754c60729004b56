"""Seeing a run train: experiment trackers, the run's log file, and per-stage training metrics.

- ``train.report_to`` (e.g. ``[tensorboard]``, ``[wandb]``, ``[trackio]``: any integration transformers knows; empty
  by default) is handed to every Trainer the training stages build (sft, dpo, realign, dpo_lw, modpo), with the
  run name ``<run folder>/<stage id>/<adapter>`` and per-step logs (``train.logging_steps``): losses, and for the
  preference losses the implicit rewards (chosen, rejected, margins, accuracies). TensorBoard event files go to
  ``RUN_DIR/tensorboard/<stage id>/<adapter>/``; the other trackers keep their own places.
- :func:`run_log` copies every line the console shows into ``RUN_DIR/run.log`` (appended, one header per command
  that runs a stage; a command that only finds every stage finished writes nothing).
- :func:`stage_tracking` collects each Trainer's logged steps while a stage runs, and :meth:`StageTracking.summary`
  gives the manifest's ``metrics``: per adapter the number of logged steps, the first, last, lowest and mean loss,
  the last implicit-reward accuracy and margin, and the loss curve (at most :data:`CURVE_POINTS` points).

The stage in progress is held in a context variable, so the training code reads it without the stages passing it
down (tracking never changes what is trained, so it is not part of any fingerprint).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CURVE_POINTS = 20
"""Most loss-curve points kept per adapter in a manifest (evenly spaced over the logged steps, last one kept)."""

TRAINER_SCRATCH_MARK = ".trainer."
"""The training wrappers name their scratch folder ``.<output name>.trainer.<random>``; the output name (an
objective, a weights tag, ``model``) labels the adapter in run names and metrics."""


@dataclass
class StageTracking:
    """What the training code of one stage reports to."""

    run_name: str
    report_to: list[str]
    logging_steps: int
    tensorboard_dir: Path
    steps: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """Adapter label -> the logged dicts of its training steps (``step`` included)."""

    def label_of(self, output_dir: str | Path) -> str:
        name = Path(output_dir).name
        if TRAINER_SCRATCH_MARK in name:
            return name.split(TRAINER_SCRATCH_MARK, 1)[0].lstrip(".") or "train"
        return name or "train"

    def summary(self) -> dict[str, Any]:
        """The manifest's ``metrics`` (see the module docstring); empty when the stage trained nothing."""
        return {label: summarize_steps(records) for label, records in sorted(self.steps.items()) if records}


def summarize_steps(records: list[Mapping[str, float]]) -> dict[str, Any]:
    """Loss-curve summary of one Trainer's per-step logs. Pure."""
    losses = [(int(r["step"]), float(r["loss"])) for r in records if "loss" in r and math.isfinite(r["loss"])]
    out: dict[str, Any] = {"logged_steps": len(losses)}
    if losses:
        values = [v for _, v in losses]
        out.update(first_loss=values[0], last_loss=values[-1], min_loss=min(values),
                   mean_loss=math.fsum(values) / len(values))
        stride = max(1, math.ceil(len(losses) / CURVE_POINTS))
        curve = losses[::stride]
        if curve[-1] != losses[-1]:
            curve.append(losses[-1])
        out["loss_curve"] = [[step, round(value, 6)] for step, value in curve]
    for key in ("rewards/accuracies", "rewards/margins"):
        last = [r[key] for r in records if key in r]
        if last:
            out["last_" + key.split("/")[1]] = float(last[-1])
    return out


_CURRENT: contextvars.ContextVar[StageTracking | None] = contextvars.ContextVar("sipo_stage_tracking", default=None)
_RUN_LOG: contextvars.ContextVar[Any] = contextvars.ContextVar("sipo_run_log", default=None)


def current() -> StageTracking | None:
    """The tracking of the stage in progress (None outside :func:`stage_tracking`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def stage_tracking(cfg: Any, run_root: str | Path, stage_id: str) -> Iterator[StageTracking]:
    """Make ``train.report_to`` and ``train.logging_steps`` apply to the Trainers built inside the block."""
    root = Path(run_root)
    train = getattr(cfg, "train", None)
    tracking = StageTracking(
        run_name=f"{root.name}/{stage_id}",
        report_to=list(getattr(train, "report_to", None) or []),
        logging_steps=int(getattr(train, "logging_steps", 1) or 1),
        tensorboard_dir=root / "tensorboard" / stage_id,
    )
    token = _CURRENT.set(tracking)
    log = _RUN_LOG.get()
    if log is not None:
        log.activate()
    try:
        yield tracking
    finally:
        _CURRENT.reset(token)


def trainer_arguments(output_dir: str | Path) -> dict[str, Any]:
    """``TrainingArguments`` fields that tracking decides for a Trainer whose scratch folder is ``output_dir``
    (nothing outside a stage: the callers' defaults stand)."""
    tracking = current()
    if tracking is None:
        return {}
    return {"report_to": tracking.report_to or "none",
            "run_name": f"{tracking.run_name}/{tracking.label_of(output_dir)}",
            "logging_steps": tracking.logging_steps}


def attach(trainer: Any) -> None:
    """After a Trainer is built: point its TensorBoard writer into the run directory (transformers would write
    under the scratch ``output_dir``, which is deleted) and record its logged steps for the manifest."""
    from transformers.trainer_callback import TrainerCallback

    tracking = current()
    if tracking is None:
        return
    label = tracking.label_of(trainer.args.output_dir)
    records = tracking.steps.setdefault(label, [])
    records.clear()  # a unit trained again (a resumed stage) reports its last training only
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback":
            callback.logging_dir = str(tracking.tensorboard_dir / label)
            callback.tb_writer = None

    class _Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "train_runtime" not in logs:
                records.append({"step": int(state.global_step),
                                **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}})

    trainer.add_callback(_Record())


class _RunLogHandler(logging.Handler):
    """Writes records to ``RUN_DIR/run.log`` once a stage starts running (records from before are kept in memory
    and written then): a command that runs no stage (a finished run checked again, a mistake found before any
    work) writes nothing under the run directory."""

    def __init__(self, root: Path, formatter: logging.Formatter):
        super().__init__()
        self.root = root
        self.setFormatter(formatter)
        self.pending: list[str] = [f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} sipo {' '.join(sys.argv[1:])}"]
        self.stream: Any = None
        self.disabled = False
        self.active = False

    def write(self, line: str) -> None:
        if self.disabled:
            return
        try:
            if self.stream is None:
                if not self.active or not self.root.is_dir():
                    self.pending.append(line)
                    return
                self.stream = open(self.root / "run.log", "a", encoding="utf-8")  # closed in close()
                for old in self.pending:
                    self.stream.write(old + "\n")
                self.pending = []
            self.stream.write(line + "\n")
            self.stream.flush()
        except OSError:
            # Read-only storage (a finished run checked in place) or a full disk: the console still has every
            # line, and the log must never be what stops a run.
            self.disabled = True

    def activate(self) -> None:
        """A stage is running: from now on lines go to the file."""
        self.active = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        super().close()


@contextlib.contextmanager
def run_log(run_root: str | Path) -> Iterator[None]:
    """Copy what the ``sipo`` logger shows on the console into ``RUN_DIR/run.log`` during the block (rank 0 only);
    an error that ends the command is written there too, as the console shows it."""
    from sipo.logging_utils import process_rank

    if process_rank()[0] != 0:
        yield
        return
    console = next((h for h in logging.getLogger().handlers if h.formatter is not None), None)
    formatter = console.formatter if console is not None else logging.Formatter("%(asctime)s %(message)s",
                                                                                 datefmt="%H:%M:%S")
    handler = _RunLogHandler(Path(run_root), formatter)
    logger = logging.getLogger("sipo")
    logger.addHandler(handler)
    token = _RUN_LOG.set(handler)
    try:
        yield
    except BaseException as exc:
        from sipo.errors import SipoError

        if isinstance(exc, SipoError):
            handler.write("sipo: error: " + " ".join(str(exc).split()))
        elif isinstance(exc, KeyboardInterrupt):
            handler.write("sipo: interrupted")
        else:
            handler.write(f"sipo: failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        _RUN_LOG.reset(token)
        logger.removeHandler(handler)
        handler.close()


def check_report_to(names: list[str]) -> None:
    """Refuse a tracker transformers does not know, or whose package is missing (before any stage runs)."""
    from transformers.integrations import integration_utils

    from sipo.errors import ConfigError

    known = sorted(integration_utils.INTEGRATION_TO_CALLBACK)
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in known:
            raise ConfigError(f"config key 'train.report_to': unknown tracker '{name}' (transformers knows "
                              f"{', '.join(known)})")
        available = getattr(integration_utils, f"is_{name.replace('-', '_')}_available", None)
        if available is not None and not available():
            raise ConfigError(f"config key 'train.report_to': {name} is not installed (pip install {name})")
