"""The preference pairs that the training stages read: the conflicting pairs, the training union, and one
objective's trl-style rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sipo.config import PipelineConfig
from sipo.layout import needs_label_stage
from sipo.records import Pair, read_jsonl
from sipo.stages.model_calls import format_prompts

if TYPE_CHECKING:
    from sipo.stage import StageContext


def read_conflict_pairs(ctx: StageContext) -> list[Pair]:
    """The conflicting pairs SIPO improves on: the ``label`` stage's when it runs (one dataset per objective),
    else ``prepare``'s."""
    stage = "label" if needs_label_stage(ctx.cfg) else "prepare"
    return read_jsonl(ctx.run_dir.path(stage, "train_conflict.jsonl"), Pair)


def training_union(ctx: StageContext) -> list[Pair]:
    """Every pair of every objective's training mixture, once, sorted by pair_id."""
    unique: dict[str, Pair] = {}
    for objective in ctx.cfg.objectives:
        for pair in read_jsonl(ctx.run_dir.path("prepare", f"train_{objective}.jsonl"), Pair):
            unique[pair.pair_id] = pair
    return [unique[k] for k in sorted(unique)]


def preference_examples(tokenizer, pairs: Sequence[Pair], objective: str, cfg: PipelineConfig) -> list[dict]:
    """trl-style ``{prompt, chosen, rejected}`` rows of one objective (ties skipped, prompts templated)."""
    rows = []
    for pair, prompt in zip(pairs, format_prompts(tokenizer, [p.prompt for p in pairs], cfg)):
        chosen_rejected = pair.chosen_rejected(objective)
        if chosen_rejected is not None:
            rows.append({"prompt": prompt, "chosen": chosen_rejected[0], "rejected": chosen_rejected[1]})
    return rows
