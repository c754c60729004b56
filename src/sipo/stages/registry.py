"""The stages of the pipeline, in execution order: the one list that the orchestrator, ``sipo --help``, the input
checks and the README's stage table are derived from.

A new stage is a module under ``sipo/stages/`` with a ``run`` function and a ``SPEC`` declaration, plus one entry
here (or, from outside the package, ``STAGES.register(spec, before="evaluate")``: it then runs when a method's
``trains`` names it, and ``evaluate`` reads its adapters when its definition says ``makes_adapters``).
"""

from __future__ import annotations

from sipo.registry import Registry
from sipo.stage import StageDef
from sipo.stages import (
    combine,
    dpo,
    dpo_lw,
    evaluate,
    label,
    modpo,
    nll_control,
    prepare,
    realign,
    report,
    review,
    review_probe,
    rewrite,
    sample,
    sft,
    sipo_no_filter,
    sipo_no_rewrite,
    sipo_oracle_filter,
)
from sipo.stages import filter as filter_stage

STAGES: Registry[StageDef] = Registry("stage")
for _module in (prepare, sft, dpo, label, sample, review, rewrite, combine, filter_stage, realign, review_probe,
                sipo_no_rewrite, sipo_no_filter, sipo_oracle_filter, nll_control, dpo_lw, modpo, evaluate, report):
    STAGES.register(_module.SPEC)

ROUND_STAGES = tuple(name for name in STAGES if STAGES[name].per_round)
"""The stages of one self-improvement round, in order (``r<k>/sample`` ... ``r<k>/realign``)."""


def stage_table() -> str:
    """The README's stage table (stage, reads, does, writes), one row per registered stage."""
    lines = ["| stage | reads | does | writes |", "|---|---|---|---|"]
    lines += [f"| `{d.name}` | {d.reads} | {d.help} | {d.writes} |" for d in STAGES.values()]
    return "\n".join(lines)


def stages_text() -> str:
    """The stage list of ``sipo --help``."""
    width = max(len(name) for name in STAGES)
    lines = ["stages (in order; each writes RUN_DIR/<stage>/ and a manifest.json last; finished stages are skipped):"]
    for d in STAGES.values():
        note = f" ({d.note})" if d.note else ""
        lines.append(f"  {d.name:<{width}}  {d.help}")
        lines.append(f"  {'':<{width}}    -> {d.writes.replace('`', '')}{note}")
    return "\n".join(lines) + "\n"
