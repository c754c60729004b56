"""Stage ``sipo_oracle_filter``: an ablation of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`)."""

from sipo.stages.ablation import ablation_spec
from sipo.stages.ablation import run_selection_ablation as run

SPEC = ablation_spec("sipo_oracle_filter", run, "upper bound: the oracle picks the candidate that beats both originals, re-aligned",
                     "`r1/combine` candidates")

__all__ = ["SPEC", "run"]
