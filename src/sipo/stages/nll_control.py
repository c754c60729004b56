"""Stage ``nll_control``: the DPO + NLL control of SIPO (see :mod:`sipo.ablations` and :mod:`sipo.stages.ablation`)."""

from sipo.stages.ablation import ablation_spec
from sipo.stages.ablation import run_nll_control as run

SPEC = ablation_spec("nll_control", run, "control: DPO + alpha*NLL on the original conflicting pairs, as many steps as re-alignment",
                     "conflicting pairs, `r1/realign` steps", sources=("r1/realign",))

__all__ = ["SPEC", "run"]
