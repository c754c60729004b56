"""Pipeline health: did SIPO's self-improvement actually do anything?

A run can finish every stage with exit code 0 while SIPO changes nothing: no prompt conflicts, the filter keeps no
response, re-alignment trains no step, and the sipo adapters are the round-1 adapters, so sipo's points are mod's.
The report must say so rather than show sipo "tied for the best hypervolume". :func:`round_funnel` reads, per
round, the counts that the round's stages put in their manifests; :func:`health_warnings` turns them (and the
report's points) into warnings; ``report.json`` holds both under ``pipeline``, ``report.md`` puts the warnings at
the top, ``sipo run`` repeats them at the end, and ``sipo run --strict`` exits with :data:`STRICT_EXIT_CODE` when
there is any.

The funnel of a round (``report.json`` → ``pipeline.funnel``, one object per round)::

    {"round": 1, "conflicting_prompts": 4, "candidates": 16, "rewrites": 16, "rewrites_kept": 5,
     "filter_survivors": 0, "realign_pairs": 0, "optimizer_steps": {"helpful": 0, "harmless": 0}}

- ``conflicting_prompts``: prompts sampled (the train_conflict prompts that fit ``model.max_prompt_tokens``);
- ``candidates``: MOD samples; ``rewrites``: rewrites decoded; ``rewrites_kept``: rewrites that replaced their
  sample; ``filter_survivors``: prompts whose best response beats both originals under every judge;
- ``realign_pairs``: re-alignment pairs (two per survivor); ``optimizer_steps``: per objective, the re-alignment
  trainer's optimizer steps (0 when the adapter was carried over unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sipo.methods import METHODS

STRICT_EXIT_CODE = 3
"""Exit code of ``sipo run --strict`` when the run finished but a pipeline-health warning was raised."""

POINT_TOLERANCE = 1e-9
"""Scores closer than this count as equal when comparing sipo's points with mod's."""


def round_funnel(counts: Mapping[str, Mapping[str, Any]], objectives: Sequence[str], rounds: int
                 ) -> list[dict[str, Any]]:
    """The funnel of every round from the stages' manifest counts (stage id -> counts; missing stages count as
    empty). Pure."""
    funnel = []
    for r in range(1, rounds + 1):
        sample = counts.get(f"r{r}/sample", {})
        combine = counts.get(f"r{r}/combine", {})
        filter_ = counts.get(f"r{r}/filter", {})
        realign = counts.get(f"r{r}/realign", {})
        steps = {}
        for objective in objectives:
            metrics = realign.get(f"metrics_{objective}")
            steps[objective] = int(metrics.get("steps", 0)) if isinstance(metrics, Mapping) else 0
        funnel.append({
            "round": r,
            "conflicting_prompts": int(sample.get("prompts", 0)),
            "candidates": int(sample.get("candidates", 0)),
            "rewrites": int(combine.get("rewrites", 0)),
            "rewrites_kept": int(combine.get("replaced", 0)),
            "filter_survivors": int(filter_.get("selected", 0)),
            "realign_pairs": int(realign.get("pairs", 0)),
            "optimizer_steps": steps,
        })
    return funnel


def same_points(a: Mapping[str, Any], b: Mapping[str, Any], tolerance: float = POINT_TOLERANCE) -> bool:
    """Whether two report entries have the same weight vectors with the same mean scores."""
    def key(point):
        return tuple(sorted((k, round(float(v), 6)) for k, v in point["weights"].items()))

    points_a = {key(p): p["scores"] for p in a.get("points", [])}
    points_b = {key(p): p["scores"] for p in b.get("points", [])}
    if not points_a or points_a.keys() != points_b.keys():
        return False
    return all(abs(float(points_a[k][o]) - float(points_b[k][o])) <= tolerance
               for k in points_a for o in points_a[k])


def health_warnings(funnel: Sequence[Mapping[str, Any]], methods: Mapping[str, Any] | None = None) -> list[str]:
    """One sentence per sign that SIPO did nothing: a round without conflicting prompts or filter survivors, a
    re-alignment without pairs or optimizer steps, sipo's points equal to mod's. Pure."""
    warnings = []
    for entry in funnel:
        r = entry["round"]
        if entry["conflicting_prompts"] == 0:
            warnings.append(f"round {r}: no conflicting prompt to self-improve on (see the prepare/label manifest: "
                            "conflicting pairs, conflict_ties)")
        elif entry["filter_survivors"] == 0:
            warnings.append(f"round {r}: the filter kept no response (0 of {entry['conflicting_prompts']} "
                            f"conflicting prompts, {entry['candidates']} candidates): the round selected nothing")
        steps = entry["optimizer_steps"]
        if entry["realign_pairs"] == 0 or not any(steps.values()):
            warnings.append(f"round {r}: re-alignment trained nothing ({entry['realign_pairs']} pairs, optimizer "
                            f"steps {dict(steps)}): the adapters are carried over unchanged")
    methods = methods or {}
    for definition in METHODS.values():
        name, other = definition.name, definition.no_gain_over
        if other is not None and name in methods and other in methods and same_points(methods[name], methods[other]):
            warnings.append(f"{name}'s points equal {other}'s: self-improvement changed nothing measurable, so "
                            f"{name}'s hypervolume is {other}'s")
    return warnings


def funnel_markdown(funnel: Sequence[Mapping[str, Any]]) -> str:
    """The funnel as a markdown table, one row per round."""
    lines = ["| round | conflicting prompts | candidates | rewrites kept | filter survivors | re-alignment pairs "
             "| optimizer steps |", "|---:|---:|---:|---:|---:|---:|---|"]
    for e in funnel:
        steps = ", ".join(f"{o} {n}" for o, n in e["optimizer_steps"].items())
        lines.append(f"| {e['round']} | {e['conflicting_prompts']} | {e['candidates']} | "
                     f"{e['rewrites_kept']} of {e['rewrites']} | {e['filter_survivors']} | {e['realign_pairs']} "
                     f"| {steps} |")
    return "\n".join(lines) + "\n"
