"""Validity conditions of the synthetic benchmark and SIPO's share of the oracle's gain. Pure functions.

The conditions say whether a run *can* show SIPO beating the baselines; they are computed on the validation front
(``report.json["validation"]``) and on training diagnostics only, never on a test number:

- **headroom**: the best baseline's validation hypervolume is at most :data:`HEADROOM_LIMIT` of the ideal (the
  hypervolume of the point (1, ..., 1) above the reference point); above it, no method can be seen to beat them.
- **oracle bound**: ``sipo_oracle_filter`` (re-alignment on the oracle's selections) beats MOD on validation by more
  than :data:`ORACLE_BOUND_MARGIN`; otherwise re-alignment cannot gain whatever SIPO selects. One run gives the
  per-run check; over seeds ``scripts/demo_seeds.py`` applies the interval rule (paired difference, 95 % t-interval
  above 0).
- **review skill**: round-1 reviews correct at least :data:`REVIEW_CORRECTED_MIN` of the wrong facts they see,
  with at most :data:`REVIEW_WRONG_CHANGE_MAX` of their changes wrong.

Each condition is ``{"value", "threshold", "holds", "reason"}``; ``holds`` is None when the run lacks what the
condition needs (``reason`` says what). The oracle-gain share is ``(sipo − mod) / (sipo_oracle_filter − mod)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

HEADROOM_LIMIT = 0.85
"""Headroom holds when the best baseline's validation hypervolume is at most this share of the ideal."""
ORACLE_BOUND_MARGIN = 0.0
"""The oracle bound holds when sipo_oracle_filter's validation hypervolume exceeds MOD's by more than this."""
REVIEW_CORRECTED_MIN = 0.30
"""Review skill needs at least this share of the wrong facts corrected by the round-1 reviews ..."""
REVIEW_WRONG_CHANGE_MAX = 0.30
"""... and at most this share of the reviews' changes wrong."""

NO_ORACLE_GAIN = "the oracle bound does not beat MOD"
CONDITIONS = ("headroom", "oracle_bound", "review_skill")


def baselines() -> tuple[str, ...]:
    """The methods that headroom is measured against (those of them that ran): the methods whose definition
    gives them the ``baseline`` role (:attr:`sipo.methods.MethodDef.roles`)."""
    from sipo.methods import methods_with_role

    return methods_with_role("baseline")


def share_methods() -> tuple[str, str, str]:
    """``(target, reference, upper bound)``: SIPO, MOD and the oracle bound, by their definitions' roles; the
    share is ``(target − reference) / (upper bound − reference)``."""
    from sipo.methods import methods_with_role

    (target,), (reference,), (bound,) = (methods_with_role(r) for r in ("target", "reference", "upper_bound"))
    return target, reference, bound


def _label(name: str) -> str:
    from sipo.methods import method_label

    return method_label(name)


def ideal_hypervolume(reference_point: Sequence[float]) -> float:
    """The hypervolume of the point (1, ..., 1) above ``reference_point`` (0 when it does not beat it)."""
    return math.prod(max(0.0, 1.0 - float(r)) for r in reference_point)


def oracle_gain_share(hypervolumes: Mapping[str, float]) -> dict[str, Any] | None:
    """``(sipo − mod) / (sipo_oracle_filter − mod)`` of one set of hypervolumes, with its parts.

    Returns None unless sipo, mod and sipo_oracle_filter all have a hypervolume; ``value`` is None (with a
    ``reason``) when the denominator is not positive.
    """
    names = share_methods()
    if not all(hypervolumes.get(m) is not None for m in names):
        return None
    sipo, mod, oracle = (float(hypervolumes[m]) for m in names)
    gain = oracle - mod
    out: dict[str, Any] = {**{m: float(hypervolumes[m]) for m in names}, "oracle_gain": gain}
    if gain <= 0:
        return {"value": None, "reason": NO_ORACLE_GAIN, **out}
    return {"value": (sipo - mod) / gain, "reason": None, **out}


def _condition(value: Any, threshold: Any, holds: bool | None, reason: str | None) -> dict[str, Any]:
    return {"value": value, "threshold": threshold, "holds": holds, "reason": reason}


def headroom(validation: Mapping[str, float] | None, reference_point: Sequence[float]) -> dict[str, Any]:
    """The headroom condition from the validation hypervolumes (method -> hypervolume)."""
    threshold = HEADROOM_LIMIT
    if validation is None:
        return _condition(None, threshold, None, "no validation front (no validation prompts or eval.validation off)")
    ran = {m: float(validation[m]) for m in baselines() if validation.get(m) is not None}
    if not ran:
        return _condition(None, threshold, None, "no baseline ran")
    ideal = ideal_hypervolume(reference_point)
    if ideal <= 0:
        return _condition(None, threshold, None, "the reference point is not below (1, ..., 1)")
    best = max(ran, key=lambda m: (ran[m], m))
    share = ran[best] / ideal
    holds = share <= threshold
    reason = None if holds else (
        f"No headroom: {_label(best)} reaches {share:.2f} of the ideal on validation (limit "
        f"{threshold:.2f}), so a method cannot be seen to beat it.")
    return {**_condition(share, threshold, holds, reason), "best_baseline": best}


def oracle_bound(validation: Mapping[str, float] | None) -> dict[str, Any]:
    """The per-run oracle-bound condition: sipo_oracle_filter − mod on validation above the margin."""
    threshold = ORACLE_BOUND_MARGIN
    if validation is None:
        return _condition(None, threshold, None, "no validation front (no validation prompts or eval.validation off)")
    _, reference, bound = share_methods()
    missing = [m for m in (reference, bound) if validation.get(m) is None]
    if missing:
        return _condition(None, threshold, None, f"{' and '.join(missing)} did not run")
    oracle, mod = float(validation[bound]), float(validation[reference])
    diff = oracle - mod
    holds = diff > threshold
    reason = None if holds else (
        f"No oracle bound: re-alignment on the oracle's selections ({bound} {oracle:.3f}) does not beat "
        f"{_label(reference)} ({mod:.3f}) on validation, so re-alignment cannot gain here whatever SIPO selects.")
    return _condition(diff, threshold, holds, reason)


def review_skill_condition(skill: Mapping[str, Any] | None) -> dict[str, Any]:
    """The review-skill condition from :func:`sipo.synthetic.sft_data.review_skill`'s result."""
    threshold = {"corrected_share_min": REVIEW_CORRECTED_MIN, "wrong_change_share_max": REVIEW_WRONG_CHANGE_MAX}
    if not skill:
        return _condition(None, threshold, None, "no round-1 reviews")
    corrected, wrong = skill.get("corrected_share"), skill.get("wrong_change_share")
    value = {"corrected_share": corrected, "wrong_change_share": wrong}
    if corrected is None:
        return _condition(value, threshold, None, "the reviewed responses hold no wrong fact")
    holds = corrected >= REVIEW_CORRECTED_MIN and (wrong is None or wrong <= REVIEW_WRONG_CHANGE_MAX)
    if holds:
        return _condition(value, threshold, True, None)
    wrong_text = "they make no change" if wrong is None else f"{wrong:.0%} of their changes are wrong"
    reason = (f"No review skill: round-1 reviews correct {corrected:.0%} of the wrong facts (need at least "
              f"{REVIEW_CORRECTED_MIN:.0%}) and {wrong_text} (allowed at most {REVIEW_WRONG_CHANGE_MAX:.0%}), so "
              "the review-and-rewrite step cannot be tested.")
    return _condition(value, threshold, False, reason)


def validity_conditions(validation: Mapping[str, float] | None, reference_point: Sequence[float],
                        review_skill: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The three conditions of one run (see the module docstring)."""
    return {"headroom": headroom(validation, reference_point), "oracle_bound": oracle_bound(validation),
            "review_skill": review_skill_condition(review_skill)}


def failure_lines(validity: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per condition that fails (its reason) or cannot be checked (``<name> not checked: <reason>``)."""
    lines = []
    for name in CONDITIONS:
        condition = validity.get(name)
        if condition is None or condition.get("holds") is True:
            continue
        if condition.get("holds") is False:
            lines.append(str(condition["reason"]))
        else:
            lines.append(f"{name.replace('_', ' ').capitalize()} not checked: {condition.get('reason')}.")
    return lines


# --- over seeds (scripts/demo_seeds.py) ---------------------------------------------------------------------------


def oracle_bound_over_seeds(validation_by_seed: Mapping[Any, Mapping[str, float] | None]) -> dict[str, Any]:
    """The oracle bound by the interval rule: the per-seed paired difference sipo_oracle_filter − mod on
    validation, and whether its 95 % t-interval lies above :data:`ORACLE_BOUND_MARGIN` (needs 2 or more seeds)."""
    from sipo.stats import t_interval

    _, reference, bound = share_methods()
    diffs = {seed: float(v[bound]) - float(v[reference]) for seed, v in validation_by_seed.items()
             if v and v.get(bound) is not None and v.get(reference) is not None}
    out: dict[str, Any] = {"values": diffs, "threshold": ORACLE_BOUND_MARGIN}
    if len(diffs) < 2:
        return {**out, "mean": None, "low": None, "high": None, "n": len(diffs), "holds": None,
                "reason": "needs the validation front of mod and sipo_oracle_filter on at least 2 seeds"}
    interval = t_interval(list(diffs.values()))
    holds = interval.low is not None and interval.low > ORACLE_BOUND_MARGIN
    reason = None if holds else (
        f"No oracle bound over seeds: the 95 % interval of sipo_oracle_filter − MOD on validation "
        f"[{interval.low:.4f}, {interval.high:.4f}] is not above 0, so SIPO cannot be shown to win on this world.")
    return {**out, **interval.as_dict(), "holds": holds, "reason": reason}


def shares_over_seeds(shares_by_seed: Mapping[Any, Mapping[str, Mapping[str, Any]] | None]) -> dict[str, Any]:
    """Per prompt set: the oracle-gain share's mean and 95 % t-interval over the seeds where it is defined, and the
    seeds where it is null (the oracle bound did not beat MOD there)."""
    from sipo.stats import t_interval

    names: list[str] = []
    for shares in shares_by_seed.values():
        names += [n for n in (shares or {}) if n not in names]
    out = {}
    for name in names:
        values = {seed: s[name]["value"] for seed, s in shares_by_seed.items() if s and name in s}
        defined = {seed: v for seed, v in values.items() if v is not None}
        entry: dict[str, Any] = {"values": values, "null_seeds": [seed for seed, v in values.items() if v is None]}
        if defined:
            entry.update(t_interval(list(defined.values())).as_dict())
        else:
            entry.update({"mean": None, "low": None, "high": None, "n": 0})
        out[name] = entry
    return out
