"""The ablations and controls of SIPO (docs/benchmark.md): which candidates each one keeps. Pure functions.

Each ablation is a method of its own (a name in ``methods``), evaluated like ``sipo`` (MOD over its re-aligned
adapters), and reuses the loop's upstream stages (round 1):

- ``sipo_no_rewrite``: the MOD samples (``r1/sample``) go straight to SIPO's filter: no review, no rewrite;
- ``sipo_no_filter``: among the combined candidates (``r1/combine``), the one with the best summed judge reward,
  whether or not it beats both original responses;
- ``sipo_oracle_filter``: the oracle (synthetic benchmark only) picks, among the combined candidates, the one
  that Pareto-dominates both originals (at least as good on every objective, better on one: exact scores tie, and an
  error-free short answer can only be matched on correctness), best summed oracle score first: an upper bound on
  the filter;
- ``nll_control``: no new responses at all: DPO + alpha * NLL on the original conflicting pairs (each objective's
  own chosen response), from the same round-1 adapters and for as many optimizer steps as SIPO's re-alignment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sipo.selection import dominates_both, select_candidate

SELECTION_ABLATIONS = ("sipo_no_rewrite", "sipo_no_filter", "sipo_oracle_filter")
ABLATIONS = (*SELECTION_ABLATIONS, "nll_control")
ORACLE_ONLY = ("sipo_oracle_filter",)
"""Ablations that need the exact oracle (``data.source: synthetic``)."""


def ablation_source(method: str) -> str:
    """The round-1 stage whose candidates a selection ablation reads: ``r1/sample`` or ``r1/combine``."""
    if method not in SELECTION_ABLATIONS:
        raise ValueError(f"'{method}' selects no candidates (selection ablations: {', '.join(SELECTION_ABLATIONS)})")
    return "r1/sample" if method == "sipo_no_rewrite" else "r1/combine"


def select_by_sum(candidates: Sequence[tuple[str, Mapping[str, float]]]) -> str | None:
    """The id of the candidate with the highest summed score (ties: the one listed first); None for no
    candidates. ``sipo_no_filter``'s rule: no need to beat the original responses."""
    best_id, best_sum = None, None
    for cid, scores in candidates:
        total = sum(scores.values())
        if best_sum is None or total > best_sum:
            best_id, best_sum = cid, total
    return best_id


def select_for(method: str, candidates: Sequence[tuple[str, Mapping[str, float]]], chosen: Mapping[str, float],
               rejected: Mapping[str, float]) -> str | None:
    """The candidate a selection ablation keeps for one prompt (None: the prompt is dropped).

    ``candidates`` are (id, scores) with judge rewards (``sipo_no_rewrite``, ``sipo_no_filter``) or oracle scores
    per objective (``sipo_oracle_filter``); ``chosen`` / ``rejected`` are the original responses' scores.
    """
    if method == "sipo_no_filter":
        return select_by_sum(candidates)
    if method == "sipo_no_rewrite":
        return select_candidate(candidates, chosen, rejected)
    if method == "sipo_oracle_filter":
        return select_candidate(candidates, chosen, rejected, survives=dominates_both)
    raise ValueError(f"unknown selection ablation '{method}'")


__all__ = ["ABLATIONS", "ORACLE_ONLY", "SELECTION_ABLATIONS", "ablation_source", "select_by_sum", "select_for"]
