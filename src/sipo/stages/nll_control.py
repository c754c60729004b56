"""Stage ``nll_control``: the DPO + NLL control of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`)."""

from sipo.stages.ablation import run_nll_control as run

__all__ = ["run"]
