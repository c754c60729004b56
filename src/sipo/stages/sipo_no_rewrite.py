"""Stage ``sipo_no_rewrite``: an ablation of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`)."""

from sipo.stages.ablation import ablation_spec
from sipo.stages.ablation import run_selection_ablation as run

SPEC = ablation_spec("sipo_no_rewrite", run, "ablation: SIPO's filter on the MOD samples (no review, no rewrite), then re-alignment",
                     "`r1/sample` candidates", sources=("r1/sample", "r1/combine"))

__all__ = ["SPEC", "run"]
