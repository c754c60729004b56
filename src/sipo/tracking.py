"""Seeing a run train: experiment trackers, the run's log file, and the loss summary of each trained model.

- ``train.report_to`` (e.g. ``[tensorboard]``, ``[wandb]``, ``[trackio]``: any integration transformers knows; empty
  by default) is handed to every Trainer the training stages build (sft, dpo, realign, dpo_lw, modpo, ...), with the
  run name ``<run folder>/<stage id>/<adapter>`` and per-step logs (``train.logging_steps``): losses, and for the
  preference losses the implicit rewards (chosen, rejected, margins, accuracies). TensorBoard event files go to
  ``RUN_DIR/tensorboard/<stage id>/<adapter>/``; the other trackers keep their own places.
- :func:`run_log` copies every line the console shows into ``RUN_DIR/run.log`` (appended, one header per command
  that runs a stage; a command that only finds every stage finished writes nothing).
- :func:`summarize_steps` turns a Trainer's logged steps into the loss curve that joins the model's training
  metrics in its stage's manifest (``counts.metrics_<adapter>``): logged steps, lowest and mean logged loss, and the
  curve (at most :data:`CURVE_POINTS` points).

Everything goes through transformers' own channels: a :class:`Tracking` value that a stage hands to the training
code (the pipeline builds one per stage, :meth:`Tracking.for_adapter` names each model) becomes the Trainer's
``report_to`` / ``run_name`` / ``logging_steps`` and its callbacks (:meth:`Tracking.callbacks`: a step recorder,
and a ``TensorBoardCallback`` writing into the run directory). Tracking never changes what is trained, so it is
not part of any fingerprint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipo.errors import ConfigError, SipoError
from sipo.interrupt import Terminated
from sipo.logging_utils import process_rank

CURVE_POINTS = 20
"""Most loss-curve points kept per adapter in a manifest (evenly spaced over the logged steps, last one kept)."""

STAGE_STARTS = "sipo_stage_starts"
"""The ``extra`` flag of the log record that announces a stage running (``run.log`` is written from then on)."""


@dataclass(frozen=True)
class Tracking:
    """How the Trainers of one stage (and, with :meth:`for_adapter`, of one model) report."""

    run_name: str
    report_to: tuple[str, ...] = ()
    logging_steps: int = 1
    tensorboard_dir: Path | None = None

    @classmethod
    def for_stage(cls, cfg: Any, run_root: str | Path, stage_id: str) -> Tracking:
        """``train.report_to`` and ``train.logging_steps`` for the stage ``stage_id`` of the run in ``run_root``."""
        root = Path(run_root)
        train = getattr(cfg, "train", None)
        return cls(run_name=f"{root.name}/{stage_id}", report_to=tuple(getattr(train, "report_to", None) or ()),
                   logging_steps=int(getattr(train, "logging_steps", 1) or 1),
                   tensorboard_dir=root / "tensorboard" / stage_id)

    def for_adapter(self, label: str) -> Tracking:
        """The tracking of one model the stage trains (an objective, a weights tag, ``model``)."""
        folder = self.tensorboard_dir / label if self.tensorboard_dir is not None else None
        return dataclasses.replace(self, run_name=f"{self.run_name}/{label}", tensorboard_dir=folder)

    def arguments(self) -> dict[str, Any]:
        """``TrainingArguments`` fields: the trackers transformers builds itself, the run name, the log rate
        (TensorBoard is one of :meth:`callbacks`, so that its files land in the run directory)."""
        others = [name for name in self.report_to if name != "tensorboard"]
        return {"report_to": others or "none", "run_name": self.run_name, "logging_steps": self.logging_steps}

    def callbacks(self, records: list[dict[str, float]]) -> list[Any]:
        """The Trainer's callbacks: one that appends each logged step to ``records``, and TensorBoard's."""
        from transformers.integrations import TensorBoardCallback
        from transformers.trainer_callback import TrainerCallback

        class _RecordSteps(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs and "train_runtime" not in logs:
                    records.append({"step": int(state.global_step),
                                    **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}})

        callbacks: list[Any] = [_RecordSteps()]
        if "tensorboard" in self.report_to:
            tensorboard = TensorBoardCallback()
            if self.tensorboard_dir is not None:
                tensorboard.logging_dir = str(self.tensorboard_dir)
            callbacks.append(tensorboard)
        return callbacks


def summarize_steps(records: list[Mapping[str, float]]) -> dict[str, Any]:
    """Loss-curve summary of one Trainer's per-step logs. Pure."""
    losses = [(int(r["step"]), float(r["loss"])) for r in records if "loss" in r and math.isfinite(r["loss"])]
    out: dict[str, Any] = {"logged_steps": len(losses)}
    if losses:
        values = [v for _, v in losses]
        out.update(min_loss=min(values), mean_loss=math.fsum(values) / len(values))
        stride = max(1, math.ceil(len(losses) / CURVE_POINTS))
        curve = losses[::stride]
        if curve[-1] != losses[-1]:
            curve.append(losses[-1])
        out["loss_curve"] = [[step, round(value, 6)] for step, value in curve]
    return out


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
        if getattr(record, STAGE_STARTS, False):
            self.activate()
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
    if process_rank()[0] != 0:
        yield
        return
    console = next((h for h in logging.getLogger().handlers if h.formatter is not None), None)
    formatter = console.formatter if console is not None else logging.Formatter("%(asctime)s %(message)s",
                                                                                 datefmt="%H:%M:%S")
    handler = _RunLogHandler(Path(run_root), formatter)
    logger = logging.getLogger("sipo")
    logger.addHandler(handler)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SipoError):
            handler.write("sipo: error: " + " ".join(str(exc).split()))
        elif isinstance(exc, KeyboardInterrupt):
            handler.write("sipo: interrupted")
        elif isinstance(exc, Terminated):
            handler.write("sipo: terminated (SIGTERM)")
        else:
            handler.write(f"sipo: failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()


def check_report_to(names: list[str]) -> None:
    """Refuse a tracker transformers does not know, or whose package is missing (before any stage runs)."""
    from transformers.integrations import integration_utils

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
