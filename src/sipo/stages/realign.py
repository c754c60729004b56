"""Stage ``realign``: DPO + alpha * NLL on the selected responses, from each objective's previous adapter.

For every objective ``o`` and every selected response ``s`` the new pairs are ``(x, s > y_a)`` and
``(x, s > y_b)`` (both original responses of the conflicting pair). Training starts from, and is referenced to,
that objective's adapter of the previous round. Reads ``rK/filter/selected.jsonl``; writes
``rK/realign/<objective>/``. Resumable per objective: a killed run keeps the adapters it finished.

    sipo stage realign configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging
import shutil

from sipo.artifacts import atomic_path
from sipo.stage import StageContext, StageDef
from sipo.stages.common import (
    adapter_dir,
    finish_units,
    format_prompts,
    train_adapter,
)
from sipo.stages.filter import read_selected

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    from sipo.training.settings import LossSpec

    cfg = ctx.cfg
    selected = read_selected(ctx.run_dir, ctx.round)
    tokenizer = ctx.models.load_tokenizer(ctx)
    prompts = format_prompts(tokenizer, [s.prompt for s in selected], cfg)
    examples = [{"prompt": p, "chosen": s.response, "rejected": other}
                for p, s in zip(prompts, selected) for other in (s.response_a, s.response_b)]
    counts: dict = {"selected": len(selected), "pairs": len(examples)}
    for objective in cfg.objectives:
        init = adapter_dir(ctx.run_dir, objective, ctx.round - 1)
        out = ctx.out_dir / objective
        if not examples:
            logger.warning("realign: the filter kept no response; the %s adapter is carried over unchanged",
                           objective)
            with atomic_path(out) as tmp:
                shutil.copytree(init, tmp)
            continue
        # DPO + alpha * NLL from, and referenced to, the previous round's adapter (plain DPO when alpha is 0).
        loss = LossSpec("dpo_nll", nll_alpha=cfg.realign.alpha) if cfg.realign.alpha else LossSpec("dpo")
        counts[f"metrics_{objective}"] = train_adapter(ctx, objective, tokenizer, examples, out,
                                                       beta=cfg.realign.beta, train=cfg.realign.train, loss=loss,
                                                       lora=cfg.dpo.lora, init_adapter=init, reference="init")
    finish_units(ctx)
    return counts


SPEC = StageDef(
    name="realign", run=run,
    help="DPO + alpha*NLL on (selected > chosen), (selected > rejected) from each round's adapters",
    reads="selected", writes="`rK/realign/<o>/`", config_keys=("realign",), loads_model=True, distributed=True,
    per_round=True, optional=True, makes_adapters=True
)
