"""Stage ``sipo_oracle_filter``: an ablation of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`)."""

from sipo.stages.ablation import run_selection_ablation as run

__all__ = ["run"]
