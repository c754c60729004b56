"""The model calls of the stages: the base model and its adapters loaded once, decoding, implicit rewards,
training one adapter, and the prompts that fit the model.

:class:`sipo.stage.Models` defaults to these functions, so component tests hand a stage fakes instead.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sipo.artifacts import atomic_path
from sipo.config import DecodeSettings, LoraSettings, PipelineConfig, TrainSettings, weights_tag
from sipo.distributed import barrier
from sipo.layout import adapter_dir, base_model_path
from sipo.logging_utils import process_rank
from sipo.stages.sharding import resumable_unit

if TYPE_CHECKING:
    from sipo.stage import StageContext
    from sipo.training.settings import LossSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")


def load_bank(ctx: StageContext, adapters: Mapping[str, Path]):
    """The base model with the named adapters loaded (one copy of the base, cached across stages)."""
    from sipo.models.adapters import AdapterBank  # the model packages import torch: loaded on first use
    from sipo.models.loading import load_model, load_tokenizer

    path = base_model_path(ctx.cfg, ctx.run_dir)
    key = ("bank", path)
    if key not in ctx.cache:
        ctx.cache.clear()
        tokenizer = load_tokenizer(path, ctx.cfg.model)
        model = load_model(path, ctx.cfg.model, ctx.device)
        ctx.cache[key] = (AdapterBank(model), tokenizer)
    bank, tokenizer = ctx.cache[key]
    for name, directory in adapters.items():
        bank.load_adapter(name, directory)
    return bank, tokenizer


def load_tokenizer_only(ctx: StageContext):
    """The base model's tokenizer (from the cache when a bank is loaded)."""
    from sipo.models.loading import load_tokenizer

    path = base_model_path(ctx.cfg, ctx.run_dir)
    cached = ctx.cache.get(("bank", path))
    return cached[1] if cached else load_tokenizer(path, ctx.cfg.model)


def format_prompts(tokenizer, prompts: Sequence[str], cfg: PipelineConfig) -> list[str]:
    from sipo.models.loading import format_prompt

    return [format_prompt(tokenizer, p, cfg.model.prompt_template, cfg.model.system_prompt) for p in prompts]


def decode(ctx: StageContext, bank, tokenizer, texts: Sequence[str], mixes: Sequence[Mapping[str, float]],
           settings: DecodeSettings, max_prompt_tokens: int) -> list[str]:
    """MOD-decode templated ``texts`` (one adapter mix each) with a stage's decode settings, through the context's
    generator."""
    return ctx.models.generate(bank, tokenizer, list(texts), list(mixes), max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature, top_p=settings.top_p,
                               batch_size=settings.batch_size, seed=ctx.cfg.seed, max_prompt_tokens=max_prompt_tokens)


def judge_rewards(ctx: StageContext, bank, tokenizer, items: Sequence[Any], judges: Sequence[str]
                  ) -> dict[str, dict[str, float]]:
    """Implicit reward of every item (a :class:`~sipo.judges.ScoreItem`: id, prompt, response) under every judge
    adapter, keyed by item id then judge name (reference log-probs computed once; items scored in the given order,
    so the batches do not depend on how the caller joins the results)."""
    from sipo.scoring.implicit import implicit_rewards

    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("judge_rewards: item ids must be unique")
    cfg = ctx.cfg
    prompts = format_prompts(tokenizer, [item.prompt for item in items], cfg)
    rewards = implicit_rewards(bank, tokenizer, prompts, [item.response for item in items], judges=judges,
                               beta=cfg.dpo.beta, batch_size=cfg.sample.decode.batch_size,
                               max_prompt_tokens=cfg.model.max_prompt_tokens,
                               max_response_tokens=cfg.model.max_response_tokens,
                               desc=f"{getattr(ctx.stage, 'id', 'scoring')}: scoring {len(items)} responses, "
                                    "batches")
    columns = {name: [float(x) for x in values] for name, values in rewards.items()}
    return {item_id: {name: columns[name][i] for name in judges} for i, item_id in enumerate(ids)}


def prompts_that_fit(tokenizer, items: Sequence[T], prompt_of: Callable[[T], str], cfg: PipelineConfig,
                     what: str) -> tuple[list[T], int]:
    """The items whose prompt fits in ``model.max_prompt_tokens`` once templated and tokenized, and how many were
    dropped.

    Longer prompts are dropped, never cut (cutting would lose the start of the question), and counted: each stage
    that reads prompts from ``prepare`` (sft, dpo, sample, dpo_lw, modpo, evaluate) calls this first and reports
    the count as ``dropped_long_prompts`` in its manifest; later stages only see the prompts that fit.
    """
    from sipo.models.loading import encode_prompt, format_prompt

    limit = cfg.model.max_prompt_tokens
    lengths: dict[str, int] = {}
    kept = []
    for item in items:
        prompt = prompt_of(item)
        if prompt not in lengths:
            text = format_prompt(tokenizer, prompt, cfg.model.prompt_template, cfg.model.system_prompt)
            lengths[prompt] = len(encode_prompt(tokenizer, text, None))
        if lengths[prompt] <= limit:
            kept.append(item)
    dropped = len(items) - len(kept)
    if dropped:
        logger.warning("%s: dropped %d of %d whose prompt is longer than model.max_prompt_tokens=%d tokens",
                       what, dropped, len(items), limit)
    return kept, dropped


def train_adapter(ctx: StageContext, unit: str, tokenizer, examples: Sequence[Mapping[str, Any]], out: Path, *,
                  beta: float, train: TrainSettings, loss: LossSpec | None = None, lora: LoraSettings | None = None,
                  init_adapter: Path | None = None, reference: str = "base",
                  eval_examples: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """Train one adapter of a training stage (dpo, realign, dpo_lw, modpo) into ``out``, resumably (a
    :func:`resumable_unit` named ``unit``), on the run's base model; returns its metrics."""
    from sipo.training.settings import AdapterTraining, LossSpec, ModelSettings

    settings = AdapterTraining(
        model=ModelSettings.of(ctx.cfg, base_model_path(ctx.cfg, ctx.run_dir), ctx.device), train=train, beta=beta,
        seed=ctx.cfg.seed, loss=loss or LossSpec(), lora=lora,
        init_adapter=str(init_adapter) if init_adapter is not None else None, reference=reference,  # type: ignore[arg-type]
        tracking=ctx.tracking.for_adapter(unit))

    def work() -> dict:
        logger.info("%s: training the %s adapter on %d pairs (%s loss)", ctx.stage.id, unit, len(examples),
                    settings.loss.name)
        extra = {"eval_examples": eval_examples} if eval_examples else {}  # validation pairs (train.select_best)
        return ctx.models.train_adapter(settings, tokenizer=tokenizer, examples=examples, out_dir=out, **extra)

    return resumable_unit(ctx, unit, work, out)


def reuse_dpo_endpoint(ctx: StageContext, weights: Mapping[str, float]) -> bool:
    """For a one-hot ``weights``, DPO-LW and MODPO reduce to plain DPO on that objective: copy its round-1 DPO
    adapter to ``<stage>/<weights>/`` instead of training the same model again. Returns whether it did."""
    active = [o for o, w in weights.items() if w > 0]
    if len(active) != 1:
        return False
    out = ctx.out_dir / weights_tag(weights)
    if process_rank()[0] == 0:
        with atomic_path(out) as tmp:
            shutil.copytree(adapter_dir(ctx.run_dir, active[0], 0), tmp)
    barrier()
    logger.info("%s: %s is plain DPO on %s; reusing its round-1 adapter", ctx.stage.name, weights_tag(weights),
                active[0])
    return True
