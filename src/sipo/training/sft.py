"""Supervised fine-tuning with trl's ``SFTTrainer``: full fine-tuning, loss on the completion tokens only.

Used by the ``sft`` stage (the synthetic benchmark trains its tiny model from scratch). Writes an ordinary Hugging
Face model folder (``config.json``, ``model.safetensors``, generation config) plus the tokenizer, atomically.

Example::

    metrics = train_sft(model_path="runs/demo/sft/init", tokenizer=tok, examples=rows, out_dir="runs/demo/sft/model",
                        train=TrainSettings(learning_rate=1e-3), seed=0, device="cpu", dtype="float32")
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from sipo.config import TrainSettings
from sipo.errors import DataError
from sipo.tracking import Tracking, summarize_steps
from sipo.training import (
    atomic_output_dir,
    quiet_trainer,
    resolve_dtype,
    training_arguments_kwargs,
    training_tokenizer,
)

logger = logging.getLogger(__name__)


class _SFTTrainer(SFTTrainer):
    """trl's ``SFTTrainer`` whose length grouping does not depend on the number of processes.

    transformers groups by length in chunks of the *per-process* batch, so N processes would see other batches than
    one process. Grouping over the global batch (per-process batch x processes x accumulation) gives the same
    index order for any N; accelerate then hands each process its slice of every global batch.
    """

    def _get_train_sampler(self, train_dataset=None):
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        if args.train_sampling_strategy != "group_by_length" or dataset is None or "input_ids" not in getattr(
            dataset, "column_names", ()
        ):
            return super()._get_train_sampler(train_dataset)
        global_batch = args.train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
        return LengthGroupedSampler(global_batch, lengths=[len(ids) for ids in dataset["input_ids"]])


def to_trl_sft_config(
    train: TrainSettings,
    *,
    output_dir: str | Path,
    seed: int,
    device: str | torch.device,
    dtype: str | torch.dtype,
    logging_steps: int = 10,
    tracking: Tracking | None = None,
) -> SFTConfig:
    """Map our training settings onto ``trl.SFTConfig``: completion-only loss, no packing, no further truncation
    (examples arrive tokenized and truncated, see :func:`train_sft`); ``output_dir`` is scratch space.

    Batches group examples of similar length (``group_by_length``): SFT data mixes 10- and 150-token sequences, and
    padding every batch to its longest member wasted over half of the compute on the synthetic benchmark."""
    return SFTConfig(
        **training_arguments_kwargs(
            train,
            output_dir=output_dir,
            seed=seed,
            device=device,
            dtype=dtype,
            logging_steps=logging_steps,
            full_fine_tuning=True,
            tracking=tracking,
        ),
        completion_only_loss=True,
        packing=False,
        train_sampling_strategy="group_by_length",
        max_length=None,
    )


def _sft_dataset(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int | None,
    max_response_tokens: int | None,
) -> Dataset:
    """Tokenize with the project's shared rule (:func:`sipo.models.loading.encode_prompt` / ``encode_response``):
    the model learns exactly the sequences that decoding and scoring will see, EOS after each completion."""
    from sipo.models.loading import encode_prompt, encode_response

    if not examples:
        raise DataError("no SFT examples to train on")
    rows = []
    for i, example in enumerate(examples, start=1):
        for key in ("prompt", "completion"):
            if not isinstance(example.get(key), str):
                raise DataError(f"SFT example {i}: '{key}' must be a string, got {type(example.get(key)).__name__}")
        prompt_ids = encode_prompt(tokenizer, example["prompt"], max_prompt_tokens)
        completion_ids = encode_response(tokenizer, example["completion"], max_response_tokens)
        rows.append(
            {
                "input_ids": prompt_ids + completion_ids,
                "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
            }
        )
    return Dataset.from_list(rows)


def train_sft(
    *,
    model_path: str | Path,
    tokenizer: PreTrainedTokenizerBase | str | Path,
    examples: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    train: TrainSettings,
    seed: int,
    device: str,
    dtype: str | torch.dtype,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
    logging_steps: int = 10,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Fine-tune every weight of ``model_path`` on ``(prompt, completion)`` pairs and save it to ``out_dir``.

    Args:
        model_path: the model folder to start from (a random initialisation for the synthetic benchmark).
        tokenizer: a tokenizer or its folder; saved with the model. Its pad token is set to EOS if it has none.
        examples: rows with ``prompt`` (formatted prompt text) and ``completion`` (response text; EOS is
            appended). The loss covers the completion tokens and EOS only.
        out_dir: the model folder to write (replaced atomically).
        train: optimisation settings.
        seed: seeds the data order.
        device: ``cpu`` or a CUDA device string; under ``accelerate launch`` the Trainer places each process.
        dtype: ``float32`` or ``bfloat16`` (float16 full fine-tuning is refused).
        max_prompt_tokens, max_response_tokens: truncation of each part (None keeps all).
        logging_steps: optimizer steps between trainer log lines.
        trust_remote_code: run code shipped with the model (``model.trust_remote_code``; off by default).
        allow_pickle: load pickle (``.bin``) weights when there are no safetensors (``model.allow_pickle``).
        tracking: where the Trainer reports (a pipeline stage's ``train.report_to``); its logged loss curve then
            joins the returned metrics.

    Returns:
        ``{"steps", "examples", "train_loss", "seconds"}``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = training_tokenizer(tokenizer, trust_remote_code)
    dataset = _sft_dataset(examples, tokenizer, max_prompt_tokens, max_response_tokens)
    from sipo.models.loading import model_load_errors

    with model_load_errors(model_path):
        model = AutoModelForCausalLM.from_pretrained(
            str(model_path), dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.trainer.", dir=out_dir.parent) as scratch:
        args = to_trl_sft_config(
            train, output_dir=scratch, seed=seed, device=device, dtype=dtype, logging_steps=logging_steps,
            tracking=tracking,
        )
        logged: list[dict[str, float]] = []
        trainer = _SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=tracking.callbacks(logged) if tracking is not None else None)
        quiet_trainer(trainer)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        accelerator = trainer.accelerator
        state_dict = accelerator.get_state_dict(trainer.model)
        with atomic_output_dir(accelerator, out_dir) as tmp:
            if accelerator.is_main_process:
                unwrapped = accelerator.unwrap_model(trainer.model)
                unwrapped.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
                tokenizer.save_pretrained(str(tmp))
    metrics = {
        "steps": int(trainer.state.global_step),
        "examples": len(examples),
        "train_loss": float(result.training_loss),
        "seconds": round(seconds, 3),
        **(summarize_steps(logged) if tracking is not None else {}),
    }
    logger.info(
        "sft: %d steps on %d examples in %.1fs, mean loss %.4f -> %s",
        metrics["steps"], len(examples), seconds, metrics["train_loss"], out_dir,
    )
    return metrics
