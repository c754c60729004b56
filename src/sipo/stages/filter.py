"""Stage ``filter``: keep, per prompt, the best response that beats both original responses under every judge.

Judges are the N round-1 adapters plus (``filter.soups``) the LoRA soups at every sampling weight vector, each
scoring by implicit reward. Reads ``rK/combine/combined.jsonl`` and ``prepare/train_conflict.jsonl``; writes
``rK/filter/selected.jsonl`` (one :class:`~sipo.records.Selection` per surviving prompt). Prompts without a
survivor are dropped and counted; ``survival_per_judge`` counts the candidates that beat both originals under each
judge alone (the judge that stops most of them is the filter's bottleneck).

    sipo stage filter configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sipo.artifacts import RunDir
from sipo.judges import ScoreItem
from sipo.layout import adapter_name, objective_adapters, soup_name
from sipo.records import CombinedCandidate, Selection, read_jsonl, write_jsonl
from sipo.selection import beats_both, select_candidate
from sipo.stage import StageContext, StageDef
from sipo.stages.combine import read_combined
from sipo.stages.pairs import read_conflict_pairs

logger = logging.getLogger(__name__)

OUTPUT = "selected.jsonl"


def read_selected(run_dir: RunDir, round_: int) -> list[Selection]:
    """Round ``round_``'s selected responses (this stage's output, read by realign)."""
    return read_jsonl(run_dir.path(f"r{round_}/filter", OUTPUT), Selection)


def candidate_weights(combined: Sequence[CombinedCandidate], objectives: Sequence[str]) -> list[dict[str, float]]:
    """The distinct weight vectors the candidates were decoded at, in grid order (first objective's weight
    descending): the soups that judge them."""
    vectors = {tuple(float(c.candidate.weights[o]) for o in objectives) for c in combined}
    return [dict(zip(objectives, w)) for w in sorted(vectors, reverse=True)]


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    judges = [adapter_name(o, 0) for o in cfg.objectives]
    bank, tokenizer = ctx.models.load_bank(ctx, objective_adapters(ctx.cfg, ctx.run_dir, 0))
    combined = read_combined(ctx.run_dir, ctx.round)
    if cfg.filter.soups and len(cfg.objectives) > 1:
        for w in candidate_weights(combined, cfg.objectives):
            name = soup_name(w, 0)
            bank.add_soup(name, {adapter_name(o, 0): w[o] for o in cfg.objectives}, cfg.soup_mode)
            judges.append(name)
    pairs = {p.prompt_id: p for p in read_conflict_pairs(ctx)}
    by_prompt: dict[str, list[CombinedCandidate]] = {}
    for c in combined:
        by_prompt.setdefault(c.candidate.prompt_id, []).append(c)
    prompt_ids = sorted(pid for pid in by_prompt if pid in pairs)
    originals = {pid: (ScoreItem(f"{pid}:original-a", pairs[pid].prompt, pairs[pid].response_a),
                       ScoreItem(f"{pid}:original-b", pairs[pid].prompt, pairs[pid].response_b))
                 for pid in prompt_ids}
    responses = [c.candidate for pid in prompt_ids for c in by_prompt[pid]]
    items = [item for pid in prompt_ids for item in originals[pid]]
    items += [ScoreItem(c.candidate_id, c.prompt, c.response) for c in responses]
    rewards = ctx.models.implicit_rewards(ctx, bank, tokenizer, items, judges)
    selections = []
    survivors_total = 0
    per_judge = dict.fromkeys(judges, 0)
    for pid in prompt_ids:
        pair = pairs[pid]
        side_a, side_b = originals[pid]
        chosen, rejected = rewards[side_a.id], rewards[side_b.id]
        cands = {c.candidate.candidate_id: c for c in by_prompt[pid]}
        survivors_total += sum(1 for cid in cands if beats_both(rewards[cid], chosen, rejected))
        for judge in judges:  # which judge stops the candidates (the health report names it)
            per_judge[judge] += sum(1 for cid in cands if beats_both({judge: rewards[cid][judge]},
                                                                     {judge: chosen[judge]}, {judge: rejected[judge]}))
        best = select_candidate([(cid, rewards[cid]) for cid in cands], chosen, rejected)
        if best is None:
            continue
        selections.append(Selection(prompt_id=pid, prompt=pair.prompt, response=cands[best].candidate.response,
                                    candidate_id=best, pair_id=pair.pair_id, response_a=pair.response_a,
                                    response_b=pair.response_b, judge_scores=rewards[best]))
    count = write_jsonl(ctx.out_dir / OUTPUT, selections)
    dropped = len(prompt_ids) - count
    logger.info("filter: kept %d/%d prompts (%.1f%%), %d of %d candidates beat both originals under %d judges",
                count, len(prompt_ids), 100 * count / max(1, len(prompt_ids)), survivors_total, len(responses),
                len(judges))
    return {"prompts": len(prompt_ids), "selected": count, "dropped_prompts": dropped,
            "candidates": len(responses), "surviving_candidates": survivors_total, "judges": len(judges),
            "survival_per_judge": per_judge,
            "survival_rate": round(count / max(1, len(prompt_ids)), 4)}


SPEC = StageDef(
    name="filter", run=run,
    help="keep, per prompt, the best candidate that beats both original responses under every judge",
    reads="combined + pairs", writes="`rK/filter/selected.jsonl`",
    config_keys=("filter", "soup_mode", "sample.grid", "dpo.beta"), loads_model=True, per_round=True, optional=True
)
