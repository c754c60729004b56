"""Stage ``rewrite``: MOD decoding, with the candidate's own weights, of a rewrite that follows its review.

Reads ``rK/sample/candidates.jsonl`` and ``rK/review/reviews.jsonl`` (joined by ``candidate_id``); writes
``rK/rewrite/rewrites.jsonl`` (a :class:`~sipo.records.Candidate` with ``source="rewrite"`` per candidate that
had a usable review; an unusable review or rewrite is counted and skipped).

    sipo stage rewrite configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.prompting import parse_rewrite, rewrite_prompt
from sipo.records import Candidate, Review, read_jsonl
from sipo.stage import StageContext, StageDef
from sipo.stages.common import (
    adapter_name,
    decode,
    finish_shards,
    format_prompts,
    objective_adapters,
    run_sharded,
    write_output,
)

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    previous = ctx.round - 1
    adapters = objective_adapters(ctx, previous)
    bank, tokenizer = ctx.models.load_bank(ctx, adapters)
    candidates = read_jsonl(ctx.run_dir.path(f"r{ctx.round}/sample", "candidates.jsonl"), Candidate)
    reviews = {r.candidate_id: r for r in read_jsonl(ctx.run_dir.path(f"r{ctx.round}/review", "reviews.jsonl"),
                                                       Review)}
    todo = [c for c in candidates if reviews.get(c.candidate_id) and reviews[c.candidate_id].review]

    def work(shard) -> list[Candidate]:
        texts = [rewrite_prompt(c.prompt, c.response, reviews[c.candidate_id].review, cfg.objectives,
                                cfg.objective_descriptions, cfg.rewrite.template) for c in shard]
        mixes = [{adapter_name(o, previous): c.weights[o] for o in cfg.objectives} for c in shard]
        outputs = decode(ctx, bank, tokenizer, format_prompts(tokenizer, texts, cfg), mixes, cfg.rewrite.decode,
                         cfg.model.max_prompt_tokens + 2 * cfg.model.max_response_tokens)
        return [Candidate(candidate_id=c.candidate_id, prompt_id=c.prompt_id, prompt=c.prompt,
                          response=parse_rewrite(raw), weights=c.weights, source="rewrite")
                for c, raw in zip(shard, outputs)]

    rows = run_sharded(ctx.out_dir, todo, work, record=Candidate, key=lambda c: c.candidate_id,
                       shard_size=cfg.shard_size, desc="rewrite")
    usable = [r for r in rows if r.response]
    count = write_output(ctx.out_dir / "rewrites.jsonl", usable)
    finish_shards(ctx.out_dir)
    logger.info("rewrite: %d rewrites for %d candidates (%d without a usable review, %d empty rewrites)",
                count, len(candidates), len(candidates) - len(todo), len(rows) - len(usable))
    return {"candidates": len(candidates), "rewrites": count, "skipped_no_review": len(candidates) - len(todo),
            "empty_rewrites": len(rows) - len(usable)}


SPEC = StageDef(
    name="rewrite", run=run, help="MOD-decode a rewrite of each candidate that follows its review",
    reads="candidates + reviews", writes="`rK/rewrite/rewrites.jsonl`",
    config_keys=("rewrite", "objective_descriptions"), loads_model=True, distributed=True, per_round=True, optional=True,
    renders_templates=True
)
