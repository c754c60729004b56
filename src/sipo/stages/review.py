"""Stage ``review``: the reviewer (default: the first objective's adapter) writes suggestions for each candidate.

Reads ``rK/sample/candidates.jsonl``; writes ``rK/review/reviews.jsonl`` (one :class:`~sipo.records.Review` per
candidate; the review prompt is ``templates/review.jinja`` rendered with the objectives' names and descriptions).

    sipo stage review configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.artifacts import RunDir
from sipo.layout import adapter_dir, adapter_name
from sipo.prompting import parse_review, review_prompt
from sipo.records import Review, read_jsonl
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import decode, format_prompts
from sipo.stages.sample import read_candidates
from sipo.stages.sharding import finish_shards, run_sharded, sampled_shard_keys, write_output

logger = logging.getLogger(__name__)

OUTPUT = "reviews.jsonl"


def read_reviews(run_dir: RunDir, round_: int) -> dict[str, Review]:
    """Round ``round_``'s reviews by candidate id (this stage's output, read by rewrite)."""
    return {r.candidate_id: r for r in read_jsonl(run_dir.path(f"r{round_}/review", OUTPUT), Review)}


def reviewer_of(cfg) -> str:
    """The objective whose adapter writes the reviews (``review.reviewer``, default the first objective)."""
    return cfg.review.reviewer or cfg.objectives[0]


def write_reviews(ctx: StageContext, bank, tokenizer, reviewer: str, prompts: list[str],
                  responses: list[str]) -> list[str]:
    """The raw reviews of ``responses`` (to ``prompts``) by adapter ``reviewer`` of ``bank``: the review template
    rendered with the objectives, decoded with ``review.decode`` (shared with the ``review_probe`` stage)."""
    cfg = ctx.cfg
    texts = [review_prompt(p, r, cfg.objectives, cfg.objective_descriptions, cfg.review.template)
             for p, r in zip(prompts, responses)]
    return decode(ctx, bank, tokenizer, format_prompts(tokenizer, texts, cfg), [{reviewer: 1.0}] * len(texts),
                  cfg.review.decode, cfg.model.max_prompt_tokens + cfg.model.max_response_tokens)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    previous = ctx.round - 1
    reviewer = reviewer_of(cfg)
    name = adapter_name(reviewer, previous)
    bank, tokenizer = ctx.models.load_bank(ctx, {name: adapter_dir(ctx.run_dir, reviewer, previous)})
    candidates = read_candidates(ctx.run_dir, ctx.round)

    def work(shard) -> list[Review]:
        outputs = write_reviews(ctx, bank, tokenizer, name, [c.prompt for c in shard], [c.response for c in shard])
        return [Review(candidate_id=c.candidate_id, prompt_id=c.prompt_id, review=parse_review(raw), raw=raw)
                for c, raw in zip(shard, outputs)]

    rows = run_sharded(ctx.out_dir, candidates, work, record=Review, key=lambda r: r.candidate_id,
                       shard_size=cfg.shard_size, desc="review")
    count = write_output(ctx.out_dir / OUTPUT, rows)
    finish_shards(ctx.out_dir)
    unparsed = sum(1 for r in rows if not r.review)
    logger.info("review: %d reviews by %s (%d empty after parsing)", count, reviewer, unparsed)
    return {"reviews": count, "empty_reviews": unparsed, "reviewer": reviewer}


SPEC = StageDef(
    extra_keys=lambda cfg: sampled_shard_keys(cfg.review.decode),
    name="review", run=run,
    help="the reviewer adapter writes suggestions to improve each candidate on all objectives", reads="candidates",
    writes="`rK/review/reviews.jsonl`", config_keys=("review", "objective_descriptions"),
    exclude=("review.probe_prompts",), loads_model=True,
    distributed=True, per_round=True, optional=True, renders_templates=True
)
