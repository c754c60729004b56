"""Pareto dominance, non-dominated fronts and hypervolume, for any number of objectives.

Everything here is pure and **maximises** every objective (higher scores are better), the convention of the whole
package. The non-dominated filter and the hypervolume come from ``moocore``, which minimises by default; every call
passes ``maximise=True``.

Dominance on score dicts (used by the combine and filter stages)::

    dominates(a, b)            a >= b on every objective and a > b on at least one
    strictly_better_all(a, b)  a > b on every objective          (the SIPO filter rule)
    no_worse_all(a, b)         a >= b on every objective         (combine rule ``no_worse``)
    better_on_any(a, b)        a > b on at least one objective   (combine rule ``not_dominated``)

Each takes an optional ``objectives``; without it the objectives are the keys of ``a`` (``b`` must have them all).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import moocore
import numpy as np

__all__ = [
    "better_on_any",
    "default_reference_point",
    "dominates",
    "hypervolume",
    "no_worse_all",
    "pareto_front",
    "strictly_better_all",
]


def _pairs(
    a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[str] | None
) -> list[tuple[float, float]]:
    names = list(a) if objectives is None else list(objectives)
    if not names:
        raise ValueError("dominance needs at least one objective")
    return [(float(a[o]), float(b[o])) for o in names]


def dominates(a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[str] | None = None) -> bool:
    """Whether ``a`` Pareto-dominates ``b``: no worse on every objective and strictly better on at least one."""
    pairs = _pairs(a, b, objectives)
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def strictly_better_all(
    a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[str] | None = None
) -> bool:
    """Whether ``a`` is strictly better than ``b`` on every objective (the SIPO filter's test)."""
    return all(x > y for x, y in _pairs(a, b, objectives))


def no_worse_all(a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[str] | None = None) -> bool:
    """Whether ``a`` is better than or equal to ``b`` on every objective."""
    return all(x >= y for x, y in _pairs(a, b, objectives))


def better_on_any(
    a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[str] | None = None
) -> bool:
    """Whether ``a`` is strictly better than ``b`` on at least one objective (i.e. ``b`` does not weakly dominate
    ``a``)."""
    return any(x > y for x, y in _pairs(a, b, objectives))


def _as_matrix(points: Sequence[Sequence[float]], num_objectives: int | None = None) -> np.ndarray:
    """Points as a float array of shape (num_points, num_objectives); an empty input gives shape (0, d)."""
    array = np.asarray(points, dtype=float)
    if array.size == 0:
        return np.zeros((0, num_objectives or 0))
    if array.ndim != 2:
        raise ValueError(f"points must be a sequence of equal-length score vectors, got shape {array.shape}")
    if num_objectives is not None and array.shape[1] != num_objectives:
        raise ValueError(f"points have {array.shape[1]} objectives, expected {num_objectives}")
    if not np.all(np.isfinite(array)):
        raise ValueError("points must be finite (no NaN or infinity)")
    return array


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the points that no other point dominates, maximising every objective.

    Duplicates of a non-dominated point are all kept (none of them dominates the others), so the set of front
    points does not depend on the input order.

    Args:
        points: score vectors, Shape: (num_points, num_objectives).
    """
    matrix = _as_matrix(points)
    if len(matrix) == 0:
        return []
    mask = moocore.is_nondominated(matrix, maximise=True, keep_weakly=True)
    return [int(i) for i in np.flatnonzero(mask)]


def hypervolume(points: Sequence[Sequence[float]], reference_point: Sequence[float]) -> float:
    """Volume of the objective-space region dominated by ``points`` and bounded below by ``reference_point``.

    Maximisation: a point contributes only where it is strictly better than the reference point on every objective;
    points that are not contribute 0. No points: 0.0.

    Args:
        points: score vectors, Shape: (num_points, num_objectives).
        reference_point: one value per objective, Shape: (num_objectives,).
    """
    ref = np.asarray(reference_point, dtype=float)
    if ref.ndim != 1 or ref.size == 0:
        raise ValueError("reference_point must be a flat sequence with one value per objective")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference_point must be finite")
    matrix = _as_matrix(points, num_objectives=ref.size)
    if len(matrix) == 0:
        return 0.0
    # moocore already ignores points that do not dominate the reference point; dropping them here keeps that
    # guarantee independent of the library version.
    matrix = matrix[np.all(matrix > ref, axis=1)]
    if len(matrix) == 0:
        return 0.0
    return float(moocore.hypervolume(matrix, ref=ref, maximise=True))


def default_reference_point(all_points: Sequence[Sequence[float]], margin: float = 0.05) -> list[float]:
    """A reference point just below the worst score seen on each objective.

    Per objective: ``min - margin * (max - min)`` over ``all_points``, which should hold the points of **every**
    method, so that all methods are measured against the same point. Where an objective's range is 0 (one point, or
    all equal), ``margin * max(|min|, 1)`` is subtracted instead, so that the points still enclose a positive volume.

    Raises:
        ValueError: ``all_points`` is empty or ``margin`` is negative.
    """
    if margin < 0:
        raise ValueError("margin must be >= 0")
    matrix = _as_matrix(all_points)
    if len(matrix) == 0:
        raise ValueError("default_reference_point needs at least one point")
    lowest = matrix.min(axis=0)
    highest = matrix.max(axis=0)
    reference = []
    for low, high in zip(lowest.tolist(), highest.tolist()):
        spread = high - low
        if spread <= 0 or math.isclose(spread, 0.0, abs_tol=1e-12):
            spread = max(abs(low), 1.0)
        reference.append(low - margin * spread)
    return reference


def score_methods(entries: dict, objectives: Sequence[str], reference_point: Sequence[float] | None, *,
                  margin: float, scope: str) -> tuple[dict[str, list[list[float]]], list[float], str]:
    """Give every entry (a method with ``points``, each holding ``scores``) its ``hypervolume``, ``front`` and
    ``best`` score per objective, against ``reference_point`` or, when None, the worst mean score of all entries'
    points minus ``margin`` x range. Returns each entry's score vectors, the reference point and the rule that chose
    it (``scope`` says over what the default was taken). Shared by a run's report and ``sipo compare``."""
    vectors = {name: [[p["scores"][o] for o in objectives] for p in e["points"]] for name, e in entries.items()}
    if reference_point is None:
        reference = default_reference_point([v for vs in vectors.values() for v in vs], margin=margin)
        rule = f"worst mean score minus {margin:g} x range, over {scope}"
    else:
        reference = [float(x) for x in reference_point]
        rule = "given"
    for name, entry in entries.items():
        entry["hypervolume"] = hypervolume(vectors[name], reference)
        entry["front"] = pareto_front(vectors[name])
        entry["best"] = {o: max(p["scores"][o] for p in entry["points"]) for o in objectives}
    return vectors, reference, rule
