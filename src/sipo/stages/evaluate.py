"""Stage ``evaluate``: every method decodes the test prompts at every weight vector; a judge scores them.

Methods (``methods``): ``sft`` (the base model, one point), ``dpo`` (each objective's round-1 adapter: the end
points), ``dpo_soups`` (the LoRA soup at ``w``), ``mod`` (MOD over the round-1 adapters), ``dpo_lw`` and ``modpo``
(one adapter per ``w``), ``sipo`` (MOD over the realigned adapters of every round). All decoding shares one base
model and runs as one list of (method, weights, prompt) jobs in mixed-adapter batches.

Reads ``prepare/test_prompts.jsonl`` (prompts longer than ``model.max_prompt_tokens`` are dropped and counted) and
the adapters; writes ``evaluate/scores.jsonl`` (one :class:`~sipo.records.ScoreRow` per method x weights x prompt).

With ``eval.validation`` (the default) the same jobs also decode the *validation prompts*: the distinct prompts of
``prepare/validation.jsonl`` (at most ``eval.max_validation_prompts``, a seeded choice by prompt id), scored by the
same judge, in the same sharded job list; their rows go to ``evaluate/validation_scores.jsonl`` (same ScoreRow
format), never into ``scores.jsonl``. The report's validation front is computed from them, so that choices and
validity checks can be made without a test number. A run without validation prompts writes no such file.

    sipo stage evaluate configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sipo.config import weight_grid, weights_tag
from sipo.errors import ConfigError
from sipo.judges import JUDGES, ScoreItem, Scorer, check_judge_inputs, judge_inputs
from sipo.layout import objective_adapters
from sipo.methods import METHODS, Job, MethodContext
from sipo.records import Pair, PromptRecord, ScoreRow, read_jsonl
from sipo.stage import StageContext, StageDef, base_stages
from sipo.stages.model_calls import decode, format_prompts, prompts_that_fit
from sipo.stages.sharding import finish_shards, run_sharded, sampled_shard_keys, write_output

logger = logging.getLogger(__name__)

VALIDATION_SCORES = "validation_scores.jsonl"
TEST, VALIDATION = "test", "validation"


@dataclass(frozen=True)
class SplitScoreRow(ScoreRow):
    """A shard row: a ScoreRow and whether its prompt is a test or a validation prompt."""

    split: str = TEST

    def score_row(self) -> ScoreRow:
        return ScoreRow(method=self.method, weights=self.weights, prompt_id=self.prompt_id, response=self.response,
                        scores=self.scores, round=self.round, prompt=self.prompt)


def choose_validation_prompts(pairs: list[Pair], limit: int, seed: int) -> list[PromptRecord]:
    """The distinct prompts of the validation pairs, in prompt-id order; above ``limit``, the ``limit`` prompts
    whose seeded hash of the id is lowest (the same choice for every method). Pure."""
    prompts: dict[str, str] = {}
    for pair in pairs:
        prompts.setdefault(pair.prompt_id, pair.prompt)
    ids = sorted(prompts)
    if len(ids) > limit:
        def rank(prompt_id: str) -> str:
            return hashlib.sha256(f"sipo-eval-validation:{seed}:{prompt_id}".encode()).hexdigest()

        ids = sorted(sorted(ids, key=rank)[:limit])
    return [PromptRecord(prompt_id=i, prompt=prompts[i]) for i in ids]


def validation_prompts(ctx: StageContext, tokenizer) -> tuple[list[PromptRecord], int]:
    """The validation prompts to evaluate (empty without ``eval.validation`` or validation pairs) and how many of
    them were dropped as too long."""
    cfg = ctx.cfg
    path = ctx.run_dir.path("prepare", "validation.jsonl")
    if not cfg.eval.validation or not path.is_file():
        return [], 0
    chosen = choose_validation_prompts(read_jsonl(path, Pair), cfg.eval.max_validation_prompts, cfg.seed)
    if not chosen:
        return [], 0
    return prompts_that_fit(tokenizer, chosen, lambda p: p.prompt, cfg, "evaluate (validation prompts)")


def plan_jobs(ctx: StageContext, bank) -> list[Job]:
    """The (method, round, weights) points to decode, in ``methods`` order; each method's registered ``points``
    loads the adapters it needs into ``bank``."""
    cfg = ctx.cfg
    methods = MethodContext(cfg=cfg, run_dir=ctx.run_dir, bank=bank, grid=weight_grid(cfg.objectives, cfg.eval.grid))
    jobs: list[Job] = []
    for name in cfg.methods:
        jobs += METHODS.choose(name, "methods").points(methods)
    return jobs


def make_judge(ctx: StageContext, bank, tokenizer) -> Scorer:
    """The registered scorer of ``eval.judge``."""
    return JUDGES.choose(ctx.cfg.eval.judge, "eval.judge").build(ctx, bank, tokenizer)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    bank, tokenizer = ctx.models.load_bank(ctx, objective_adapters(ctx.cfg, ctx.run_dir, 0))
    prompts = read_jsonl(ctx.run_dir.path("prepare", "test_prompts.jsonl"), PromptRecord)
    prompts, dropped = prompts_that_fit(tokenizer, prompts, lambda p: p.prompt, cfg, "evaluate (test prompts)")
    if not prompts:
        raise ConfigError(f"config key 'model.max_prompt_tokens': every test prompt ({dropped}) is longer than "
                          f"{cfg.model.max_prompt_tokens} tokens")
    jobs = plan_jobs(ctx, bank)
    judge = make_judge(ctx, bank, tokenizer)
    validation, dropped_validation = validation_prompts(ctx, tokenizer)
    items = [(job, p, TEST) for p in prompts for job in jobs]
    items += [(job, p, VALIDATION) for p in validation for job in jobs]

    def work(shard) -> list[SplitScoreRow]:
        texts = format_prompts(tokenizer, [p.prompt for _, p, _ in shard], cfg)
        responses = decode(ctx, bank, tokenizer, texts, [job.mix for job, _, _ in shard], cfg.eval.decode,
                           cfg.model.max_prompt_tokens)
        scores = judge([ScoreItem(str(i), p.prompt, response)
                        for i, ((_, p, _), response) in enumerate(zip(shard, responses))])
        return [SplitScoreRow(method=job.method, weights=job.weights, prompt_id=p.prompt_id, response=response,
                              scores={o: float(scores[str(i)][o]) for o in cfg.objectives}, round=job.round,
                              split=split, prompt=p.prompt)
                for i, ((job, p, split), response) in enumerate(zip(shard, responses))]

    rows = run_sharded(ctx.out_dir, items, work, shard_size=max(1, len(jobs)) * max(1, cfg.shard_size // 2),
                       record=SplitScoreRow,
                       key=lambda r: (r.split, r.method, r.round, weights_tag(r.weights), r.prompt_id),
                       desc="evaluate")
    count = write_output(ctx.out_dir / "scores.jsonl", [r.score_row() for r in rows if r.split == TEST])
    counts = {"responses": count, "points": len(jobs), "prompts": len(prompts), "judge": cfg.eval.judge,
              "dropped_long_prompts": dropped}
    if validation:
        counts["validation_responses"] = write_output(
            ctx.out_dir / VALIDATION_SCORES, [r.score_row() for r in rows if r.split == VALIDATION])
        counts["validation_prompts"] = len(validation)
        counts["dropped_long_validation_prompts"] = dropped_validation
    finish_shards(ctx.out_dir)
    logger.info("evaluate: %d responses (%d points x %d prompts), judge %s; %d validation prompts", count,
                len(jobs), len(prompts), cfg.eval.judge, len(validation))
    return counts


SPEC = StageDef(
    extra_keys=lambda cfg: sampled_shard_keys(cfg.eval.decode),
    name="evaluate", run=run,
    help="decode the test (and validation) prompts with every method at every weight vector and score them",
    reads="test prompts + validation prompts + adapters",
    writes="`evaluate/scores.jsonl`, `evaluate/validation_scores.jsonl`",
    config_keys=("eval", "methods", "soup_mode", "rounds", "data.synthetic"), exclude=("eval.reference_point",),
    loads_model=True, distributed=True,
    upstream=lambda cfg, before: ("prepare", *base_stages(cfg), *(i for i, d in before if d.makes_adapters)),
    inputs=lambda cfg: judge_inputs(cfg.eval.judge, cfg), check_inputs=lambda cfg: check_judge_inputs(cfg.eval.judge, cfg)
)
