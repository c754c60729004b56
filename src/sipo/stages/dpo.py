"""Stage ``dpo``: one LoRA adapter per objective, trained with plain DPO on that objective's pairs (round 1).

Reads ``prepare/train_<objective>.jsonl``; writes ``dpo/<objective>/`` (a peft adapter in safetensors). The
reference model is the base model (the adapter disabled).

    sipo stage dpo configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.pipeline import StageContext
from sipo.records import Pair, read_jsonl
from sipo.stages.common import base_model_path, load_tokenizer_only, preference_examples

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    from sipo.training.dpo import train_dpo_adapter

    cfg = ctx.cfg
    base = base_model_path(cfg, ctx.run_dir)
    tokenizer = load_tokenizer_only(ctx)
    counts: dict = {}
    for objective in cfg.objectives:
        pairs = read_jsonl(ctx.run_dir.path("prepare", f"train_{objective}.jsonl"), Pair)
        examples = preference_examples(tokenizer, pairs, objective, cfg)
        logger.info("dpo: training the %s adapter on %d pairs", objective, len(examples))
        metrics = train_dpo_adapter(
            base_model_path=base, tokenizer=tokenizer, examples=examples, out_dir=ctx.out_dir / objective,
            beta=cfg.dpo.beta, lora=cfg.dpo.lora, train=cfg.dpo.train, seed=cfg.seed, device=ctx.device,
            dtype=cfg.model.dtype, max_prompt_tokens=cfg.model.max_prompt_tokens,
            max_response_tokens=cfg.model.max_response_tokens, trust_remote_code=cfg.model.trust_remote_code)
        counts[f"pairs_{objective}"] = len(examples)
        counts[f"metrics_{objective}"] = metrics
    return counts
