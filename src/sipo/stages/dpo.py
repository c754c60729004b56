"""Stage ``dpo``: one LoRA adapter per objective, trained with plain DPO on that objective's pairs (round 1).

Reads ``prepare/train_<objective>.jsonl``; writes ``dpo/<objective>/`` (a peft adapter in safetensors). The
reference model is the base model (the adapter disabled). Pairs whose prompt is longer than
``model.max_prompt_tokens`` are dropped and counted (``dropped_long_prompts``).

Resumable per objective: a killed run keeps the adapters it finished, and the next run trains only the others.

    sipo stage dpo configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.errors import ConfigError
from sipo.records import Pair, read_jsonl
from sipo.stage import StageContext, StageDef
from sipo.stages.common import (
    base_model_path,
    finish_units,
    load_tokenizer_only,
    preference_examples,
    prompts_that_fit,
    resumable_unit,
)

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    from sipo.training.dpo import train_dpo_adapter

    cfg = ctx.cfg
    base = base_model_path(cfg, ctx.run_dir)
    tokenizer = load_tokenizer_only(ctx)
    counts: dict = {"dropped_long_prompts": {}}
    data = {}
    for objective in cfg.objectives:  # every objective's data is checked before any training
        pairs = read_jsonl(ctx.run_dir.path("prepare", f"train_{objective}.jsonl"), Pair)
        pairs, dropped = prompts_that_fit(tokenizer, pairs, lambda p: p.prompt, cfg, f"dpo ({objective} pairs)")
        if not pairs:
            raise ConfigError(f"config key 'model.max_prompt_tokens': every training prompt of objective "
                              f"'{objective}' is longer than {cfg.model.max_prompt_tokens} tokens")
        data[objective] = preference_examples(tokenizer, pairs, objective, cfg)
        counts["dropped_long_prompts"][objective] = dropped
    for objective, examples in data.items():
        out = ctx.out_dir / objective

        def train(examples=examples, out=out, objective=objective) -> dict:
            logger.info("dpo: training the %s adapter on %d pairs", objective, len(examples))
            return train_dpo_adapter(
                base_model_path=base, tokenizer=tokenizer, examples=examples, out_dir=out,
                beta=cfg.dpo.beta, lora=cfg.dpo.lora, train=cfg.dpo.train, seed=cfg.seed, device=ctx.device,
                dtype=cfg.model.dtype, max_prompt_tokens=cfg.model.max_prompt_tokens,
                max_response_tokens=cfg.model.max_response_tokens, trust_remote_code=cfg.model.trust_remote_code,
                allow_pickle=cfg.model.allow_pickle)

        counts[f"pairs_{objective}"] = len(examples)
        counts[f"metrics_{objective}"] = resumable_unit(ctx, objective, train, [out / "adapter_config.json"])
    finish_units(ctx)
    return counts


SPEC = StageDef(
    name="dpo", run=run, help="train one LoRA adapter per objective with DPO (round 1)",
    reads="`prepare/train_<o>.jsonl`", writes="`dpo/<o>/`", config_keys=("dpo", "model", "seed"), loads_model=True,
    distributed=True, makes_adapters=True
)
