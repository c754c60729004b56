"""Stage ``review_probe``: the review diagnostic on two entity sets (a benchmark with held-out entities).

SIPO rests on the reviewer's skill. The loop's own reviews (``r1/review``) measure it on the entities the loop trains
on; this stage measures it the same way on the entities the loop never sees, whose review demonstrations the SFT data
may also leave out (``data.synthetic.heldout_demos: false``): does the skill carry over? For each set that the data
source names (the synthetic benchmark: ``in_distribution``, its loop's entities, and ``transfer``, the held-out
ones), up to ``review.probe_prompts`` *training* prompts are answered by MOD over the round-1 adapters at every
sampling weight vector, exactly as ``r1/sample`` does, and each answer is reviewed by the round-1 reviewer, exactly as
``r1/review`` does. The source's ``review_skill`` measures the reviews against its ground truth.

Nothing reads these reviews back into the loop: the stage only writes ``review_probe/reviews.jsonl`` (one row per
answer: set, prompt, answer, review) and the skill per set in its manifest, which the report shows.

    sipo stage review_probe configs/demo.yaml run_dir=runs/demo
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sipo.config import weight_grid, weights_tag
from sipo.data import SOURCES
from sipo.layout import adapter_name, objective_adapters
from sipo.prompting import parse_review
from sipo.records import PromptRecord
from sipo.stage import StageContext, StageDef
from sipo.stages.model_calls import decode, format_prompts, prompts_that_fit
from sipo.stages.review import reviewer_of, write_reviews
from sipo.stages.sample import mod_mix
from sipo.stages.sharding import finish_shards, run_sharded, sampled_shard_keys, write_output

logger = logging.getLogger(__name__)

OUTPUT = "reviews.jsonl"


@dataclass(frozen=True)
class ProbeReview:
    """One probed answer and its review."""

    set: str
    prompt_id: str
    prompt: str
    weights: dict[str, float]
    response: str
    review: str
    raw: str = ""


def probe_sets(cfg: Any) -> dict[str, list[PromptRecord]]:
    """The source's probe prompts (``{set: prompts}``; empty when it has none or ``review.probe_prompts`` is 0)."""
    hook = SOURCES.choose(cfg.data.source, "data.source").review_probe
    if hook is None or cfg.review.probe_prompts < 1:
        return {}
    return {name: prompts for name, prompts in hook(cfg, cfg.review.probe_prompts).items() if prompts}


def _planned(cfg: Any) -> bool:
    source = SOURCES[cfg.data.source] if cfg.data.source in SOURCES else None
    return (source is not None and source.review_probe is not None and source.review_skill is not None
            and cfg.review.probe_prompts > 0)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    sets = probe_sets(cfg)
    measure = SOURCES.choose(cfg.data.source, "data.source").review_skill
    reviewer = reviewer_of(cfg)
    reviewer_name = adapter_name(reviewer, 0)
    bank, tokenizer = ctx.models.load_bank(ctx, objective_adapters(cfg, ctx.run_dir, 0))
    grid = weight_grid(cfg.objectives, cfg.sample.grid)
    items: list[tuple[str, PromptRecord]] = []
    dropped = 0
    for name, prompts in sets.items():
        kept, too_long = prompts_that_fit(tokenizer, prompts, lambda p: p.prompt, cfg, f"review_probe ({name})")
        items += [(name, p) for p in kept]
        dropped += too_long

    def work(shard: list[tuple[str, PromptRecord]]) -> list[ProbeReview]:
        jobs = [(name, p, w) for name, p in shard for w in grid]
        prompts = [p.prompt for _, p, _ in jobs]
        answers = decode(ctx, bank, tokenizer, format_prompts(tokenizer, prompts, cfg),
                         [mod_mix(cfg, w, 0) for _, _, w in jobs], cfg.sample.decode, cfg.model.max_prompt_tokens)
        raws = write_reviews(ctx, bank, tokenizer, reviewer_name, prompts, answers)
        return [ProbeReview(set=name, prompt_id=p.prompt_id, prompt=p.prompt, weights=w, response=answer,
                            review=parse_review(raw), raw=raw)
                for (name, p, w), answer, raw in zip(jobs, answers, raws)]

    rows = run_sharded(ctx.out_dir, items, work, record=ProbeReview,
                       key=lambda r: (r.set, r.prompt_id, weights_tag(r.weights)), shard_size=cfg.shard_size,
                       desc="review_probe")
    write_output(ctx.out_dir / OUTPUT, rows)
    finish_shards(ctx.out_dir)
    skill = {name: measure(cfg, [(r.prompt, r.response, r.review) for r in rows if r.set == name])
             for name in sets}
    for name, value in skill.items():
        logger.info("review_probe: %s: %s reviews, corrected share %s, wrong-change share %s", name,
                    value.get("reviews"), value.get("corrected_share"), value.get("wrong_change_share"))
    return {"reviewer": reviewer, "answers": len(rows), "dropped_long_prompts": dropped, "skill": skill}


def read_probe(run_dir: Any) -> dict[str, Any] | None:
    """The review skill per entity set from the stage's manifest (None when the stage did not run)."""
    manifest = run_dir.read_manifest("review_probe")
    return (manifest or {}).get("counts", {}).get("skill") if manifest else None


SPEC = StageDef(
    extra_keys=lambda cfg: sampled_shard_keys(cfg.sample.decode) + sampled_shard_keys(cfg.review.decode),
    name="review_probe", run=run,
    help="diagnostic: the round-1 reviewer reviews MOD answers to training prompts of the loop's entities and of "
         "held-out ones",
    reads="round-1 adapters", writes="`review_probe/reviews.jsonl`",
    config_keys=("sample", "review", "model", "seed", "objective_descriptions", "data.synthetic"),
    loads_model=True, distributed=True, optional=True, renders_templates=True, when=_planned,
    note="only with sipo, on a benchmark with held-out entities",
)
