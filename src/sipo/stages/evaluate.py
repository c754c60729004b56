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
from dataclasses import dataclass

from sipo.ablations import ABLATIONS
from sipo.config import weight_grid, weights_tag
from sipo.errors import ConfigError
from sipo.pipeline import StageContext
from sipo.records import PromptRecord, ScoreRow, read_jsonl
from sipo.stages.common import (
    adapter_dir,
    adapter_name,
    finish_shards,
    format_prompts,
    load_bank,
    prompts_that_fit,
    run_sharded,
    soup_name,
    write_output,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    method: str
    round: int
    weights: dict
    mix: dict
    """peft adapter name -> decoding weight."""


def baseline_adapter_name(method: str, weights: dict) -> str:
    return f"{method}_" + weights_tag(weights).replace(".", "p")


def plan_jobs(ctx: StageContext, bank) -> list[Job]:
    """The (method, round, weights) points to decode, loading the adapters they need into ``bank``."""
    cfg = ctx.cfg
    objs = cfg.objectives
    grid = weight_grid(objs, cfg.eval.grid)
    jobs: list[Job] = []
    for method in cfg.methods:
        if method == "sft":
            jobs.append(Job("sft", 1, {}, {"__base__": 1.0}))
        elif method == "dpo":
            for o in objs:
                jobs.append(Job("dpo", 1, {p: float(p == o) for p in objs}, {adapter_name(o, 0): 1.0}))
        elif method == "dpo_soups":
            for w in grid:
                active = [o for o in objs if w[o] > 0]
                if len(active) == 1:
                    mix = {adapter_name(active[0], 0): 1.0}
                else:
                    name = soup_name(w, 0)
                    bank.add_soup(name, {adapter_name(o, 0): w[o] for o in objs}, cfg.soup_mode)
                    mix = {name: 1.0}
                jobs.append(Job("dpo_soups", 1, w, mix))
        elif method == "mod":
            jobs += [Job("mod", 1, w, {adapter_name(o, 0): w[o] for o in objs}) for w in grid]
        elif method == "sipo":
            for r in range(1, cfg.rounds + 1):
                bank_adapters = {adapter_name(o, r): adapter_dir(ctx.run_dir, o, r) for o in objs}
                for name, directory in bank_adapters.items():
                    bank.load_adapter(name, directory)
                jobs += [Job("sipo", r, w, {adapter_name(o, r): w[o] for o in objs}) for w in grid]
        elif method in ABLATIONS:
            names = {}
            for o in objs:
                names[o] = f"{method}_{o}"
                bank.load_adapter(names[o], ctx.run_dir.path(method, o))
            jobs += [Job(method, 1, w, {names[o]: w[o] for o in objs}) for w in grid]
        elif method in ("dpo_lw", "modpo"):
            for w in grid:
                name = baseline_adapter_name(method, w)
                bank.load_adapter(name, ctx.run_dir.path(method, weights_tag(w)))
                jobs.append(Job(method, 1, w, {name: 1.0}))
    return jobs


def make_judge(ctx: StageContext, bank, tokenizer):
    """A callable (prompts, responses) -> {objective: [score]} for ``eval.judge``."""
    cfg = ctx.cfg
    if cfg.eval.judge == "implicit":
        from sipo.records import Candidate
        from sipo.stages.common import judge_rewards

        names = {o: adapter_name(o, 0) for o in cfg.objectives}

        def implicit(prompts, responses):
            cands = [Candidate(candidate_id=str(i), prompt_id="", prompt=p, response=r, weights={})
                     for i, (p, r) in enumerate(zip(prompts, responses))]
            rewards = judge_rewards(ctx, bank, tokenizer, cands, list(names.values()))
            return {o: rewards[name] for o, name in names.items()}

        return implicit
    if cfg.eval.judge == "oracle":
        from sipo.synthetic.oracle import OracleJudge

        return OracleJudge(cfg).score
    if cfg.eval.judge == "length":
        from sipo.scoring.length import length_scores

        return lambda prompts, responses: length_scores(tokenizer, responses, cfg.objectives)
    from sipo.scoring.reward_model import RewardModelJudge

    return RewardModelJudge(cfg, ctx.device).score


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    bank, tokenizer = load_bank(ctx, {adapter_name(o, 0): adapter_dir(ctx.run_dir, o, 0) for o in cfg.objectives})
    prompts = read_jsonl(ctx.run_dir.path("prepare", "test_prompts.jsonl"), PromptRecord)
    prompts, dropped = prompts_that_fit(tokenizer, prompts, lambda p: p.prompt, cfg, "evaluate (test prompts)")
    if not prompts:
        raise ConfigError(f"config key 'model.max_prompt_tokens': every test prompt ({dropped}) is longer than "
                          f"{cfg.model.max_prompt_tokens} tokens")
    jobs = plan_jobs(ctx, bank)
    judge = make_judge(ctx, bank, tokenizer)
    decode = cfg.eval.decode
    items = [(job, p) for p in prompts for job in jobs]

    def work(shard) -> list[ScoreRow]:
        from sipo.decoding.mod import mod_generate

        texts = format_prompts(tokenizer, [p.prompt for _, p in shard], cfg)
        responses = mod_generate(bank, tokenizer, texts, [job.mix for job, _ in shard],
                                 max_new_tokens=decode.max_new_tokens, temperature=decode.temperature,
                                 top_p=decode.top_p, batch_size=decode.batch_size, seed=cfg.seed,
                                 max_prompt_tokens=cfg.model.max_prompt_tokens)
        scores = judge([p.prompt for _, p in shard], responses)
        return [ScoreRow(method=job.method, weights=job.weights, prompt_id=p.prompt_id, response=response,
                         scores={o: float(scores[o][i]) for o in cfg.objectives}, round=job.round)
                for i, ((job, p), response) in enumerate(zip(shard, responses))]

    rows = run_sharded(ctx.out_dir, items, work, shard_size=max(1, len(jobs)) * max(1, cfg.shard_size // 2),
                       key=lambda r: (r["method"], r["round"], weights_tag(r["weights"]), r["prompt_id"]),
                       desc="evaluate")
    count = write_output(ctx.out_dir / "scores.jsonl", rows)
    finish_shards(ctx.out_dir)
    logger.info("evaluate: %d responses (%d points x %d prompts), judge %s", count, len(jobs), len(prompts),
                cfg.eval.judge)
    return {"responses": count, "points": len(jobs), "prompts": len(prompts), "judge": cfg.eval.judge,
            "dropped_long_prompts": dropped}
