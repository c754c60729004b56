"""Training wrappers over trl: LoRA DPO adapters (:mod:`sipo.training.dpo`) and supervised fine-tuning
(:mod:`sipo.training.sft`).

This module holds what both share: the mapping of :class:`sipo.config.TrainSettings` onto
``transformers.TrainingArguments`` fields, the dtype/precision rule, and the atomic, rank-0-only save of an output
folder. Import the trainers from their modules (``from sipo.training.dpo import train_dpo_adapter``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sipo.artifacts import atomic_path
from sipo.config import Dtype, TrainSettings
from sipo.errors import ConfigError
from sipo.interrupt import check_stop
from sipo.logging_utils import process_rank, progress_enabled
from sipo.tracking import Tracking

logger = logging.getLogger(__name__)

TORCH_DTYPES = {name: getattr(torch, name) for name in Dtype.values()}
"""``model.dtype`` -> the torch dtype of the same name."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A :class:`~sipo.config.Dtype` name (or a torch dtype) -> the torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in TORCH_DTYPES.values():
            raise ConfigError(f"config key 'model.dtype': unsupported dtype {dtype}")
        return dtype
    return TORCH_DTYPES[Dtype.check("model.dtype", dtype).value]


def is_cpu(device: str | torch.device) -> bool:
    return torch.device(device).type == "cpu"


def training_arguments_kwargs(
    train: TrainSettings,
    *,
    output_dir: str | Path,
    seed: int,
    device: str | torch.device,
    dtype: str | torch.dtype,
    logging_steps: int = 10,
    full_fine_tuning: bool = False,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """The ``TrainingArguments`` fields that our settings decide, shared by the DPO and SFT configs.

    Precision follows the model's dtype, one dtype everywhere: float32 trains in float32; bfloat16 loads the
    weights in bf16 and autocasts in bf16; float16 autocasts in fp16 (CUDA only, and only for LoRA, whose adapter
    weights peft keeps in float32: full fine-tuning of fp16 weights cannot unscale fp16 gradients).
    Nothing is reported (``report_to="none"``) unless ``tracking`` (a pipeline stage's ``train.report_to``, see
    :mod:`sipo.tracking`) says so, and no checkpoint is saved (``save_strategy="no"``);
    ``output_dir`` is only a scratch folder. The device placement (one process or ``accelerate launch``) is left to
    the Trainer; ``use_cpu`` is set for ``device="cpu"``.
    """
    torch_dtype = resolve_dtype(dtype)
    cpu = is_cpu(device)
    if torch_dtype == torch.float16 and (cpu or full_fine_tuning):
        where = "on CPU" if cpu else "for full fine-tuning"
        raise ConfigError(f"config key 'model.dtype': float16 training is not supported {where}; use bfloat16 or float32")
    if not 0.0 <= train.warmup_ratio < 1.0:
        raise ConfigError(f"config key 'warmup_ratio': must be in [0, 1), got {train.warmup_ratio:g}")
    return {
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        "learning_rate": train.learning_rate,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps,
        "per_device_train_batch_size": per_process_batch_size(train.batch_size),
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        # transformers 5 reads a warmup_steps value below 1 as a share of the training steps.
        "warmup_steps": float(train.warmup_ratio),
        "weight_decay": train.weight_decay,
        "lr_scheduler_type": train.lr_scheduler,
        _checkpointing_field(): train.gradient_checkpointing,
        "bf16": torch_dtype == torch.bfloat16,
        "fp16": torch_dtype == torch.float16,
        "use_cpu": cpu,
        "logging_strategy": "steps",
        "logging_steps": logging_steps,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "push_to_hub": False,
        "dataloader_num_workers": 0,
        **(tracking.arguments() if tracking is not None else {}),  # train.report_to / train.logging_steps
    }


def per_process_batch_size(batch_size: int, world_size: int | None = None) -> int:
    """Each process's share of ``train.batch_size``, which counts examples per optimizer step over all processes
    (before gradient accumulation).

    With the same global batch, ``accelerate launch`` with N processes feeds each process every N-th slice of the
    batch the single process would see and DDP averages the gradients, so the update equals the one-process update
    up to float rounding (see docs/scale.md for the partial last batch of an epoch).

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the number of processes.
    """
    if world_size is None:
        world_size = process_rank()[1]
    if batch_size % world_size:
        raise ConfigError(f"config key 'train.batch_size': {batch_size} examples per step cannot be split evenly "
                          f"over {world_size} processes; use a multiple of {world_size}")
    return batch_size // world_size


def _checkpointing_field() -> str:
    """transformers 5.x renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name warns)."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


@contextlib.contextmanager
def atomic_output_dir(accelerator: Any, out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir`` that is renamed onto it when the block succeeds.

    Safe under ``accelerate launch``: every rank enters the block (so collective state-dict gathers work) and gets
    the same path, only the main process creates and renames the folder, and all ranks wait for the rename.
    Write into the folder from the main process only.
    """
    from accelerate.utils import broadcast_object_list

    if accelerator.is_main_process:
        with atomic_path(out_dir) as tmp:
            paths = [str(tmp)]
            if accelerator.num_processes > 1:
                broadcast_object_list(paths, from_process=0)
            yield tmp
            accelerator.wait_for_everyone()
    else:
        paths = [None]
        broadcast_object_list(paths, from_process=0)
        yield Path(paths[0])
        accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability of ``model`` to 0 (done on the base model before LoRA wraps it, so that the
    reference pass is deterministic while LoRA's own dropout, added later, still applies)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _format_logs(logs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())


def quiet_trainer(trainer: Any) -> None:
    """Route the Trainer's metric dicts to our logger instead of stdout (library code never prints).

    A progress bar stays when progress is enabled (rank 0, ``SIPO_NO_PROGRESS`` unset); the metrics it would
    print go to the ``sipo.training`` logger at DEBUG, with one INFO line at the end of training.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class _LogMetrics(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            check_stop()  # a stop request that a __del__ swallowed ends training at the next step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                level = logging.INFO if "train_runtime" in logs else logging.DEBUG
                logger.log(level, "step %d/%d: %s", state.global_step, state.max_steps, _format_logs(logs))

    class _Progress(ProgressCallback):
        def on_step_end(self, args, state, control, **kwargs):
            check_stop()
            return super().on_step_end(args, state, control, **kwargs)

        def on_log(self, args, state, control, logs=None, **kwargs):
            _LogMetrics().on_log(args, state, control, logs=logs)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_Progress() if progress_enabled() else _LogMetrics())


def training_tokenizer(tokenizer: Any, trust_remote_code: bool) -> Any:
    """A tokenizer (or its folder, loaded) with a pad token: EOS when it has none (both trainers pad batches)."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
