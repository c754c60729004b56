"""Stage ``sipo_no_filter``: an ablation of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`)."""

from sipo.stages.ablation import ablation_spec
from sipo.stages.ablation import run_selection_ablation as run

SPEC = ablation_spec("sipo_no_filter", run, "ablation: the best candidate by summed judge reward (no need to beat both), re-aligned",
                     "`r1/combine` candidates")

__all__ = ["SPEC", "run"]
