"""Stage ``combine``: the implicit rewards of the round-1 adapters decide whether each rewrite replaces its sample.

Reads ``rK/sample/candidates.jsonl`` and ``rK/rewrite/rewrites.jsonl`` (joined by ``candidate_id``); writes
``rK/combine/combined.jsonl`` (one :class:`~sipo.records.CombinedCandidate` per sample). The rule is
``combine.rule`` (see :mod:`sipo.selection`).

    sipo stage combine configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.pipeline import StageContext
from sipo.records import Candidate, CombinedCandidate, read_jsonl, write_jsonl
from sipo.selection import rewrite_replaces
from sipo.stages.common import adapter_dir, adapter_name, judge_rewards, load_bank

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    judges = {o: adapter_name(o, 0) for o in cfg.objectives}
    bank, tokenizer = load_bank(ctx, {name: adapter_dir(ctx.run_dir, o, 0) for o, name in judges.items()})
    candidates = read_jsonl(ctx.run_dir.path(f"r{ctx.round}/sample", "candidates.jsonl"), Candidate)
    rewrites = {c.candidate_id: c for c in
                read_jsonl(ctx.run_dir.path(f"r{ctx.round}/rewrite", "rewrites.jsonl"), Candidate)}
    to_score = candidates + [rewrites[c.candidate_id] for c in candidates if c.candidate_id in rewrites]
    rewards = judge_rewards(ctx, bank, tokenizer, to_score, list(judges.values()))
    combined = []
    replaced = 0
    for i, cand in enumerate(candidates):
        original = {o: rewards[judges[o]][i] for o in cfg.objectives}
        rewrite = rewrites.get(cand.candidate_id)
        rewrite_scores = None
        keep, scores, swap = cand, original, False
        if rewrite is not None:
            j = len(candidates) + sum(1 for c in candidates[:i] if c.candidate_id in rewrites)
            rewrite_scores = {o: rewards[judges[o]][j] for o in cfg.objectives}
            swap = rewrite_replaces(original, rewrite_scores, cfg.combine.rule)
            if swap:
                keep, scores = rewrite, rewrite_scores
                replaced += 1
        combined.append(CombinedCandidate(candidate=keep, scores=scores, original_scores=original,
                                          rewrite_scores=rewrite_scores, replaced=swap))
    count = write_jsonl(ctx.out_dir / "combined.jsonl", combined)
    share = replaced / max(1, len(rewrites))
    logger.info("combine: replaced %d/%d samples by their rewrite (%.1f%% of %d rewrites, rule %s)",
                replaced, len(candidates), 100 * share, len(rewrites), cfg.combine.rule)
    return {"candidates": count, "rewrites": len(rewrites), "replaced": replaced,
            "replaced_share_of_rewrites": round(share, 4)}
