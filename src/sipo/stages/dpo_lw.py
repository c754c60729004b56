"""Stage ``dpo_lw`` (baseline DPO-LW): one LoRA adapter per evaluation weight vector ``w``, trained on
``sum_o w_o * DPO_o`` where each objective labels the same pair (possibly in opposite directions; a tie adds 0).

Reads every ``prepare/train_<objective>.jsonl`` (their union, once per pair); writes ``dpo_lw/<weights>/``.
With a one-hot ``w`` this is plain DPO on that objective's pairs. Pairs whose prompt is longer than
``model.max_prompt_tokens`` are dropped and counted. Resumable per weight vector: a killed run keeps the adapters
it finished.

    sipo stage dpo_lw configs/smoke.yaml run_dir=runs/smoke 'methods=[dpo_lw]'
"""

from __future__ import annotations

import logging

from sipo.config import weight_grid, weights_tag
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import format_prompts, prompts_that_fit, reuse_dpo_endpoint, train_adapter
from sipo.stages.pairs import training_union
from sipo.stages.sharding import finish_units
from sipo.stages.validation import round_one_validation

logger = logging.getLogger(__name__)


def preference_signs(preferred: dict, objectives) -> list[float]:
    """+1 if the objective prefers response a (our ``chosen`` column), -1 if b, 0 on a tie."""
    return [{"a": 1.0, "b": -1.0}.get(preferred.get(o), 0.0) for o in objectives]


def run(ctx: StageContext) -> dict:
    from sipo.training.settings import PREFERENCE_SIGNS, LossSpec

    cfg = ctx.cfg
    objs = list(cfg.objectives)
    tokenizer = ctx.models.load_tokenizer(ctx)
    pairs, dropped = prompts_that_fit(tokenizer, training_union(ctx), lambda p: p.prompt, cfg, "dpo_lw")
    prompts = format_prompts(tokenizer, [p.prompt for p in pairs], cfg)
    counts: dict = {"pairs": len(pairs), "dropped_long_prompts": dropped}
    validation = round_one_validation(ctx, tokenizer)
    validation_prompts = format_prompts(tokenizer, [p.prompt for p in validation], cfg)
    for w in weight_grid(objs, cfg.eval.grid):
        if reuse_dpo_endpoint(ctx, w):
            continue
        examples = [{"prompt": prompt, "chosen": p.response_a, "rejected": p.response_b,
                     PREFERENCE_SIGNS: preference_signs(p.preferred, objs)}
                    for p, prompt in zip(pairs, prompts)
                    if any(w[o] > 0 and p.preferred.get(o) is not None for o in objs)]
        eval_examples = [{"prompt": prompt, "chosen": p.response_a, "rejected": p.response_b,
                          PREFERENCE_SIGNS: preference_signs(p.preferred, objs)}
                         for p, prompt in zip(validation, validation_prompts)
                         if any(w[o] > 0 and p.preferred.get(o) is not None for o in objs)]
        tag = weights_tag(w)
        loss = LossSpec("dpo_lw", objective_weights=tuple(float(w[o]) for o in objs))
        counts[f"metrics_{tag}"] = train_adapter(ctx, tag, tokenizer, examples, ctx.out_dir / tag, beta=cfg.dpo.beta,
                                                 train=cfg.dpo.train, loss=loss, lora=cfg.dpo.lora,
                                                 eval_examples=eval_examples)
    finish_units(ctx)
    return counts


SPEC = StageDef(
    name="dpo_lw", run=run,
    help="baseline: one adapter per weight vector trained on the weighted sum of per-objective DPO losses",
    reads="pairs", writes="`dpo_lw/<w>/`", config_keys=("dpo", "eval.grid", "model", "seed"), loads_model=True,
    distributed=True, makes_adapters=True, optional=True, note="only if in methods"
)
