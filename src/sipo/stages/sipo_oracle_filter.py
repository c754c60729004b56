"""Stage ``sipo_oracle_filter``: an ablation of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`).

It selects by the data source's exact oracle (:attr:`sipo.data.SourceDef.oracle`) instead of the filter's judges;
the method's config check refuses a source without one.
"""

from sipo.data import SOURCES
from sipo.judges import ScoreItem
from sipo.stage import StageContext
from sipo.stages.ablation import ablation_spec, run_selection_ablation


def oracle_scores(ctx: StageContext, items: list[ScoreItem]) -> dict[str, dict[str, float]]:
    """Item id -> the oracle's score per objective."""
    cfg = ctx.cfg
    scores = SOURCES[cfg.data.source].oracle(cfg).score([t.prompt for t in items], [t.response for t in items])
    return {t.id: {o: float(scores[o][i]) for o in cfg.objectives} for i, t in enumerate(items)}


def run(ctx: StageContext) -> dict:
    return run_selection_ablation(ctx, oracle_scores)


SPEC = ablation_spec("sipo_oracle_filter", run, "upper bound: the oracle picks the candidate that beats both originals, re-aligned",
                     "`r1/combine` candidates")

__all__ = ["SPEC", "oracle_scores", "run"]
