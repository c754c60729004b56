"""Stage ``modpo`` (baseline MODPO, Zhou et al. 2024): one LoRA adapter per evaluation weight vector ``w``.

For each ``w`` the *target* objective is the one with the largest weight (the first on a tie): the adapter is
trained with DPO on the target's pairs, with the other objectives' implicit rewards (their round-1 DPO adapters,
``r_o = beta * log pi_o / pi_ref``) as a margin weighted by ``w`` (:func:`sipo.losses.modpo_loss`). The margins
are computed once for every pair and cached in ``modpo/margins.jsonl``. A one-hot ``w`` is plain DPO on that
objective.

Reads ``prepare/train_<objective>.jsonl`` and ``dpo/<objective>/``; writes ``modpo/<weights>/``. Pairs whose prompt
is longer than ``model.max_prompt_tokens`` are dropped and counted. Resumable per weight vector.

    sipo stage modpo configs/smoke.yaml run_dir=runs/smoke 'methods=[modpo]'
"""

from __future__ import annotations

import json
import logging

from sipo.artifacts import atomic_write_text
from sipo.config import weight_grid, weights_tag
from sipo.judges import ScoreItem
from sipo.layout import adapter_name, objective_adapters
from sipo.records import Pair, read_jsonl
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import format_prompts, prompts_that_fit, reuse_dpo_endpoint, train_adapter
from sipo.stages.pairs import training_union
from sipo.stages.sharding import check_kept, finish_units, write_kept_record
from sipo.stages.validation import round_one_validation

logger = logging.getLogger(__name__)

MARGINS_RECORD = ".margins.done.json"
"""The record of the margins cache (hidden: not a stage output)."""


def target_objective(weights: dict[str, float]) -> str:
    """The objective MODPO trains on directly: the largest weight, the first listed on a tie."""
    return max(weights, key=lambda o: (weights[o], -list(weights).index(o)))


def pair_rewards(ctx: StageContext, pairs: list[Pair]) -> dict[str, dict[str, list[float]]]:
    """pair_id -> {"a": [r_o per objective], "b": [...]}, computed once and cached in margins.jsonl (reused by a
    resumed run only when it checks out against its record, like a shard)."""
    cache = ctx.out_dir / "margins.jsonl"
    record = ctx.out_dir / MARGINS_RECORD
    kept, reason = check_kept(record, cache, ctx.out_dir)
    if kept is not None:
        with open(cache, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return {r["pair_id"]: {"a": r["a"], "b": r["b"]} for r in rows}
    if reason is not None:
        logger.warning("modpo: %s left by an interrupted run does not check out (%s); computing it again", cache,
                       reason)
    cfg = ctx.cfg
    judges = [adapter_name(o, 0) for o in cfg.objectives]
    bank, tokenizer = ctx.models.load_bank(ctx, objective_adapters(ctx.cfg, ctx.run_dir, 0))
    items = [ScoreItem(f"{p.pair_id}:{side}", p.prompt, p.response_a if side == "a" else p.response_b)
             for p in pairs for side in ("a", "b")]
    rewards = ctx.models.implicit_rewards(ctx, bank, tokenizer, items, judges)
    result = {p.pair_id: {side: [rewards[f"{p.pair_id}:{side}"][j] for j in judges] for side in ("a", "b")}
              for p in pairs}
    atomic_write_text(cache, "".join(json.dumps({"pair_id": pid, **r}) + "\n" for pid, r in sorted(result.items())))
    write_kept_record(record, cache, ctx.out_dir, {})
    return result


def modpo_examples(tokenizer, pairs: list[Pair], rewards, target: str, others: list[str], objs: list[str],
                   cfg) -> list[dict]:
    """MODPO rows of ``pairs`` for ``target``: its chosen/rejected, and the other objectives' reward margins."""
    from sipo.training.settings import MARGIN

    examples = []
    for p, prompt in zip(pairs, format_prompts(tokenizer, [p.prompt for p in pairs], cfg)):
        chosen_side = p.preferred[target]
        if chosen_side is None:
            continue
        rejected_side = "b" if chosen_side == "a" else "a"
        r = rewards[p.pair_id]
        margin = [r[chosen_side][objs.index(o)] - r[rejected_side][objs.index(o)] for o in others]
        chosen, rejected = p.chosen_rejected(target)
        examples.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, MARGIN: margin})
    return examples


def run(ctx: StageContext) -> dict:
    from sipo.training.settings import LossSpec

    cfg = ctx.cfg
    objs = list(cfg.objectives)
    tokenizer = ctx.models.load_tokenizer(ctx)
    union, dropped = prompts_that_fit(tokenizer, training_union(ctx), lambda p: p.prompt, cfg, "modpo")
    fits = {p.pair_id for p in union}
    train = {o: [p for p in read_jsonl(ctx.run_dir.path("prepare", f"train_{o}.jsonl"), Pair) if p.pair_id in fits]
             for o in objs}
    validation = round_one_validation(ctx, tokenizer)
    rewards = pair_rewards(ctx, union + [p for p in validation if p.pair_id not in fits])
    counts: dict = {"pairs_scored": len(union), "dropped_long_prompts": dropped}
    for w in weight_grid(objs, cfg.eval.grid):
        if reuse_dpo_endpoint(ctx, w):
            continue
        target = target_objective(w)
        others = [o for o in objs if o != target]
        examples = modpo_examples(tokenizer, train[target], rewards, target, others, objs, cfg)
        eval_examples = modpo_examples(tokenizer, validation, rewards, target, others, objs, cfg)
        tag = weights_tag(w)
        # w[0] is the target objective's weight (MODPO trains on it directly), then the margins' weights.
        loss = LossSpec("modpo", objective_weights=tuple(float(x) for x in [w[target]] + [w[o] for o in others]))
        counts[f"metrics_{tag}"] = train_adapter(ctx, tag, tokenizer, examples, ctx.out_dir / tag, beta=cfg.dpo.beta,
                                                 train=cfg.dpo.train, loss=loss, lora=cfg.dpo.lora,
                                                 eval_examples=eval_examples)
    finish_units(ctx)
    return counts


SPEC = StageDef(
    name="modpo", run=run, help="baseline: one adapter per weight vector trained with MODPO margins", reads="pairs",
    writes="`modpo/<w>/`", config_keys=("dpo", "eval.grid", "model", "seed"), loads_model=True, distributed=True,
    makes_adapters=True, optional=True, note="only if in methods"
)
