"""LoRA preference training with trl's ``DPOTrainer`` and the losses of :mod:`sipo.losses`.

One entry point, :func:`train_dpo_adapter`, trains one LoRA adapter on the base model and writes it (and only it)
to ``out_dir`` as ``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
``PeftModel.from_pretrained(base, out_dir)``. Its settings are one :class:`~sipo.training.settings.AdapterTraining`;
it serves four stages and baselines through ``settings.loss`` (a :class:`~sipo.training.settings.LossSpec`):

- ``dpo``: round-1 DPO per objective (reference = the base model);
- ``dpo_nll``: SIPO re-alignment, DPO + alpha * NLL(chosen), started from a round-1 adapter (``init_adapter``)
  and referenced to that round-1 model (``reference="init"``);
- ``dpo_lw``: DPO-LW, ``sum_o w_o DPO_o`` with each objective's label of the pair (examples carry
  ``preference_signs``: one of +1 / -1 / 0 per objective, +1 meaning that objective prefers ``chosen``);
- ``modpo``: MODPO, DPO on the first objective with a margin from the others (examples carry ``margin``: the
  N - 1 values ``r_o(x, chosen) - r_o(x, rejected)`` for o = 2..N, implicit rewards including beta).

The loss hook: trl 1.x computes log-probs and the loss inline in ``DPOTrainer._compute_loss``, with no narrower
hook taking the four log-prob tensors, so :class:`SipoDPOTrainer` overrides ``compute_loss``: one forward of the
policy through trl's fused LM head (``fused_lm_head=True``, which returns per-token log-probs), the reference
log-probs through trl's public ``compute_ref_log_probs`` (which picks the base model, the frozen ``ref`` adapter or
a separate reference model exactly as trl does), then our pure loss. Everything else (data preparation,
collation, PEFT wrapping, reference-adapter copy, distributed training) is trl's.

Example::

    settings = AdapterTraining(model=ModelSettings("runs/demo/sft/model"), train=TrainSettings(), beta=0.1,
                               lora=LoraSettings())
    metrics = train_dpo_adapter(settings, tokenizer=tok, examples=rows, out_dir="runs/demo/dpo/correctness")
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, TrainerCallback
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from sipo import losses as sipo_losses
from sipo.config import TrainSettings
from sipo.errors import DataError
from sipo.logging_utils import process_rank
from sipo.tracking import Tracking, summarize_steps
from sipo.training import (
    atomic_output_dir,
    disable_dropout,
    quiet_trainer,
    resolve_dtype,
    training_arguments_kwargs,
    training_tokenizer,
)
from sipo.training.settings import (  # noqa: F401 (re-exported: the example columns and loss names)
    LOSSES,
    MARGIN,
    PREFERENCE_SIGNS,
    AdapterTraining,
    LossName,
    LossSpec,
)

logger = logging.getLogger(__name__)

ADAPTER = "default"
"""Name of the trained adapter inside the PeftModel (trl's ``ref`` adapter, if any, is never saved)."""


@dataclass
class PreferenceCollator(DataCollatorForPreference):
    """trl's preference collator, also passing per-example float columns (``margin``, ``preference_signs``)
    through as ``(batch_size, width)`` tensors."""

    extra_columns: tuple[str, ...] = field(default_factory=tuple)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        for name in self.extra_columns:
            output[name] = torch.tensor([example[name] for example in examples], dtype=torch.float32)
        return output


class SipoDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss is one of the pure functions of :mod:`sipo.losses` (see the module docstring).

    ``step_records`` keeps, for every training micro-batch, the loss and the reward statistics (gathered over
    processes), so callers and tests can read exactly what was optimised.
    """

    def __init__(self, *args: Any, loss_spec: LossSpec, **kwargs: Any):
        self.loss_spec = loss_spec
        self.step_records: list[dict[str, float]] = []
        self.pairs_seen = 0
        self._sipo_metrics: dict[str, list[float]] = defaultdict(list)
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Our examples arrive tokenized (see `_preference_dataset`); trl 1.16 would re-tokenize them from text.
        if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for name in self.loss_spec.extra_columns:
            if name not in self._signature_columns:
                self._signature_columns.append(name)

    def sequence_log_probs(self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log-probs of each completion summed over its tokens (prompt and padding masked).

        Shape: ``(2 * batch_size,)``, chosen rows first, as the collator stacks them.
        """
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            use_cache=False,
            fused_lm_head=True,
        )
        seq_len = completion_mask.size(1) - 1
        return outputs.log_probs[:, -seq_len:].sum(dim=1)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise NotImplementedError("SipoDPOTrainer computes losses only; evaluation with outputs is not supported")
        mode = "train" if self.model.training else "eval"
        policy_chosen_logps, policy_rejected_logps = self.sequence_log_probs(model, inputs).chunk(2, dim=0)
        if self.precompute_ref_logps:
            reference_chosen_logps = inputs["ref_chosen_logps"]
            reference_rejected_logps = inputs["ref_rejected_logps"]
        else:
            ref_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "completion_mask")}
            ref_model = self.ref_model if self.ref_model is not None else model
            reference_chosen_logps, reference_rejected_logps = self.compute_ref_log_probs(ref_model, ref_inputs)
        logps = (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)

        spec = self.loss_spec
        batch = sipo_losses.LossBatch(logps, inputs, self.beta, spec.nll_alpha, spec.objective_weights)
        losses, chosen_rewards, rejected_rewards, per_pair = spec.definition.compute(batch)
        extra = {key: self.accelerator.gather_for_metrics(value).mean().item() for key, value in per_pair.items()}
        loss = losses.mean()
        self._record(mode, loss.detach(), chosen_rewards, rejected_rewards, batch, extra)
        return loss

    def _record(self, mode, loss, chosen_rewards, rejected_rewards, batch, extra) -> None:
        gather = self.accelerator.gather_for_metrics
        margins = chosen_rewards - rejected_rewards
        accuracy = self.loss_spec.definition.accuracy(margins, batch)
        all_margins = gather(margins)
        record = {
            "loss": gather(loss).mean().item(),
            "rewards/chosen": gather(chosen_rewards).mean().item(),
            "rewards/rejected": gather(rejected_rewards).mean().item(),
            "rewards/margins": all_margins.mean().item(),
            "rewards/accuracies": gather(accuracy).mean().item(),
            **extra,
        }
        for key, value in record.items():
            if key != "loss":
                self._sipo_metrics[f"{mode}/{key}"].append(value)
        if mode == "train":
            self.step_records.append(record)
            self.pairs_seen += all_margins.numel()  # the last batch of an epoch may be short

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        for key in [k for k in self._sipo_metrics if k.startswith(f"{mode}/")]:
            values = self._sipo_metrics.pop(key)
            logs[prefix + key.split("/", 1)[1]] = sum(values) / len(values)
        super().log(logs, start_time)


def to_trl_dpo_config(
    train: TrainSettings,
    *,
    output_dir: str | Path,
    beta: float,
    seed: int,
    device: str | torch.device,
    dtype: str | torch.dtype,
    max_length: int | None = 1024,
    logging_steps: int = 10,
    tracking: Tracking | None = None,
    precompute_reference: bool = False,
) -> DPOConfig:
    """Map our training settings onto ``trl.DPOConfig`` (the one place that does so).

    ``output_dir`` is scratch space (no checkpoint is saved there). trl's own loss settings (``loss_type``) are left
    at their defaults because :class:`SipoDPOTrainer` computes the loss; dropout is disabled by
    :func:`train_dpo_adapter` on the base model before LoRA is attached, so ``disable_dropout`` is off here and
    LoRA dropout applies.

    ``precompute_reference``: compute the reference log-probs once per example before the first step instead of
    once per example per epoch and per validation pass (see :func:`build_dpo_trainer`).
    """
    return DPOConfig(
        **training_arguments_kwargs(
            train, output_dir=output_dir, seed=seed, device=device, dtype=dtype, logging_steps=logging_steps,
            tracking=tracking,
        ),
        beta=beta,
        max_length=max_length,
        disable_dropout=False,
        precompute_ref_log_probs=precompute_reference,
    )


def _preference_dataset(
    examples: Sequence[Mapping[str, Any]],
    spec: LossSpec,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int | None,
    max_response_tokens: int | None,
) -> Dataset:
    """Check the examples (row numbers are 1-based positions in ``examples``) and tokenize them.

    Tokenization is the project's one shared rule (:func:`sipo.models.loading.encode_prompt` and
    ``encode_response``: prompt and response tokenized separately, BOS once, EOS after the response, prompt
    truncated from the left and response from the right), so the log-probs trained on are exactly those that
    scoring computes. trl then receives ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` and skips its own
    tokenization (see :meth:`SipoDPOTrainer._prepare_dataset`).
    """
    from sipo.models.loading import encode_prompt, encode_response

    if not examples:
        raise DataError("no preference examples to train on")
    widths = spec.extra_widths
    rows = []
    for i, example in enumerate(examples, start=1):
        texts = {}
        for key in ("prompt", "chosen", "rejected"):
            value = example.get(key)
            if not isinstance(value, str):
                raise DataError(f"preference example {i}: '{key}' must be a string, got {type(value).__name__}")
            texts[key] = value
        row: dict[str, Any] = {
            "prompt_ids": encode_prompt(tokenizer, texts["prompt"], max_prompt_tokens),
            "chosen_ids": encode_response(tokenizer, texts["chosen"], max_response_tokens),
            "rejected_ids": encode_response(tokenizer, texts["rejected"], max_response_tokens),
        }
        for key, width in widths.items():
            value = example.get(key)
            if isinstance(value, (int, float)) and width == 1:
                value = [value]
            if not isinstance(value, (list, tuple)) or len(value) != width:
                raise DataError(f"preference example {i}: '{key}' must be a list of {width} numbers for loss '{spec.name}'")
            values = [float(v) for v in value]
            if not all(math.isfinite(v) for v in values):
                raise DataError(f"preference example {i}: '{key}' has a non-finite value")
            if key == PREFERENCE_SIGNS and any(v not in (-1.0, 0.0, 1.0) for v in values):
                raise DataError(f"preference example {i}: '{key}' values must be +1, 0 or -1")
            row[key] = values
        rows.append(row)
    return Dataset.from_list(rows)


def build_dpo_trainer(
    settings: AdapterTraining,
    *,
    tokenizer: PreTrainedTokenizerBase | str | Path,
    examples: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    eval_examples: Sequence[Mapping[str, Any]] | None = None,
) -> SipoDPOTrainer:
    """Build (but do not run) the trainer of :func:`train_dpo_adapter`; ``output_dir`` is scratch space.

    The trained adapter is named ``ADAPTER``; the policy and the reference are as :class:`AdapterTraining` says.

    The reference is fixed for the whole training (the base model, or the frozen copy of the starting adapter), so
    its log-probs are computed once per example before the first step instead of once per example per epoch and
    per validation pass: a third fewer forward passes at 12 epochs. Measured on the demo (2 CPU threads): MODPO
    gave bit-identical adapters, 50 s -> 39 s; re-alignment from round-1 adapters differs by float rounding only
    (largest weight difference 1.6e-6), 62 s -> 40 s. Two cases still compute the reference at every step: under
    ``accelerate launch``, because trl 1.16 writes the precomputed values to a temporary file that only the main
    process can see when the dataset lives in memory, as ours does; and a starting adapter referenced to the base
    model, because trl computes the values while the adapter's frozen copy is still in place.
    """
    model_settings, spec, lora, init_adapter = settings.model, settings.loss, settings.lora, settings.init_adapter
    tokenizer = training_tokenizer(tokenizer, model_settings.trust_remote_code)
    dataset = _preference_dataset(examples, spec, tokenizer, model_settings.max_prompt_tokens,
                                  model_settings.max_response_tokens)
    # Truncation already happened per part (prompt from the left, response from the right) when tokenizing.
    args = to_trl_dpo_config(
        settings.train, output_dir=output_dir, beta=settings.beta, seed=settings.seed, device=model_settings.device,
        dtype=model_settings.dtype, max_length=None, logging_steps=settings.logging_steps, tracking=settings.tracking,
        precompute_reference=process_rank()[1] == 1 and not (init_adapter is not None and settings.reference == "base"),
    )
    eval_dataset = None
    if eval_examples:
        eval_dataset = _preference_dataset(eval_examples, spec, tokenizer, model_settings.max_prompt_tokens,
                                           model_settings.max_response_tokens)
        train = settings.train
        per_epoch = max(1, math.ceil(len(dataset) / (train.batch_size * train.gradient_accumulation_steps)))
        args.eval_strategy = "steps"
        args.eval_steps = train.eval_every or per_epoch
        args.prediction_loss_only = True
        args.per_device_eval_batch_size = args.per_device_train_batch_size
    from sipo.models.loading import model_load_errors

    with model_load_errors(model_settings.path):
        model = AutoModelForCausalLM.from_pretrained(
            str(model_settings.path), dtype=resolve_dtype(model_settings.dtype),
            trust_remote_code=model_settings.trust_remote_code,
            use_safetensors=None if model_settings.allow_pickle else True,
        )
    disable_dropout(model)
    peft_config = None
    if init_adapter is None:
        assert lora is not None  # AdapterTraining checks it
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
    else:
        # trl sees a PeftModel without a ref_model and adds a frozen copy of this adapter named "ref", used for the
        # reference log-probs: the re-alignment reference, base + round-1 adapter.
        from sipo.models.loading import check_adapter_weights

        check_adapter_weights(init_adapter, "init_adapter")
        model = PeftModel.from_pretrained(model, str(init_adapter), adapter_name=ADAPTER, is_trainable=True)
    collator = PreferenceCollator(
        pad_token_id=tokenizer.pad_token_id,
        max_length=args.max_length,
        truncation_mode=args.truncation_mode,
        pad_to_multiple_of=args.pad_to_multiple_of,
        extra_columns=spec.extra_columns,
    )
    logged: list[dict[str, float]] = []
    trainer = SipoDPOTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        loss_spec=spec,
        callbacks=settings.tracking.callbacks(logged) if settings.tracking is not None else None,
    )
    trainer.logged_steps = logged
    quiet_trainer(trainer)
    peft_model = trainer.model
    if init_adapter is not None and settings.reference == "base" and "ref" in peft_model.peft_config:
        # Reference = the base model: without a "ref" adapter trl disables all adapters for the reference pass.
        peft_model.delete_adapter("ref")
        peft_model.set_adapter(ADAPTER)
    return trainer


class BestValidationCallback(TrainerCallback):
    """Keep a copy of the trainable (LoRA) weights whenever the validation loss reaches a new minimum; ties keep
    the earlier weights. :meth:`restore` puts the best copy back into the model before it is saved."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.best_loss = math.inf
        self.best_step: int | None = None
        self.history: list[tuple[int, float]] = []
        self._weights: dict[str, torch.Tensor] = {}

    def record(self, step: int, loss: float) -> None:
        if self.history and self.history[-1][0] == step:
            return  # the same weights, evaluated twice (an evaluation at the last step, then the final one)
        self.history.append((step, loss))
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            self._weights = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.record(int(state.global_step), float(metrics["eval_loss"]))

    def restore(self) -> None:
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in self._weights:
                    param.copy_(self._weights[name])


def save_adapter(trainer: SipoDPOTrainer, out_dir: str | Path) -> None:
    """Write the trained adapter (only it: no base weights, no ``ref`` copy, no tokenizer) to ``out_dir``, atomically
    and from the main process; every process must call this."""
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model)
    with atomic_output_dir(accelerator, out_dir) as tmp:
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(trainer.model)
            model.save_pretrained(str(tmp), state_dict=state_dict, selected_adapters=[ADAPTER], safe_serialization=True)
            from sipo.models.portable import set_adapter_base

            set_adapter_base(tmp, model.peft_config[ADAPTER].base_model_name_or_path)


def train_dpo_adapter(
    settings: AdapterTraining,
    *,
    tokenizer: PreTrainedTokenizerBase | str | Path,
    examples: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    eval_examples: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train one LoRA adapter with a preference loss and save it to ``out_dir``.

    Args:
        settings: the base model, the LoRA shape or starting adapter, the loss and the optimisation (see
            :class:`~sipo.training.settings.AdapterTraining`); the adapter is always relative to the base model.
        tokenizer: a tokenizer or its folder. Its pad token is set to EOS if it has none.
        examples: rows with ``prompt`` (the formatted prompt text, template applied), ``chosen`` and ``rejected``
            (response texts; EOS is appended), plus ``preference_signs`` for ``dpo_lw`` or ``margin`` for
            ``modpo`` (see the module docstring). Other keys are ignored.
        out_dir: the adapter folder to write (replaced atomically).
        eval_examples: validation pairs (same form as ``examples``). With ``settings.train.select_best`` the
            validation loss is computed before training, every ``train.eval_every`` optimizer steps (default: every
            epoch) and at the end, and the saved adapter is the one with the lowest validation loss
            (``selected_step``, ``validation_curve`` in the metrics).

    Returns:
        ``{"steps", "examples", "train_loss", "first_loss", "final_loss", "reward_accuracy", "reward_margin",
        "seconds"}``: ``train_loss`` is the Trainer's mean loss over training; ``first_loss`` the loss of the
        first micro-batch; ``final_*`` and ``reward_*`` are means over the micro-batches of the last optimizer
        step.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.trainer.", dir=out_dir.parent) as scratch:
        select = bool(settings.train.select_best and eval_examples)
        trainer = build_dpo_trainer(settings, tokenizer=tokenizer, examples=examples, output_dir=scratch,
                                    eval_examples=eval_examples if select else None)
        best = None
        if select:
            best = BestValidationCallback(trainer.model)
            trainer.add_callback(best)
            best.record(0, float(trainer.evaluate()["eval_loss"]))
        start = time.perf_counter()
        result = trainer.train()
        if best is not None:
            best.record(int(trainer.state.global_step), float(trainer.evaluate()["eval_loss"]))
            best.restore()
        seconds = time.perf_counter() - start
        save_adapter(trainer, out_dir)
    metrics = summarize_records(trainer.step_records, settings.train.gradient_accumulation_steps)
    metrics.update(
        steps=int(trainer.state.global_step),
        examples=len(examples),
        train_loss=float(result.training_loss),
        seconds=round(seconds, 3),
        pairs_seen=trainer.pairs_seen,
    )
    if settings.tracking is not None:  # the logged loss curve joins the metrics: one summary per adapter
        metrics.update(summarize_steps(trainer.logged_steps))
    if best is not None:
        metrics.update(selected_step=best.best_step, best_validation_loss=round(best.best_loss, 6),
                       validation_examples=len(eval_examples or ()),
                       validation_curve=[[step, round(loss, 6)] for step, loss in best.history])
    logger.info(
        "%s: %d steps on %d pairs in %.1fs, final loss %.4f, reward accuracy %.3f -> %s",
        trainer.loss_spec.name, metrics["steps"], len(examples), seconds, metrics["final_loss"], metrics["reward_accuracy"], out_dir,
    )
    return metrics


def summarize_records(records: Sequence[Mapping[str, float]], last: int) -> dict[str, float]:
    """First loss, and the means over the last ``last`` micro-batches (one optimizer step) of loss and rewards."""
    if not records:
        return {"first_loss": math.nan, "final_loss": math.nan, "reward_accuracy": math.nan, "reward_margin": math.nan}
    tail = records[-max(1, last):]

    def mean(key: str) -> float:
        return sum(r[key] for r in tail) / len(tail)

    return {
        "first_loss": records[0]["loss"],
        "final_loss": mean("loss"),
        "reward_accuracy": mean("rewards/accuracies"),
        "reward_margin": mean("rewards/margins"),
    }
