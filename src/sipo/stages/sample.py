"""Stage ``sample``: MOD decoding of every conflicting training prompt at every sampling weight vector.

Reads ``prepare/train_conflict.jsonl`` and the adapters of the previous round (``dpo/<objective>/`` in round 1);
writes ``rK/sample/candidates.jsonl`` (one :class:`~sipo.records.Candidate` per prompt x weight vector). Prompts
longer than ``model.max_prompt_tokens`` are dropped and counted (``dropped_long_prompts``).

    sipo stage sample configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.artifacts import RunDir
from sipo.config import weight_grid, weights_tag
from sipo.layout import adapter_name, objective_adapters
from sipo.records import Candidate, read_jsonl
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import decode, format_prompts, prompts_that_fit
from sipo.stages.pairs import read_conflict_pairs
from sipo.stages.sharding import finish_shards, run_sharded, sampled_shard_keys, write_output

logger = logging.getLogger(__name__)

OUTPUT = "candidates.jsonl"


def read_candidates(run_dir: RunDir, round_: int) -> list[Candidate]:
    """Round ``round_``'s MOD candidates (this stage's output, read by review, rewrite and combine)."""
    return read_jsonl(run_dir.path(f"r{round_}/sample", OUTPUT), Candidate)


def mod_mix(cfg, weights: dict[str, float], round_: int) -> dict[str, float]:
    """MOD's adapter mix at ``weights`` over the objectives' adapters of round ``round_`` (0: the DPO adapters)."""
    return {adapter_name(o, round_): weights[o] for o in cfg.objectives}


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    previous = ctx.round - 1
    adapters = objective_adapters(ctx.cfg, ctx.run_dir, previous)
    bank, tokenizer = ctx.models.load_bank(ctx, adapters)
    pairs, dropped = prompts_that_fit(tokenizer, read_conflict_pairs(ctx), lambda p: p.prompt, cfg, "sample")
    grid = weight_grid(cfg.objectives, cfg.sample.grid)

    def work(shard_pairs) -> list[Candidate]:
        jobs = [(pair, w) for pair in shard_pairs for w in grid]
        prompts = format_prompts(tokenizer, [pair.prompt for pair, _ in jobs], cfg)
        mixes = [mod_mix(cfg, w, previous) for _, w in jobs]
        responses = decode(ctx, bank, tokenizer, prompts, mixes, cfg.sample.decode, cfg.model.max_prompt_tokens)
        return [
            Candidate(candidate_id=f"{pair.prompt_id}:{weights_tag(w)}", prompt_id=pair.prompt_id,
                      prompt=pair.prompt, response=response, weights=w, source="mod")
            for (pair, w), response in zip(jobs, responses)
        ]

    rows = run_sharded(ctx.out_dir, pairs, work, record=Candidate, key=lambda c: c.candidate_id,
                       shard_size=cfg.shard_size, desc="sample")
    count = write_output(ctx.out_dir / OUTPUT, rows)
    finish_shards(ctx.out_dir)
    empty = sum(1 for r in rows if not r.response.strip())
    logger.info("sample: %d candidates for %d prompts x %d weight vectors (%d empty)",
                count, len(pairs), len(grid), empty)
    return {"prompts": len(pairs), "weight_vectors": len(grid), "candidates": count, "empty_responses": empty,
            "dropped_long_prompts": dropped}


SPEC = StageDef(
    extra_keys=lambda cfg: sampled_shard_keys(cfg.sample.decode),
    name="sample", run=run, help="MOD-decode every conflicting training prompt at every sampling weight vector",
    reads="`prepare/train_conflict.jsonl`", writes="`rK/sample/candidates.jsonl`",
    config_keys=("sample", "model", "seed"), loads_model=True, distributed=True, per_round=True, optional=True
)
