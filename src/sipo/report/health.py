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

POINT_RELATIVE_TOLERANCE = 1e-4
"""Two mean scores count as equal when they differ by less than this share of the scores' scale: the spread of
every point of the report under that objective (or, when all points are equal, their largest magnitude). Mean
scores are float sums over prompts; implicit rewards of about 1e-3 can differ by 1e-8 between two identical fronts
decoded in different batches, far below any real difference."""


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


def score_scales(methods: Mapping[str, Any]) -> dict[str, float]:
    """Per objective, the scale of the report's mean scores: the spread of every method's points (their largest
    magnitude when they are all equal; 1.0 when that is 0 too). Pure."""
    values: dict[str, list[float]] = {}
    for entry in methods.values():
        for point in entry.get("points", []):
            for objective, score in point.get("scores", {}).items():
                values.setdefault(objective, []).append(float(score))
    scales = {}
    for objective, scores in values.items():
        spread = max(scores) - min(scores)
        scales[objective] = spread if spread > 0 else (max(abs(x) for x in scores) or 1.0)
    return scales


def close_scores(a: float, b: float, scale: float, relative: float = POINT_RELATIVE_TOLERANCE) -> bool:
    """Whether two mean scores count as equal at ``scale`` (:data:`POINT_RELATIVE_TOLERANCE`)."""
    return abs(float(a) - float(b)) <= relative * scale


def same_points(a: Mapping[str, Any], b: Mapping[str, Any], scales: Mapping[str, float] | None = None) -> bool:
    """Whether two report entries have the same weight vectors with the same mean scores, up to
    :data:`POINT_RELATIVE_TOLERANCE` of each objective's scale (``scales``; default: :func:`score_scales` of the
    two entries)."""
    def key(point):
        return tuple(sorted((k, round(float(v), 6)) for k, v in point["weights"].items()))

    points_a = {key(p): p["scores"] for p in a.get("points", [])}
    points_b = {key(p): p["scores"] for p in b.get("points", [])}
    if not points_a or points_a.keys() != points_b.keys():
        return False
    scales = scales if scales is not None else score_scales({"a": a, "b": b})
    return all(close_scores(points_a[k][o], points_b[k][o], scales.get(o, 1.0))
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
    scales = score_scales(methods)
    for definition in METHODS.values():
        name, other = definition.name, definition.no_gain_over
        if other is not None and name in methods and other in methods \
                and same_points(methods[name], methods[other], scales):
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


def _conflict_line(r: int, entry: Mapping[str, Any], counts: Mapping[str, Mapping[str, Any]],
                   settings: Mapping[str, Any]) -> str:
    source = counts.get("label") or counts.get("prepare") or {}
    sample = counts.get(f"r{r}/sample", {})
    available = source.get("train_conflict_prompts_available")
    chosen = source.get("train_conflict_prompts")
    cap = settings.get("data.max_conflict_prompts")
    ties = source.get("conflict_ties") or {}
    long = int(sample.get("dropped_long_prompts", 0) or 0)
    parts = [f"**Conflicting prompts**: {entry['conflicting_prompts']} sampled"]
    if available is not None:
        parts[0] += (f" of {chosen} chosen from the {available} train prompts with a conflicting pair "
                     f"(data.max_conflict_prompts={_setting(cap)}; {source.get('conflicting_pairs', '?')} "
                     "conflicting pairs in the training data"
                     + (f", {ties['pairs_lost']} more lost to data.conflict_max_ties={ties.get('max_ties', 0)}"
                        if ties.get("pairs_lost") else "") + ")")
    if long:
        parts.append(f"{long} dropped as longer than model.max_prompt_tokens")
    moves = []
    if cap is not None and available is not None and available > cap:
        moves.append(f"raise data.max_conflict_prompts (null takes all {available})")
    else:
        moves.append("more conflicting pairs: more data (data.path), fewer held-out prompts (data.test_fraction, "
                     "data.validation_fraction)" + (", data.conflict_max_ties (pairs lost to ties)"
                                                    if ties.get("pairs_lost") else ""))
    if long:
        moves.append("raise model.max_prompt_tokens")
    return "; ".join(parts) + (". Moves it: " + "; ".join(moves) + "." if moves else ".")


def _setting(value: Any) -> str:
    return "null" if value is None else str(value)


def diagnosis(funnel: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, Any]],
              settings: Mapping[str, Any], warnings: Sequence[str] = ()) -> list[str]:
    """report.md's *What to change*: when a round kept nothing (or trained nothing, or sipo's points equal mod's),
    the funnel's bottleneck with its numbers and the settings that move each stage of it. Pure.

    Args:
        funnel: :func:`round_funnel`'s entries.
        counts: stage id -> its manifest counts (``prepare``, ``label``, ``rK/sample``, ``rK/filter``,
            ``rK/realign``).
        settings: the config values named in the advice: ``data.max_conflict_prompts``, ``filter.soups``,
            ``realign.train.batch_size``, ``realign.train.gradient_accumulation_steps``, ``realign.train.epochs``.
        warnings: :func:`health_warnings`; a "points equal" warning asks for every round's diagnosis.
    """
    equal = any("points equal" in w for w in warnings)
    lines: list[str] = []
    for entry in funnel:
        r = entry["round"]
        stuck = (entry["conflicting_prompts"] == 0 or entry["filter_survivors"] == 0 or entry["realign_pairs"] == 0
                 or not any(entry["optimizer_steps"].values()))
        if not (stuck or equal):
            continue
        lines.append(f"Round {r}:")
        lines.append("- " + _conflict_line(r, entry, counts, settings))
        if entry["conflicting_prompts"] == 0:
            continue
        sample = counts.get(f"r{r}/sample", {})
        vectors = sample.get("weight_vectors")
        lines.append(f"- **Candidates**: {entry['candidates']}"
                     + (f" ({entry['conflicting_prompts']} prompts × {vectors} weight vectors of sample.grid)"
                        if vectors else "")
                     + f"; {entry['rewrites_kept']} of {entry['rewrites']} rewrites replaced their candidate. "
                     "Moves it: more prompts (above), more weight vectors per prompt (sample.grid).")
        filter_ = counts.get(f"r{r}/filter", {})
        per_judge = filter_.get("survival_per_judge") or {}
        survivors = filter_.get("surviving_candidates")
        text = f"- **Filter**: {entry['filter_survivors']} of {entry['conflicting_prompts']} prompts kept"
        if survivors is not None:
            text += (f"; {survivors} of {filter_.get('candidates', entry['candidates'])} candidates beat both original "
                     f"responses under all {filter_.get('judges', len(per_judge))} judges at once")
        if per_judge:
            strictest = min(per_judge, key=lambda j: (per_judge[j], j))
            text += ("; under each judge alone: " + ", ".join(f"{j} {n}" for j, n in per_judge.items())
                     + f" (the strictest: {strictest})")
        soups = settings.get("filter.soups")
        text += (". Moves it: more candidates (above); "
                 + ("filter.soups=false judges with the objectives' adapters only, without the soups; "
                    if soups else "")
                 + "a stronger round-1 policy (dpo.train) writes candidates that beat the originals more often.")
        lines.append(text)
        steps = entry["optimizer_steps"]
        batch = (settings.get("realign.train.batch_size") or 1) * (
            settings.get("realign.train.gradient_accumulation_steps") or 1)
        text = (f"- **Re-alignment**: {entry['realign_pairs']} pairs (two per kept prompt), optimizer steps "
                + ", ".join(f"{o} {n}" for o, n in steps.items())
                + f" (pairs × realign.train.epochs={_setting(settings.get('realign.train.epochs'))} / "
                  f"effective batch {batch}).")
        if entry["realign_pairs"] == 0:
            text += " Moves it: more kept prompts (above)."
        elif not any(steps.values()) or entry["realign_pairs"] < batch:
            text += (" Moves it: a smaller realign.train.batch_size or realign.train.gradient_accumulation_steps, "
                     "more realign.train.epochs.")
        lines.append(text)
    return lines


def mixture_warnings(counts: Mapping[str, Any], conflict_fraction: float,
                     max_train_pairs: int | None = None) -> list[str]:
    """One sentence per objective whose DPO mixture uses under half of its usable pairs (the train prompts' pairs
    without a tie under it) because ``data.conflict_fraction`` asks for a share the data cannot give. Reads the
    prepare (or label) counts ``train_pairs`` and ``train_available``. Pure."""
    warnings = []
    for objective, available in (counts.get("train_available") or {}).items():
        usable = int(available.get("conflicting", 0)) + int(available.get("non_conflicting", 0))
        used = int((counts.get("train_pairs") or {}).get(objective, usable))
        if usable and used < usable / 2 and (max_train_pairs is None or used < max_train_pairs):
            warnings.append(
                f"dpo: objective {objective} trains on {used} of its {usable} usable pairs "
                f"({available.get('conflicting', 0)} conflicting): data.conflict_fraction={conflict_fraction:g} "
                "keeps that share of conflicting pairs, so the scarcer kind limits the mixture; a value nearer "
                f"the data's own share ({int(available.get('conflicting', 0)) / usable:.2f}) uses more of them")
    return warnings
