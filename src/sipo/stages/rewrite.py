"""Stage ``rewrite``: MOD decoding, with the candidate's own weights, of a rewrite that follows its review.

Reads ``rK/sample/candidates.jsonl`` and ``rK/review/reviews.jsonl`` (joined by ``candidate_id``); writes
``rK/rewrite/rewrites.jsonl`` (a :class:`~sipo.records.Candidate` with ``source="rewrite"`` per candidate that
had a usable review; an unusable review or rewrite is counted and skipped).

    sipo stage rewrite configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.artifacts import RunDir
from sipo.layout import adapter_name, objective_adapters
from sipo.prompting import parse_rewrite, rewrite_prompt
from sipo.records import Candidate, read_jsonl
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import decode, format_prompts
from sipo.stages.review import read_reviews
from sipo.stages.sample import read_candidates
from sipo.stages.sharding import finish_shards, run_sharded, sampled_shard_keys, write_output

logger = logging.getLogger(__name__)

OUTPUT = "rewrites.jsonl"


def read_rewrites(run_dir: RunDir, round_: int) -> dict[str, Candidate]:
    """Round ``round_``'s usable rewrites by candidate id (this stage's output, read by combine)."""
    return {c.candidate_id: c for c in read_jsonl(run_dir.path(f"r{round_}/rewrite", OUTPUT), Candidate)}


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    previous = ctx.round - 1
    adapters = objective_adapters(ctx.cfg, ctx.run_dir, previous)
    bank, tokenizer = ctx.models.load_bank(ctx, adapters)
    candidates = read_candidates(ctx.run_dir, ctx.round)
    reviews = read_reviews(ctx.run_dir, ctx.round)
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
    count = write_output(ctx.out_dir / OUTPUT, usable)
    finish_shards(ctx.out_dir)
    logger.info("rewrite: %d rewrites for %d candidates (%d without a usable review, %d empty rewrites)",
                count, len(candidates), len(candidates) - len(todo), len(rows) - len(usable))
    return {"candidates": len(candidates), "rewrites": count, "skipped_no_review": len(candidates) - len(todo),
            "empty_rewrites": len(rows) - len(usable)}


SPEC = StageDef(
    extra_keys=lambda cfg: sampled_shard_keys(cfg.rewrite.decode),
    name="rewrite", run=run, help="MOD-decode a rewrite of each candidate that follows its review",
    reads="candidates + reviews", writes="`rK/rewrite/rewrites.jsonl`",
    config_keys=("rewrite", "objective_descriptions"), loads_model=True, distributed=True, per_round=True, optional=True,
    renders_templates=True
)
