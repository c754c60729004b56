"""The ablation and control stages (``sipo_no_rewrite``, ``sipo_no_filter``, ``sipo_oracle_filter``,
``nll_control``; :mod:`sipo.ablations` says what each keeps and docs/benchmark.md which question each answers).

A selection ablation reads round 1's candidates, picks per conflicting prompt with its own rule, writes
``<method>/selected.jsonl`` and re-aligns every objective's round-1 adapter on it exactly as ``r1/realign`` does
(same settings, same validation prompts), into ``<method>/<objective>/``. ``nll_control`` trains the same round-1
adapters with DPO + alpha * NLL on the original conflicting pairs, for as many optimizer steps as
``r1/realign`` took for that objective.

    sipo stage sipo_no_rewrite configs/demo.yaml run_dir=runs/demo
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sipo.ablations import ablation_source, select_for
from sipo.judges import ScoreItem
from sipo.layout import adapter_name, objective_adapters, soup_name
from sipo.records import Candidate, CombinedCandidate, Selection, read_jsonl, write_jsonl
from sipo.stage import StageContext, StageDef, base_stages
from sipo.stages.combine import read_combined
from sipo.stages.filter import candidate_weights
from sipo.stages.model_calls import prompts_that_fit
from sipo.stages.pairs import preference_examples, read_conflict_pairs
from sipo.stages.realign import realign_selected, train_from_previous
from sipo.stages.validation import split_by_prompt

logger = logging.getLogger(__name__)


def _read_candidates(ctx: StageContext, method: str) -> list[Candidate]:
    source = ablation_source(method)
    if source == "r1/sample":
        return read_jsonl(ctx.run_dir.path(source, "candidates.jsonl"), Candidate)
    return [c.candidate for c in read_jsonl(ctx.run_dir.path(source, "combined.jsonl"), CombinedCandidate)]


Scores = Callable[[StageContext, list[ScoreItem]], dict[str, dict[str, float]]]
"""``(context, items) ->`` item id -> score per objective (or per judge): what a selection ablation ranks by."""


def judge_scores(ctx: StageContext, items: list[ScoreItem]) -> dict[str, dict[str, float]]:
    """Item id -> the filter's judges' implicit rewards (a selection ablation's scores unless its stage gives
    others)."""
    cfg = ctx.cfg
    judges = [adapter_name(o, 0) for o in cfg.objectives]
    bank, tokenizer = ctx.models.load_bank(ctx, objective_adapters(ctx.cfg, ctx.run_dir, 0))
    if cfg.filter.soups and len(cfg.objectives) > 1:  # the same judges as the filter stage
        for w in candidate_weights(read_combined(ctx.run_dir, 1), cfg.objectives):
            name = soup_name(w, 0)
            bank.add_soup(name, {adapter_name(o, 0): w[o] for o in cfg.objectives}, cfg.soup_mode)
            judges.append(name)
    return ctx.models.implicit_rewards(ctx, bank, tokenizer, items, judges)


def select(ctx: StageContext, method: str, score: Scores = judge_scores) -> tuple[list[Selection], dict]:
    """The ablation's selections (one per kept prompt), in prompt-id order, and its counts; ``score`` gives the
    scores it selects by."""
    pairs = {p.prompt_id: p for p in read_conflict_pairs(ctx)}
    by_prompt: dict[str, list[Candidate]] = {}
    for c in _read_candidates(ctx, method):
        if c.prompt_id in pairs:
            by_prompt.setdefault(c.prompt_id, []).append(c)
    prompt_ids = sorted(by_prompt)
    items: list[ScoreItem] = []
    for pid in prompt_ids:
        pair = pairs[pid]
        items += [ScoreItem(f"{pid}:original-{side}", pair.prompt, r)
                  for side, r in (("a", pair.response_a), ("b", pair.response_b))]
        items += [ScoreItem(c.candidate_id, c.prompt, c.response) for c in by_prompt[pid]]
    scores = score(ctx, items) if items else {}
    selections = []
    for pid in prompt_ids:
        pair, cands = pairs[pid], {c.candidate_id: c for c in by_prompt[pid]}
        chosen, rejected = scores[f"{pid}:original-a"], scores[f"{pid}:original-b"]
        best = select_for(method, [(cid, scores[cid]) for cid in cands], chosen, rejected)
        if best is None:
            continue
        selections.append(Selection(prompt_id=pid, prompt=pair.prompt, response=cands[best].response,
                                    candidate_id=best, pair_id=pair.pair_id, response_a=pair.response_a,
                                    response_b=pair.response_b, judge_scores=dict(scores[best])))
    counts = {"prompts": len(prompt_ids), "selected_prompts": len(selections),
              "survival_rate": round(len(selections) / max(1, len(prompt_ids)), 4)}
    logger.info("%s: kept %d of %d prompts", method, len(selections), len(prompt_ids))
    return selections, counts


def run_selection_ablation(ctx: StageContext, score: Scores = judge_scores) -> dict:
    """Select with ``score`` (the filter's judges by default), write the selections and re-align on them."""
    method = ctx.stage.name
    selections, counts = select(ctx, method, score)
    write_jsonl(ctx.out_dir / "selected.jsonl", selections)
    counts.update(realign_selected(ctx, selections, ctx.out_dir, what=method))
    return counts


def realign_steps(ctx: StageContext) -> dict[str, int]:
    """Optimizer steps ``r1/realign`` ran per objective (the NLL control's budget)."""
    manifest = ctx.run_dir.read_manifest("r1/realign") or {}
    counts = manifest.get("counts", {})
    return {o: int((counts.get(f"metrics_{o}") or {}).get("steps", 0)) for o in ctx.cfg.objectives}


def run_nll_control(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    tokenizer = ctx.models.load_tokenizer(ctx)
    pairs, dropped = prompts_that_fit(tokenizer, read_conflict_pairs(ctx), lambda p: p.prompt, cfg, "nll_control")
    fraction = cfg.realign.validation_fraction if cfg.realign.train.select_best else 0.0
    train_pairs, eval_pairs = split_by_prompt(pairs, lambda p: p.prompt_id, cfg.seed, fraction)
    examples = {o: (preference_examples(tokenizer, train_pairs, o, cfg), preference_examples(tokenizer, eval_pairs, o, cfg))
                for o in cfg.objectives}
    budget = realign_steps(ctx)
    counts: dict = {"pairs": len(train_pairs), "validation_pairs": len(eval_pairs), "dropped_long_prompts": dropped,
                    "budget_steps": budget}
    counts.update(train_from_previous(ctx, examples, ctx.out_dir, tokenizer, max_steps=budget, what="nll_control"))
    return counts


def ablation_spec(name: str, run, help_text: str, reads: str, sources: tuple[str, ...] = ("r1/combine",)) -> StageDef:
    """The declaration of an ablation stage (its method of the same name trains it; docs/benchmark.md): it reads
    the pairs (and the conflicts the label stage picked, when it runs), the DPO adapters and ``sources``, the
    round-1 stages whose candidates (or re-alignment budget) it uses."""

    def upstream(cfg, before) -> tuple[str, ...]:
        conflicts = tuple(i for i, d in before if d.name == "label")
        return ("prepare", *conflicts, "dpo", *sources, *base_stages(cfg))

    return StageDef(name=name, run=run, help=help_text, reads=reads, writes=f"`{name}/<o>/`",
                    config_keys=("realign", "filter", "soup_mode", "dpo.beta"), loads_model=True, distributed=True,
                    optional=True, makes_adapters=True, note="only if in methods", upstream=upstream)
