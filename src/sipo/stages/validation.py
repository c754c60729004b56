"""Validation pairs for the preference trainings that keep their best checkpoint (``train.select_best``).

Round-1 DPO, DPO-LW and MODPO validate on the pairs of the validation prompts (``prepare/validation.jsonl``,
``data.validation_fraction``); re-alignment and its controls hold out a seeded share of their prompts
(``realign.validation_fraction``, :func:`holds_out`), the same prompts for SIPO and for each control, so their
validation losses are measured on the same questions (docs/benchmark.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from sipo.records import Pair, read_jsonl
from sipo.stages.model_calls import prompts_that_fit

T = TypeVar("T")


def round_one_validation(ctx, tokenizer) -> list[Pair]:
    """The validation pairs whose prompt fits (empty unless ``dpo.train.select_best``)."""
    if not ctx.cfg.dpo.train.select_best:
        return []
    path = ctx.run_dir.path("prepare", "validation.jsonl")
    if not path.is_file():
        return []
    pairs, _ = prompts_that_fit(tokenizer, read_jsonl(path, Pair), lambda p: p.prompt, ctx.cfg,
                                f"{ctx.stage.id} (validation pairs)")
    return pairs


def holds_out(seed: int, prompt_id: str, fraction: float) -> bool:
    """Whether a prompt is a re-alignment validation prompt: a seeded hash of its id falls below ``fraction``."""
    digest = hashlib.sha256(f"sipo-realign-validation:{seed}:{prompt_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12 < fraction


def split_by_prompt(items: Sequence[T], prompt_id: Callable[[T], str], seed: int, fraction: float
                    ) -> tuple[list[T], list[T]]:
    """(train, validation) by :func:`holds_out`; with fraction 0, or if it would leave no training item,
    everything trains."""
    if fraction <= 0:
        return list(items), []
    train = [x for x in items if not holds_out(seed, prompt_id(x), fraction)]
    validation = [x for x in items if holds_out(seed, prompt_id(x), fraction)]
    if not train:
        return list(items), []
    return train, validation
