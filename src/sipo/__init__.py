"""sipo: Self-Improvement Towards Pareto Optimality (Li, Zhang et al., ACL Findings 2025)."""

__version__ = "0.1.0"
