"""sipo: Self-Improvement Towards Pareto Optimality (Li, Zhang et al., ACL Findings 2025)."""

__version__ = "0.1.0"


def load(run_dir, device=None):
    """Open a finished run directory for decoding at any weights: ``sipo.load("runs/demo").generate(prompts,
    {"correctness": 0.3, "verbosity": 0.7}, method="sipo")`` (see :mod:`sipo.api`)."""
    from sipo.api import load as _load

    return _load(run_dir, device=device)
