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
from sipo.stage import StageContext, StageDef, base_stages
from sipo.stages.model_calls import prompts_that_fit, train_adapter
from sipo.stages.pairs import preference_examples
from sipo.stages.sharding import finish_units
from sipo.stages.validation import round_one_validation

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    tokenizer = ctx.models.load_tokenizer(ctx)
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
    validation = round_one_validation(ctx, tokenizer)
    for objective, examples in data.items():
        counts[f"pairs_{objective}"] = len(examples)
        counts[f"metrics_{objective}"] = train_adapter(ctx, objective, tokenizer, examples, ctx.out_dir / objective,
                                                       beta=cfg.dpo.beta, train=cfg.dpo.train, lora=cfg.dpo.lora,
                                                       eval_examples=preference_examples(tokenizer, validation,
                                                                                         objective, cfg))
    finish_units(ctx)
    return counts


SPEC = StageDef(
    name="dpo", run=run, help="train one LoRA adapter per objective with DPO (round 1)",
    reads="`prepare/train_<o>.jsonl`", writes="`dpo/<o>/`", config_keys=("dpo", "model", "seed"), loads_model=True,
    distributed=True, makes_adapters=True, upstream=lambda cfg, before: ("prepare", *base_stages(cfg))
)
