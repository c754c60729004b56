"""Stage ``combine``: the implicit rewards of the round-1 adapters decide whether each rewrite replaces its sample.

Reads ``rK/sample/candidates.jsonl`` and ``rK/rewrite/rewrites.jsonl`` (joined by ``candidate_id``); writes
``rK/combine/combined.jsonl`` (one :class:`~sipo.records.CombinedCandidate` per sample). The rule is
``combine.rule`` (see :mod:`sipo.selection`).

    sipo stage combine configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.artifacts import RunDir
from sipo.judges import ScoreItem
from sipo.layout import adapter_name, objective_adapters
from sipo.records import CombinedCandidate, read_jsonl, write_jsonl
from sipo.selection import rewrite_replaces
from sipo.stage import StageContext, StageDef
from sipo.stages.rewrite import read_rewrites
from sipo.stages.sample import read_candidates

logger = logging.getLogger(__name__)

OUTPUT = "combined.jsonl"


def read_combined(run_dir: RunDir, round_: int) -> list[CombinedCandidate]:
    """Round ``round_``'s combined candidates (this stage's output, read by filter)."""
    return read_jsonl(run_dir.path(f"r{round_}/combine", OUTPUT), CombinedCandidate)


def rewrite_key(candidate_id: str) -> str:
    """The scoring id of a candidate's rewrite (a rewrite keeps its candidate's id)."""
    return f"{candidate_id}#rewrite"


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    judges = {o: adapter_name(o, 0) for o in cfg.objectives}
    bank, tokenizer = ctx.models.load_bank(ctx, objective_adapters(ctx.cfg, ctx.run_dir, 0))
    candidates = read_candidates(ctx.run_dir, ctx.round)
    rewrites = read_rewrites(ctx.run_dir, ctx.round)
    rewritten = [c for c in candidates if c.candidate_id in rewrites]
    items = [ScoreItem(c.candidate_id, c.prompt, c.response) for c in candidates]
    items += [ScoreItem(rewrite_key(c.candidate_id), rewrites[c.candidate_id].prompt,
                        rewrites[c.candidate_id].response) for c in rewritten]
    rewards = ctx.models.implicit_rewards(ctx, bank, tokenizer, items, list(judges.values()))
    combined = []
    replaced = 0
    for cand in candidates:
        original = {o: rewards[cand.candidate_id][judges[o]] for o in cfg.objectives}
        rewrite = rewrites.get(cand.candidate_id)
        rewrite_scores = None
        keep, scores, swap = cand, original, False
        if rewrite is not None:
            rewrite_scores = {o: rewards[rewrite_key(cand.candidate_id)][judges[o]] for o in cfg.objectives}
            swap = rewrite_replaces(original, rewrite_scores, cfg.combine.rule)
            if swap:
                keep, scores = rewrite, rewrite_scores
                replaced += 1
        combined.append(CombinedCandidate(candidate=keep, scores=scores, original_scores=original,
                                          rewrite_scores=rewrite_scores, replaced=swap))
    count = write_jsonl(ctx.out_dir / OUTPUT, combined)
    share = replaced / max(1, len(rewrites))
    logger.info("combine: replaced %d/%d samples by their rewrite (%.1f%% of %d rewrites, rule %s)",
                replaced, len(candidates), 100 * share, len(rewrites), cfg.combine.rule)
    return {"candidates": count, "rewrites": len(rewrites), "replaced": replaced,
            "replaced_share_of_rewrites": round(share, 4)}


SPEC = StageDef(
    name="combine", run=run, help="keep the rewrite instead of the candidate when the implicit rewards say so",
    reads="candidates + rewrites", writes="`rK/combine/combined.jsonl`", config_keys=("combine", "dpo.beta"),
    loads_model=True, per_round=True, optional=True
)
