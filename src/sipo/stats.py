"""Intervals for the benchmark protocol (docs/benchmark.md): pure functions, no model.

- :func:`t_interval`: a mean over seeds with its Student-t confidence interval;
- :func:`paired_differences`: per seed, ``target - other`` for every other method, with its t-interval (pairing
  removes what a seed does to every method alike);
- :func:`bootstrap_hypervolumes`: within one run, a percentile bootstrap interval of each method's hypervolume,
  resampling the test prompts (the same resamples for every method).

The t quantile is computed here (numerical integration of the t density and bisection) rather than pulling in
scipy for one number; :func:`t_quantile` matches the tables to 4 decimals.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sipo.pareto import hypervolume


def _t_density(x: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf(x: float, df: float, steps: int = 2000) -> float:
    """P(T <= x) for x >= 0, by Simpson's rule on [0, x]."""
    h = x / steps
    total = _t_density(0.0, df) + _t_density(x, df)
    total += sum((4 if k % 2 else 2) * _t_density(k * h, df) for k in range(1, steps))
    return 0.5 + total * h / 3


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom."""
    if not 0.5 < p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0 (got p={p}, df={df})")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None
    """None when there are fewer than two values (no spread to estimate)."""
    high: float | None
    n: int

    def excludes_zero(self) -> str:
        """``above`` (the whole interval is above 0), ``below``, or ``overlaps`` (also for an undefined one)."""
        if self.low is not None and self.low > 0:
            return "above"
        if self.high is not None and self.high < 0:
            return "below"
        return "overlaps"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` ± t((1 + confidence) / 2, n - 1) · s / √n (bounds None for n < 2)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("t_interval needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return Interval(mean, None, None, len(values))
    half = t_quantile((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def paired_differences(by_seed: Mapping[object, Mapping[str, float]], target: str,
                       confidence: float = 0.95) -> dict[str, tuple[Interval, list[float]]]:
    """For every method other than ``target``: the per-seed differences ``target - method`` (seeds where both
    ran, in ``by_seed`` order) and their t-interval."""
    methods = sorted({m for values in by_seed.values() for m in values if m != target})
    out = {}
    for method in methods:
        diffs = [values[target] - values[method] for values in by_seed.values()
                 if target in values and method in values]
        if diffs:
            out[method] = (t_interval(diffs, confidence), diffs)
    return out


def bootstrap_hypervolumes(
    scores: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    prompt_ids: Sequence[str],
    reference_point: Sequence[float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each method's hypervolume over the test prompts.

    Args:
        scores: method -> point key (e.g. a weights tag) -> prompt id -> score vector (one value per objective).
            A point must have a score for every prompt of ``prompt_ids``.
        prompt_ids: the prompts to resample (with replacement, ``len(prompt_ids)`` per resample); every method
            sees the same resamples, so intervals of different methods are comparable.
        reference_point: the hypervolume reference point.

    Returns:
        method -> (low, high) at ``confidence``.
    """
    if not prompt_ids:
        raise ValueError("bootstrap_hypervolumes needs at least one prompt")
    rng = random.Random(f"sipo-bootstrap:{seed}")
    n = len(prompt_ids)
    draws = np.array([[rng.randrange(n) for _ in range(n)] for _ in range(resamples)], dtype=np.int64)
    tail = (1 - confidence) / 2
    out = {}
    for method, points in scores.items():
        # (points, prompts, objectives) -> per resample the point means -> hypervolume.
        matrix = np.array([[list(points[key][pid]) for pid in prompt_ids] for key in points], dtype=np.float64)
        means = matrix[:, draws, :].mean(axis=2)  # (points, resamples, objectives)
        values = sorted(hypervolume(means[:, b, :].tolist(), reference_point) for b in range(resamples))
        out[method] = (float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
    return out


__all__ = ["Interval", "bootstrap_hypervolumes", "paired_differences", "t_interval", "t_quantile"]
