"""Stage ``filter``: keep, per prompt, the best response that beats both original responses under every judge.

Judges are the N round-1 adapters plus (``filter.soups``) the LoRA soups at every sampling weight vector, each
scoring by implicit reward. Reads ``rK/combine/combined.jsonl`` and ``prepare/train_conflict.jsonl``; writes
``rK/filter/selected.jsonl`` (one :class:`~sipo.records.Selection` per surviving prompt). Prompts without a
survivor are dropped and counted.

    sipo stage filter configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.config import weight_grid
from sipo.pipeline import StageContext
from sipo.records import Candidate, CombinedCandidate, Selection, read_jsonl, write_jsonl
from sipo.selection import beats_both, select_candidate
from sipo.stages.common import (
    adapter_dir,
    adapter_name,
    judge_rewards,
    load_bank,
    read_conflict_pairs,
    soup_name,
)

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    judges = [adapter_name(o, 0) for o in cfg.objectives]
    bank, tokenizer = load_bank(ctx, {adapter_name(o, 0): adapter_dir(ctx.run_dir, o, 0) for o in cfg.objectives})
    if cfg.filter.soups and len(cfg.objectives) > 1:
        for w in weight_grid(cfg.objectives, cfg.sample.grid):
            name = soup_name(w, 0)
            bank.add_soup(name, {adapter_name(o, 0): w[o] for o in cfg.objectives}, cfg.soup_mode)
            judges.append(name)
    combined = read_jsonl(ctx.run_dir.path(f"r{ctx.round}/combine", "combined.jsonl"), CombinedCandidate)
    pairs = {p.prompt_id: p for p in read_conflict_pairs(ctx)}
    by_prompt: dict[str, list[CombinedCandidate]] = {}
    for c in combined:
        by_prompt.setdefault(c.candidate.prompt_id, []).append(c)
    prompt_ids = sorted(pid for pid in by_prompt if pid in pairs)
    originals = []
    for pid in prompt_ids:
        pair = pairs[pid]
        for side, text in (("a", pair.response_a), ("b", pair.response_b)):
            originals.append(Candidate(candidate_id=f"{pid}:original-{side}", prompt_id=pid, prompt=pair.prompt,
                                       response=text, weights={}, source="original"))
    responses = [c.candidate for pid in prompt_ids for c in by_prompt[pid]]
    rewards = judge_rewards(ctx, bank, tokenizer, originals + responses, judges)
    offset = len(originals)
    selections = []
    survivors_total = 0
    for k, pid in enumerate(prompt_ids):
        pair = pairs[pid]
        chosen = {j: rewards[j][2 * k] for j in judges}
        rejected = {j: rewards[j][2 * k + 1] for j in judges}
        cands = []
        for c in by_prompt[pid]:
            cands.append((c.candidate.candidate_id, {j: rewards[j][offset] for j in judges}, c))
            offset += 1
        survivors_total += sum(1 for _, s, _ in cands if beats_both(s, chosen, rejected))
        best = select_candidate([(cid, s) for cid, s, _ in cands], chosen, rejected)
        if best is None:
            continue
        cid, scores, c = next(item for item in cands if item[0] == best)
        selections.append(Selection(prompt_id=pid, prompt=pair.prompt, response=c.candidate.response,
                                    candidate_id=cid, pair_id=pair.pair_id, response_a=pair.response_a,
                                    response_b=pair.response_b, judge_scores=scores))
    count = write_jsonl(ctx.out_dir / "selected.jsonl", selections)
    dropped = len(prompt_ids) - count
    logger.info("filter: kept %d/%d prompts (%.1f%%), %d of %d candidates beat both originals under %d judges",
                count, len(prompt_ids), 100 * count / max(1, len(prompt_ids)), survivors_total, len(responses),
                len(judges))
    return {"prompts": len(prompt_ids), "selected": count, "dropped_prompts": dropped,
            "candidates": len(responses), "surviving_candidates": survivors_total, "judges": len(judges),
            "survival_rate": round(count / max(1, len(prompt_ids)), 4)}

