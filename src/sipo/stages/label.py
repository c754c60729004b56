"""Stage ``label`` (only with one dataset per objective): fill the labels the data does not give, then pick the
conflicting prompts.

When ``data.path`` maps objectives to datasets, a pair from objective o's dataset is labelled for o only, so no pair
can conflict and SIPO would have nothing to improve on. This stage runs after ``dpo``: for every training pair
(the union of the objectives' DPO mixtures) and every objective ``u`` the pair is unlabelled for, the round-1 DPO
adapter of ``u`` judges it by implicit reward (``data.fill_judge: implicit``), or the reward model of
``eval.reward_model`` that scores ``u`` (``data.fill_judge: reward_model``): the response with the higher reward
is preferred, equal rewards are a tie. The pair records the objectives it got this way in ``filled`` and the rewards
in its scores. The conflicting prompts are then chosen from the filled pairs exactly as ``prepare`` chooses them
(:func:`sipo.data.splits.select_conflict_pairs`, ``data.conflict_max_ties``).

Why the adapters: they exist at this point of every run, cost no extra model, and are the judges the filter and
the implicit evaluation use anyway. The caveat: the adapter of ``u`` was trained on the other dataset's prompts, so
its labels are a model's guess, not a human's (docs/decisions.md); a reward model avoids that circularity but, when
it is also the evaluation judge, chooses the prompts by the measure that scores the run. With the adapters, prompts
longer than ``model.max_prompt_tokens`` cannot be judged and stay unlabelled (counted).

Writes ``label/pairs.jsonl`` (every training pair, labels filled) and ``label/train_conflict.jsonl`` (what
``sample`` and ``filter`` read instead of ``prepare/train_conflict.jsonl``).

    sipo stage label configs/smoke-hh.yaml run_dir=runs/smoke-hh
"""

from __future__ import annotations

import dataclasses
import logging

from sipo.config import FillJudge
from sipo.data.pairs import is_conflict
from sipo.data.splits import pair_counts, select_conflict_pairs
from sipo.judges import ScoreItem, Scores, by_id, check_judge_inputs, judge_inputs, judge_keys
from sipo.layout import adapter_dir, adapter_name
from sipo.records import Pair, write_jsonl
from sipo.stage import StageContext, StageDef, needs_label_stage
from sipo.stages.model_calls import prompts_that_fit
from sipo.stages.pairs import training_union

logger = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
TRAIN_CONFLICT_FILE = "train_conflict.jsonl"


def fill_labels(pair: Pair, rewards: dict[str, tuple[float, float]]) -> Pair:
    """``pair`` with each objective of ``rewards`` (objective -> (reward of a, reward of b)) labelled by the higher
    reward (equal rewards: a tie) and recorded in ``filled``; pure."""
    preferred = dict(pair.preferred)
    scores_a, scores_b = dict(pair.scores_a), dict(pair.scores_b)
    for objective, (reward_a, reward_b) in rewards.items():
        preferred[objective] = "a" if reward_a > reward_b else "b" if reward_b > reward_a else None
        scores_a[objective], scores_b[objective] = reward_a, reward_b
    return dataclasses.replace(
        pair, preferred=preferred, scores_a=scores_a, scores_b=scores_b, conflict=is_conflict(preferred),
        unlabelled=[o for o in pair.unlabelled if o not in rewards],
        filled=[*pair.filled, *(o for o in rewards if o not in pair.filled)])


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    objectives = list(cfg.objectives)
    pairs = training_union(ctx)
    needed = [o for o in objectives if any(o in p.unlabelled for p in pairs)]
    filled_counts = {o: 0 for o in objectives}
    dropped = 0
    if needed:
        todo = [p for p in pairs if p.unlabelled]
        if cfg.data.fill_judge == FillJudge.reward_model:
            rewards = reward_model_rewards(ctx, todo, needed)
        else:
            todo, rewards, dropped = adapter_rewards(ctx, todo, needed)
        filled: dict[str, Pair] = {}
        for pair in todo:
            side_a, side_b = rewards[f"{pair.pair_id}:a"], rewards[f"{pair.pair_id}:b"]
            judged = {o: (side_a[o], side_b[o]) for o in pair.unlabelled}
            filled[pair.pair_id] = fill_labels(pair, judged)
            for o in judged:
                filled_counts[o] += 1
        pairs = [filled.get(p.pair_id, p) for p in pairs]
    train_conflict, conflict_counts = select_conflict_pairs(
        pairs, objectives, seed=cfg.seed, max_conflict_prompts=cfg.data.max_conflict_prompts,
        conflict_max_ties=cfg.data.conflict_max_ties)
    write_jsonl(ctx.out_dir / PAIRS_FILE, pairs)
    write_jsonl(ctx.out_dir / TRAIN_CONFLICT_FILE, train_conflict)
    counts = pair_counts(pairs, objectives)
    logger.info("label: filled %s labels of %d training pairs (judge: %s); %d conflicting pairs, %d conflicting "
                "prompts for self-improvement", filled_counts, len(pairs), cfg.data.fill_judge,
                counts["conflicting_pairs"], len(train_conflict))
    return {**counts, "filled": filled_counts, "fill_judge": cfg.data.fill_judge, "dropped_long_prompts": dropped,
            **conflict_counts}


def _sides(pairs: list[Pair]) -> list[ScoreItem]:
    """Both responses of every pair, a then b, as items to score (ids ``<pair_id>:a`` and ``<pair_id>:b``)."""
    return [ScoreItem(f"{p.pair_id}:{side}", p.prompt, response)
            for p in pairs for side, response in (("a", p.response_a), ("b", p.response_b))]


def adapter_rewards(ctx: StageContext, pairs: list[Pair], needed: list[str]) -> tuple[list[Pair], Scores, int]:
    """(the pairs that could be judged, side id -> objective -> reward, pairs dropped as too long) by the round-1
    adapters of ``needed``."""
    adapters = {adapter_name(o, 0): adapter_dir(ctx.run_dir, o, 0) for o in needed}
    bank, tokenizer = ctx.models.load_bank(ctx, adapters)
    todo, dropped = prompts_that_fit(tokenizer, pairs, lambda p: p.prompt, ctx.cfg, "label")
    sides = _sides(todo)
    rewards = ctx.models.implicit_rewards(ctx, bank, tokenizer, sides, list(adapters)) if sides else {}
    return todo, {i: {o: r[adapter_name(o, 0)] for o in needed} for i, r in rewards.items()}, dropped


def reward_model_rewards(ctx: StageContext, pairs: list[Pair], needed: list[str]) -> Scores:
    """Side id -> objective -> score, by the reward models of ``eval.reward_model`` (only the models that score
    one of ``needed`` are loaded)."""
    from sipo.scoring.reward_model import RewardModelJudge

    judge = RewardModelJudge(dataclasses.replace(ctx.cfg, objectives=list(needed)), ctx.device)
    sides = _sides(pairs)
    return by_id(sides, judge.score([s.prompt for s in sides], [s.response for s in sides]))


def _fill_judge(cfg) -> str:
    """The judge that fills the labels (its settings and models belong to the stage only when it does)."""
    return FillJudge(cfg.data.fill_judge).value


SPEC = StageDef(
    name="label", run=run,
    help="one dataset per objective: the round-1 adapters fill the missing labels, then pick conflicting prompts",
    reads="training pairs + adapters", writes="`label/train_conflict.jsonl`",
    config_keys=("data", "dpo.beta", "model", "seed"), extra_keys=lambda cfg: judge_keys(_fill_judge(cfg)),
    inputs=lambda cfg: judge_inputs(_fill_judge(cfg), cfg), check_inputs=lambda cfg: check_judge_inputs(_fill_judge(cfg), cfg),
    loads_model=True, optional=True, when=needs_label_stage, note="one dataset per objective, with sipo"
)
