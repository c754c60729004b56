"""Stage ``evaluate``: every method decodes the test prompts at every weight vector; a judge scores them.

Methods (``methods``): ``sft`` (the base model, one point), ``dpo`` (each objective's round-1 adapter: the end
points), ``dpo_soups`` (the LoRA soup at ``w``), ``mod`` (MOD over the round-1 adapters), ``dpo_lw`` and ``modpo``
(one adapter per ``w``), ``sipo`` (MOD over the realigned adapters of every round). All decoding shares one base
model and runs as one list of (method, weights, prompt) jobs in mixed-adapter batches.

Reads ``prepare/test_prompts.jsonl`` (prompts longer than ``model.max_prompt_tokens`` are dropped and counted) and
the adapters; writes ``evaluate/scores.jsonl`` (one :class:`~sipo.records.ScoreRow` per method x weights x prompt).

    sipo stage evaluate configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.config import weight_grid, weights_tag
from sipo.errors import ConfigError
from sipo.judges import JUDGES, ScoreItem, Scorer, check_judge_inputs, judge_inputs
from sipo.layout import objective_adapters
from sipo.methods import METHODS, Job, MethodContext
from sipo.records import PromptRecord, ScoreRow, read_jsonl
from sipo.stage import StageContext, StageDef, base_stages
from sipo.stages.model_calls import decode, format_prompts, prompts_that_fit
from sipo.stages.sharding import finish_shards, run_sharded, write_output

logger = logging.getLogger(__name__)


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
    items = [(job, p) for p in prompts for job in jobs]

    def work(shard) -> list[ScoreRow]:
        texts = format_prompts(tokenizer, [p.prompt for _, p in shard], cfg)
        responses = decode(ctx, bank, tokenizer, texts, [job.mix for job, _ in shard], cfg.eval.decode,
                           cfg.model.max_prompt_tokens)
        scores = judge([ScoreItem(str(i), p.prompt, response) for i, ((_, p), response) in enumerate(zip(shard, responses))])
        return [ScoreRow(method=job.method, weights=job.weights, prompt_id=p.prompt_id, response=response,
                         scores={o: float(scores[str(i)][o]) for o in cfg.objectives}, round=job.round)
                for i, ((job, p), response) in enumerate(zip(shard, responses))]

    rows = run_sharded(ctx.out_dir, items, work, shard_size=max(1, len(jobs)) * max(1, cfg.shard_size // 2),
                       record=ScoreRow, key=lambda r: (r.method, r.round, weights_tag(r.weights), r.prompt_id),
                       desc="evaluate")
    count = write_output(ctx.out_dir / "scores.jsonl", rows)
    finish_shards(ctx.out_dir)
    logger.info("evaluate: %d responses (%d points x %d prompts), judge %s", count, len(jobs), len(prompts),
                cfg.eval.judge)
    return {"responses": count, "points": len(jobs), "prompts": len(prompts), "judge": cfg.eval.judge,
            "dropped_long_prompts": dropped}


SPEC = StageDef(
    name="evaluate", run=run, help="decode the test prompts with every method at every weight vector and score them",
    reads="test prompts + adapters", writes="`evaluate/scores.jsonl`",
    config_keys=("eval", "methods", "soup_mode", "rounds", "data.synthetic"), exclude=("eval.reference_point",),
    loads_model=True, distributed=True,
    upstream=lambda cfg, before: ("prepare", *base_stages(cfg), *(i for i, d in before if d.makes_adapters)),
    inputs=lambda cfg: judge_inputs(cfg.eval.judge, cfg), check_inputs=lambda cfg: check_judge_inputs(cfg.eval.judge, cfg)
)
