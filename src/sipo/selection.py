"""The combine and filter rules of SIPO, as pure functions of scores.

combine (per MOD candidate): the round-1 adapters' implicit rewards decide whether the rewrite replaces the
original sample.

- ``not_dominated`` (the reference code, default): replace iff the rewrite is better on at least one objective,
  i.e. ``not all(rewrite_o <= original_o)``.
- ``no_worse`` (the paper's wording): replace iff the rewrite is better or equal on every objective.

filter (per prompt): judges are the N round-1 adapters plus the soups at the sampling weights. A candidate
survives iff it *strictly* beats both original responses (``y_c`` and ``y_r``) under *every* judge; of the
survivors the one with the highest summed reward is kept; a prompt with no survivor is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sipo.config import CombineRule
from sipo.pareto import better_on_any, dominates, no_worse_all, strictly_better_all


def rewrite_replaces(original: Mapping[str, float], rewrite: Mapping[str, float], rule: str) -> bool:
    """Whether the rewrite replaces the original candidate under ``rule`` (keys: objectives)."""
    objectives = list(original)
    if rule == CombineRule.not_dominated:
        return better_on_any(rewrite, original, objectives)
    if rule == CombineRule.no_worse:
        return no_worse_all(rewrite, original, objectives)
    raise ValueError(f"unknown combine rule {rule!r}; choose from {CombineRule.values()}")


def beats_both(candidate: Mapping[str, float], chosen: Mapping[str, float], rejected: Mapping[str, float]) -> bool:
    """True iff ``candidate`` is strictly above both originals under every judge (keys: judge names, those of
    ``chosen``)."""
    judges = list(chosen)
    return strictly_better_all(candidate, chosen, judges) and strictly_better_all(candidate, rejected, judges)


def dominates_both(candidate: Mapping[str, float], chosen: Mapping[str, float],
                   rejected: Mapping[str, float]) -> bool:
    """True iff ``candidate`` Pareto-dominates both originals (at least as good under every judge, better under
    one): the rule for exact scores, where ties are real (an error-free short answer cannot be beaten on
    correctness, only matched)."""
    judges = list(chosen)
    return dominates(candidate, chosen, judges) and dominates(candidate, rejected, judges)


def select_candidate(
    candidates: Sequence[tuple[str, Mapping[str, float]]],
    chosen: Mapping[str, float],
    rejected: Mapping[str, float],
    survives=beats_both,
) -> str | None:
    """The id of the surviving candidate with the highest summed judge reward, or None if none survives.

    Args:
        candidates: (candidate_id, judge name -> reward) for one prompt.
        chosen, rejected: judge name -> reward of the prompt's two original responses.
        survives: the survival rule, ``(candidate, chosen, rejected) -> bool``: :func:`beats_both` (the filter's,
            for continuous rewards) or :func:`dominates_both` (for exact scores).

    Ties in the summed reward go to the candidate listed first, so the result does not depend on float noise
    in an unstable sort.
    """
    best_id, best_total = None, float("-inf")
    for candidate_id, scores in candidates:
        if not survives(scores, chosen, rejected):
            continue
        total = sum(scores[j] for j in chosen)
        if total > best_total:
            best_id, best_total = candidate_id, total
    return best_id
