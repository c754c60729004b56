"""Stage ``realign``: DPO + alpha * NLL on the selected responses, from each objective's previous adapter.

For every objective ``o`` and every selected response ``s`` the new pairs are ``(x, s > y_a)`` and
``(x, s > y_b)`` (both original responses of the conflicting pair). Training starts from, and is referenced to,
that objective's adapter of the previous round. Reads ``rK/filter/selected.jsonl``; writes
``rK/realign/<objective>/``. Resumable per objective: a killed run keeps the adapters it finished.

    sipo stage realign configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from sipo.artifacts import atomic_path
from sipo.layout import adapter_dir
from sipo.records import Selection
from sipo.stage import StageContext, StageDef
from sipo.stages.filter import read_selected
from sipo.stages.model_calls import format_prompts, train_adapter
from sipo.stages.sharding import finish_units
from sipo.stages.validation import split_by_prompt

logger = logging.getLogger(__name__)


def realign_pairs(prompts: list[str], selected: list[Selection]) -> list[dict]:
    """``(x, s > y_a)`` and ``(x, s > y_b)`` for every selected ``s`` (``prompts``: the templated prompts)."""
    return [{"prompt": p, "chosen": s.response, "rejected": other}
            for p, s in zip(prompts, selected) for other in (s.response_a, s.response_b)]


def _with_max_steps(train, steps: int):
    return dataclasses.replace(train, max_steps=steps)


def train_from_previous(ctx: StageContext, examples: Mapping[str, tuple[list[dict], list[dict]]], out_root: Path,
                        tokenizer, *, max_steps: Mapping[str, int] | None = None, what: str = "realign") -> dict:
    """Train each objective's adapter with DPO + alpha * NLL from (and referenced to) its previous-round adapter.

    Args:
        examples: objective -> (training pairs, validation pairs), templated prompts.
        out_root: the adapters go to ``out_root/<objective>``.
        max_steps: objective -> optimizer steps to run instead of ``realign.train``'s epochs (the NLL control's
            budget); 0 carries the previous adapter over unchanged.

    Returns:
        the counts: ``metrics_<objective>`` per objective.
    """
    from sipo.training.settings import LossSpec

    cfg = ctx.cfg
    counts: dict = {}
    for objective in cfg.objectives:
        init = adapter_dir(ctx.run_dir, objective, ctx.round - 1)
        out = out_root / objective
        train_examples, eval_examples = examples[objective]
        steps = None if max_steps is None else int(max_steps.get(objective, 0))
        if not train_examples or steps == 0:
            logger.warning("%s: nothing to train on; the %s adapter is carried over unchanged", what, objective)
            with atomic_path(out) as tmp:
                shutil.copytree(init, tmp)
            counts[f"metrics_{objective}"] = {"steps": 0, "examples": 0, "pairs_seen": 0}
            continue
        settings = cfg.realign.train if steps is None else _with_max_steps(cfg.realign.train, steps)
        # DPO + alpha * NLL from, and referenced to, the previous round's adapter (plain DPO when alpha is 0).
        loss = LossSpec("dpo_nll", nll_alpha=cfg.realign.alpha) if cfg.realign.alpha else LossSpec("dpo")
        counts[f"metrics_{objective}"] = train_adapter(ctx, objective, tokenizer, train_examples, out,
                                                       beta=cfg.realign.beta, train=settings, loss=loss,
                                                       lora=cfg.dpo.lora, init_adapter=init, reference="init",
                                                       eval_examples=eval_examples)
    finish_units(ctx)
    return counts


def split_selected(ctx: StageContext, selected: list[Selection]) -> tuple[list[Selection], list[Selection]]:
    """(training, validation) selections: validation holds the prompts of ``realign.validation_fraction`` when
    ``realign.train.select_best`` (the NLL control holds out the same prompts)."""
    cfg = ctx.cfg
    fraction = cfg.realign.validation_fraction if cfg.realign.train.select_best else 0.0
    return split_by_prompt(selected, lambda s: s.prompt_id, cfg.seed, fraction)


def realign_selected(ctx: StageContext, selected: list[Selection], out_root: Path, what: str = "realign") -> dict:
    """Re-align every objective's adapter on ``selected`` (the SIPO re-alignment; the ablations reuse it)."""
    tokenizer = ctx.models.load_tokenizer(ctx)
    train_sel, eval_sel = split_selected(ctx, selected)
    train_examples = realign_pairs(format_prompts(tokenizer, [s.prompt for s in train_sel], ctx.cfg), train_sel)
    eval_examples = realign_pairs(format_prompts(tokenizer, [s.prompt for s in eval_sel], ctx.cfg), eval_sel)
    counts: dict = {"selected": len(selected), "pairs": len(train_examples), "validation_pairs": len(eval_examples)}
    examples = {o: (train_examples, eval_examples) for o in ctx.cfg.objectives}
    counts.update(train_from_previous(ctx, examples, out_root, tokenizer, what=what))
    return counts


def run(ctx: StageContext) -> dict:
    return realign_selected(ctx, read_selected(ctx.run_dir, ctx.round), ctx.out_dir)


SPEC = StageDef(
    name="realign", run=run,
    help="DPO + alpha*NLL on (selected > chosen), (selected > rejected) from each round's adapters",
    reads="selected", writes="`rK/realign/<o>/`", config_keys=("realign",), loads_model=True, distributed=True,
    per_round=True, optional=True, makes_adapters=True
)
