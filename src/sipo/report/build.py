"""Turn evaluated responses (:class:`~sipo.records.ScoreRow`) into the report of a run.

:func:`make_report` is the pure core: it averages the rows into one point per (method, round, weight vector) and
computes each method's Pareto front and hypervolume. :func:`build_report` calls it and writes, atomically, into
``out_dir``::

    report.json   the numbers (docs/method.md §4), the source of every other view
    scores.jsonl  one ScoreRow per method x weights x prompt, with the prompt's text (readable with
                  load_score_rows)
    summary.csv   one row per point: method, round, weights, per-objective mean and standard error, n, on_front
    pareto.png    the fronts (sipo.report.plot)
    report.md     a table of hypervolume and best score per objective, sorted by hypervolume, and the figure

``report.json``::

    {"schema_version": 1, "title": "", "objectives": ["correctness", "verbosity"], "judge": "oracle",
     "reference_point": [0.0, 0.0], "reference_point_rule": "given",
     "methods": {"sipo": {"method": "sipo", "round": 2,
                          "points": [{"weights": {"correctness": 0.8, "verbosity": 0.2},
                                      "scores": {"correctness": 0.81, "verbosity": 0.64},
                                      "stderr": {"correctness": 0.01, "verbosity": 0.02}, "n": 200}, ...],
                          "hypervolume": 0.42, "front": [0, 2, 3],
                          "best": {"correctness": 0.93, "verbosity": 0.71}},
                 "sipo@r1": {"method": "sipo", "round": 1, ...}, "mod": {...}, "sft": {...}},
     "pipeline": {"funnel": [{"round": 1, "conflicting_prompts": 4, ...}], "warnings": []}}

- ``scores`` is the mean judge score over the point's ``n`` prompts; ``stderr`` is the standard error of that mean
  (sample standard deviation / sqrt(n); ``null`` when n = 1).
- Points are in weight order: the first objective's weight descending, then the next (the order of
  :func:`sipo.config.weight_grid`).
- ``front`` lists the indices into ``points`` of the method's non-dominated points; ``hypervolume`` is that of
  the method's points (maximisation) against ``reference_point``, the same point for every method.
- ``best`` is, per objective, the best mean score among the method's points.
- ``pipeline`` (runs with the ``sipo`` method): each self-improvement round's funnel and the pipeline-health
  warnings (:mod:`sipo.report.health`); report.md shows the warnings at the top.
- ``data`` (when anything was lost): ``bad_rows`` (the unusable rows skipped, :mod:`sipo.data.bad_rows`),
  ``test_path_prompts`` / ``test_prompts_kept`` (``data.test_path`` capped by ``data.max_test_prompts``) and
  ``dropped_long_prompts`` / ``evaluated_prompts`` (test prompts longer than ``model.max_prompt_tokens``);
  report.md shows them in its *Data* section.
- ``validation`` (with ``validation_rows``, from ``evaluate/validation_scores.jsonl``): ``prompts`` and, per
  method, ``hypervolume`` and ``best`` on the validation prompts, against the same reference point.
- ``oracle_gain_share`` (when sipo, mod and sipo_oracle_filter all ran): per prompt set (``all``, each test set,
  ``validation``) ``{"value": (sipo − mod) / (sipo_oracle_filter − mod), "reason", "sipo", "mod",
  "sipo_oracle_filter", "oracle_gain"}``; ``value`` is null with a ``reason`` when the oracle does not beat MOD.
- ``validity`` (``check_validity``: the synthetic benchmark judged by the oracle): ``headroom``, ``oracle_bound``
  and ``review_skill``, each ``{"value", "threshold", "holds", "reason"}`` (:mod:`sipo.report.validity`);
  report.md names each failed condition at the top.
- **Rounds**: a method evaluated after several self-improvement rounds (``ScoreRow.round``) is keyed by its name
  for its last round and ``<name>@r<k>`` for each earlier round ``k``; every entry also states ``method`` and
  ``round``. A method with one round is keyed by its name.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sipo.artifacts import atomic_write_json, atomic_write_text
from sipo.config import weights_tag
from sipo.errors import DataError
from sipo.methods import method_order
from sipo.pareto import score_methods
from sipo.records import ScoreRow, iter_json_lines, write_jsonl
from sipo.report.health import close_scores, score_scales
from sipo.report.plot import FIGURE_NAME, ordered_methods, plot_fronts, weights_label
from sipo.report.validity import failure_lines, oracle_gain_share, share_methods, validity_conditions

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
DEFAULT_MARGIN = 0.05
REPORT_FILES = ("report.json", "scores.jsonl", "summary.csv", FIGURE_NAME, "report.md")

_WeightsKey = tuple[tuple[str, float], ...]


def _weights_key(weights: Mapping[str, float]) -> _WeightsKey:
    # Rounded so that 0.2 and 0.20000000000000004 (from different grid code paths) are one point.
    return tuple(sorted((str(k), round(float(v), 10)) for k, v in weights.items()))


def _weight_order(weights: Mapping[str, float], objectives: Sequence[str]) -> tuple[Any, ...]:
    """Sort key: the first objective's weight descending, then the next, then any other keys."""
    extra = tuple(sorted((k, -float(v)) for k, v in weights.items() if k not in objectives))
    return tuple(-float(weights.get(o, 0.0)) for o in objectives) + extra


def method_key(method: str, round_: int, last_round: int) -> str:
    """The report key of a method at a round: ``sipo`` for its last round, ``sipo@r1`` for an earlier one."""
    return method if round_ == last_round else f"{method}@r{round_}"


def _check_rows(score_rows: Sequence[ScoreRow], objectives: Sequence[str]) -> None:
    if not objectives:
        raise DataError("no objectives to report")
    if not score_rows:
        raise DataError("no score rows to report")
    seen: set[tuple[str, int, _WeightsKey, str]] = set()
    for row in score_rows:
        where = f"method={row.method} round={row.round} weights={weights_tag(row.weights)} prompt_id={row.prompt_id}"
        for objective in objectives:
            if objective not in row.scores:
                raise DataError(f"score row ({where}) has no score for objective '{objective}'")
            value = row.scores[objective]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(f"score row ({where}) has a non-finite or non-numeric '{objective}' score: {value!r}")
        key = (row.method, row.round, _weights_key(row.weights), row.prompt_id)
        if key in seen:
            raise DataError(f"duplicate score row ({where})")
        seen.add(key)


def _mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def make_report(
    score_rows: Sequence[ScoreRow],
    objectives: Sequence[str],
    *,
    judge: str,
    reference_point: Sequence[float] | None = None,
    title: str = "",
    margin: float = DEFAULT_MARGIN,
    test_sets: Mapping[str, Sequence[str]] | None = None,
    bootstrap: int = 0,
    training_steps: Mapping[str, int] | None = None,
    validation_rows: Sequence[ScoreRow] | None = None,
    check_validity: bool = False,
    review_skill: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict (the content of ``report.json``, see the module docstring) of evaluated rows. Pure.

    Args:
        score_rows: one row per method x round x weights x prompt; every row needs a finite score per objective.
        objectives: objective names, in the order of the score vectors and of ``reference_point``.
        judge: name of the judge that produced the scores (stated in the report).
        reference_point: hypervolume reference point, one value per objective; default
            :func:`sipo.pareto.default_reference_point` over every method's points with ``margin``.
        test_sets: test set name -> its prompt ids (benchmark v2: ``in_distribution``, ``transfer``); the report
            then also holds ``test_sets[name]["methods"][method]`` with that set's hypervolume (same reference
            point), best scores and, with ``bootstrap``, its interval.
        bootstrap: resamples of the percentile bootstrap over prompts (:func:`sipo.stats.bootstrap_hypervolumes`)
            giving each hypervolume a 95 % interval ``hypervolume_ci``; 0 computes none.
        training_steps: method (report key) -> its total optimizer steps, stored as ``training_steps``.
        validation_rows: the rows of the validation prompts (``evaluate/validation_scores.jsonl``); the report then
            holds ``validation`` (each method's hypervolume and best scores on them, same reference point).
        check_validity: add ``validity``, the benchmark's validity conditions (:mod:`sipo.report.validity`),
            computed from the validation front and ``review_skill`` only (the synthetic benchmark with the oracle).
        review_skill: the round-1 reviews' skill (:func:`sipo.synthetic.sft_data.review_skill`).

    Raises:
        DataError: no rows, a missing or non-finite score, a duplicated (method, round, weights, prompt) row, or a
            reference point of the wrong length.
    """
    objectives = list(objectives)
    _check_rows(score_rows, objectives)
    if reference_point is not None and len(reference_point) != len(objectives):
        raise DataError(
            f"reference point {list(reference_point)} needs one value per objective ({len(objectives)})"
        )

    groups: dict[tuple[str, int], dict[_WeightsKey, list[ScoreRow]]] = defaultdict(lambda: defaultdict(list))
    for row in score_rows:
        groups[(row.method, int(row.round))][_weights_key(row.weights)].append(row)
    last_round: dict[str, int] = {}
    for method, round_ in groups:
        last_round[method] = max(round_, last_round.get(method, round_))

    entries: dict[str, dict[str, Any]] = {}
    prompt_sets: dict[str, frozenset[str]] = {}
    for method, round_ in sorted(groups, key=lambda mr: (method_order(mr[0]), -mr[1])):
        name = method_key(method, round_, last_round[method])
        points = []
        for rows in groups[(method, round_)].values():
            weights = {k: float(v) for k, v in rows[0].weights.items()}
            scores, stderr = {}, {}
            for objective in objectives:
                scores[objective], stderr[objective] = _mean_and_stderr([float(r.scores[objective]) for r in rows])
            points.append({"weights": weights, "scores": scores, "stderr": stderr, "n": len(rows)})
            prompt_sets[f"{name} {weights_tag(weights)}"] = frozenset(r.prompt_id for r in rows)
        points.sort(key=lambda p: _weight_order(p["weights"], objectives))
        entries[name] = {"method": method, "round": round_, "points": points}

    if len(set(prompt_sets.values())) > 1:
        sizes = sorted({len(s) for s in prompt_sets.values()})
        logger.warning("report: the points were not all evaluated on the same prompts (sizes %s)", sizes)

    vectors, reference, rule = score_methods(entries, objectives, reference_point, margin=margin,
                                             scope="all methods")
    for name in entries:
        outside = sum(1 for v in vectors[name] if not all(x > r for x, r in zip(v, reference)))
        if outside:
            logger.warning(
                "report: %d of %d points of %s do not beat the reference point %s on every objective; "
                "they add nothing to its hypervolume", outside, len(vectors[name]), name, reference,
            )
    if bootstrap:
        for name, ci in _bootstrap(score_rows, objectives, reference, last_round, bootstrap).items():
            entries[name]["hypervolume_ci"] = list(ci)
    for name, steps in (training_steps or {}).items():
        if name in entries:
            entries[name]["training_steps"] = int(steps)
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "title": title,
        "objectives": objectives,
        "judge": judge,
        "reference_point": reference,
        "reference_point_rule": rule,
        "methods": entries,
    }
    if test_sets:
        report["test_sets"] = {}
        for set_name, ids in test_sets.items():
            wanted = set(ids)
            subset = [r for r in score_rows if r.prompt_id in wanted]
            if not subset:
                continue
            sub = make_report(subset, objectives, judge=judge, reference_point=reference, bootstrap=bootstrap)
            report["test_sets"][set_name] = {
                "prompts": len({r.prompt_id for r in subset}),
                "methods": {name: {k: e[k] for k in ("hypervolume", "hypervolume_ci", "best") if k in e}
                            for name, e in sub["methods"].items()},
            }
    if validation_rows:
        sub = make_report(validation_rows, objectives, judge=judge, reference_point=reference)
        report["validation"] = {
            "prompts": len({r.prompt_id for r in validation_rows}),
            "methods": {name: {"hypervolume": e["hypervolume"], "best": e["best"]}
                        for name, e in sub["methods"].items()},
        }
    _add_share_and_validity(report, check_validity, review_skill)
    return report


def _hypervolumes(entry: Mapping[str, Any] | None) -> dict[str, float] | None:
    if entry is None:
        return None
    return {name: e["hypervolume"] for name, e in entry["methods"].items()}


def _add_share_and_validity(report: dict[str, Any], check_validity: bool,
                            review_skill: Mapping[str, Any] | None) -> None:
    """``oracle_gain_share`` per prompt set (``all``, each test set, ``validation``; only where sipo, mod and
    sipo_oracle_filter ran) and, with ``check_validity``, ``validity``."""
    sets = {"all": _hypervolumes(report)}
    for name, entry in (report.get("test_sets") or {}).items():
        sets[name] = _hypervolumes(entry)
    sets["validation"] = _hypervolumes(report.get("validation"))
    shares = {name: share for name, hvs in sets.items() if hvs and (share := oracle_gain_share(hvs)) is not None}
    if shares:
        report["oracle_gain_share"] = shares
    if check_validity:
        report["validity"] = validity_conditions(sets["validation"], report["reference_point"], review_skill)


def _bootstrap(score_rows: Sequence[ScoreRow], objectives: Sequence[str], reference: Sequence[float],
               last_round: Mapping[str, int], resamples: int) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of every method's hypervolume over the prompts that every point was evaluated on."""
    from sipo.stats import bootstrap_hypervolumes

    scores: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for row in score_rows:
        name = method_key(row.method, int(row.round), last_round[row.method])
        scores[name][weights_tag(row.weights)][row.prompt_id] = [float(row.scores[o]) for o in objectives]
    prompt_sets = [set(by_prompt) for points in scores.values() for by_prompt in points.values()]
    common = sorted(set.intersection(*prompt_sets)) if prompt_sets else []
    if not common:
        return {}
    return bootstrap_hypervolumes(scores, common, reference, resamples=resamples)


def format_hypervolume(value: float) -> str:
    """A hypervolume for people: four decimals, or scientific notation below 1e-3 (where four decimals would
    print a small but real volume as ``0.0000``); exactly 0 stays ``0.0000``.

    >>> format_hypervolume(0.84917), format_hypervolume(3.2e-06), format_hypervolume(0.0)
    ('0.8492', '3.200e-06', '0.0000')
    """
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4f}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}"


def _ranked(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return sorted(report["methods"].items(), key=lambda item: (-item[1]["hypervolume"], item[0]))


def _n_label(points: Sequence[Mapping[str, Any]]) -> str:
    ns = sorted({int(p["n"]) for p in points})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """The summary table of a report dict alone (for README generators): one row per method, sorted by
    hypervolume (best first), with its hypervolume, best mean score per objective, number of points and prompts
    per point. The best value of each column is bold (every value equal to it up to
    :data:`~sipo.report.health.POINT_RELATIVE_TOLERANCE` of the scores' scale). Ends with a newline."""
    objectives = list(report["objectives"])
    ranked = _ranked(report)
    columns = ["hypervolume"] + [f"best {o}" for o in objectives]
    values = {name: [e["hypervolume"]] + [e["best"][o] for o in objectives] for name, e in ranked}
    tops = [max(v[i] for v in values.values()) for i in range(len(columns))] if values else []
    # Values equal to the best up to the scores' scale (two identical fronts) are all bold, never one of them:
    # the spread of every point's score for a best-score column, the largest hypervolume for the hypervolume.
    point_scales = score_scales(report["methods"])
    scales = [max((abs(v[0]) for v in values.values()), default=1.0) or 1.0] + [point_scales.get(o, 1.0)
                                                                                for o in objectives]
    lines = [
        "| method | " + " | ".join(columns) + " | points | prompts |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    for name, entry in ranked:
        cells = [f"**{_fmt(v)}**" if close_scores(v, top, scale) else _fmt(v)
                 for v, top, scale in zip(values[name], tops, scales)]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {len(entry['points'])} | {_n_label(entry['points'])} |"
        )
    return "\n".join(lines) + "\n"


def _with_ci(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "–"
    ci = entry.get("hypervolume_ci")
    interval = f" [{format_hypervolume(ci[0])}, {format_hypervolume(ci[1])}]" if ci else ""
    return format_hypervolume(entry["hypervolume"]) + interval


def interval_table(report: Mapping[str, Any]) -> str:
    """Each method's total optimizer steps and its hypervolume on every test set with the 95 % bootstrap interval
    over prompts (docs/benchmark.md), methods sorted by hypervolume on all prompts."""
    sets = report.get("test_sets") or {}
    header = "| method | training steps | all prompts |" + "".join(
        f" {name} ({s['prompts']} prompts) |" for name, s in sets.items())
    intervals = any("hypervolume_ci" in e for e in report["methods"].values())
    what = ("Hypervolume with its 95 % bootstrap interval over the test prompts (test-set noise only, not training "
            "noise)" if intervals else "Hypervolume (no interval: eval.bootstrap=0)")
    lines = [
        f"{what}; training steps are every optimizer step the method's adapters took, round 1 included.",
        "",
        header,
        "|---|---:|---:|" + "---:|" * len(sets),
    ]
    for name, entry in _ranked(report):
        steps = entry.get("training_steps")
        cells = [str(steps) if steps is not None else "–", _with_ci(entry)]
        cells += [_with_ci(s["methods"].get(name)) for s in sets.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _share_text(share: Mapping[str, Any] | None) -> str:
    if share is None:
        return "–"
    if share["value"] is None:
        return f"null ({share['reason']})"
    return f"{share['value']:.3f}"


def validation_markdown(report: Mapping[str, Any]) -> list[str]:
    """report.md's sections on the validation front, the oracle-gain share and the validity conditions (each only
    when the report has it)."""
    parts: list[str] = []
    validation = report.get("validation")
    if validation:
        parts += ["## Validation front", "",
                  f"Hypervolume on the {validation['prompts']} validation prompts (same reference point): what "
                  "settings and validity checks are read from, never the test numbers.", "",
                  "| method | validation hypervolume |", "|---|---:|"]
        for name, entry in sorted(validation["methods"].items(), key=lambda kv: (-kv[1]["hypervolume"], kv[0])):
            parts.append(f"| {name} | {format_hypervolume(entry['hypervolume'])} |")
        parts.append("")
    shares = report.get("oracle_gain_share")
    if shares:
        target, reference, bound = share_methods()
        parts += _section(
            "Oracle-gain share",
            f"SIPO's share of the oracle bound's gain over MOD, ({target} − {reference}) / ({bound} − {reference}), "
            "in hypervolume.",
            f"| prompts | share | {target} | {reference} | {bound} |", "|---|---:|---:|---:|---:|",
            [f"| {name.replace('_', '-')} | {_share_text(share)} | {share[target]:.4f} | {share[reference]:.4f} | "
             f"{share[bound]:.4f} |" for name, share in shares.items()])
    validity = report.get("validity")
    if validity:
        holds = {True: "yes", False: "**no**", None: "not checked"}
        parts += _section(
            "Validity",
            "Can this run show a method beating the baselines? Checked on validation prompts and training diagnostics "
            "only.",
            "| condition | value | threshold | holds |", "|---|---|---|:---:|",
            [f"| {name.replace('_', ' ')} | {_plain(c['value'])} | {_plain(c['threshold'])} | {holds[c['holds']]} |"
             for name, c in validity.items()])
    probe = report.get("review_probe")
    if probe:
        parts += _section(
            "Review skill by entity set",
            "The round-1 reviewer on MOD answers to training prompts of the loop's entities (in-distribution) and of "
            "the entities the loop never sees (transfer); a diagnostic, not a validity condition.",
            "| entities | reviews | wrong facts | corrected | changes | wrong changes | missing | added |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            [f"| {name.replace('_', '-')} | {p.get('reviews')} | {p.get('wrong_facts')} | "
             f"{_share(p.get('corrected_share'))} | {p.get('changes')} | {_share(p.get('wrong_change_share'))} | "
             f"{p.get('missing')} | {_share(p.get('added_share'))} |" for name, p in probe.items()])
    return parts


def _section(title: str, intro: str, columns: str, rule: str, rows: list[str]) -> list[str]:
    """A report.md section: its title, one paragraph, and a table."""
    return [f"## {title}", "", intro, "", columns, rule, *rows, ""]


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def data_markdown(data: Mapping[str, Any]) -> list[str]:
    """report.md's *Data* section: the unusable rows skipped per file, the test prompts capped and those dropped as
    too long (nothing when ``data`` is empty)."""
    from sipo.data.bad_rows import summary_lines

    lines = []
    if data.get("bad_rows"):
        bad = data["bad_rows"]
        lines.append(f"- {bad['skipped']} unusable row(s) skipped (data.on_bad_row={bad['policy']}):")
        lines += [f"  - {line}" for line in summary_lines(bad)]
    if "test_path_prompts" in data:
        lines.append(f"- data.test_path: {data['test_prompts_kept']} of its {data['test_path_prompts']} distinct "
                     "prompts kept (data.max_test_prompts)")
    if data.get("dropped_long_prompts"):
        dropped, kept = data["dropped_long_prompts"], data.get("evaluated_prompts") or 0
        share = dropped / (dropped + kept) if dropped + kept else 0.0
        lines.append(f"- {dropped} test prompt(s) ({share:.0%}) dropped as longer than model.max_prompt_tokens; "
                     f"{kept} evaluated")
    lines += [f"- {warning}" for warning in data.get("mixture_warnings", [])]
    if not lines:
        return []
    return ["## Data", "", "What the data lost before evaluation, and the training data the DPO mixtures left unused (from the "
            "prepare and evaluate manifests).", "",
            *lines, ""]


def _plain(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_markdown(report: Mapping[str, Any], *, figure: str | None = FIGURE_NAME) -> str:
    """The whole ``report.md``: title, judge and reference point, the summary table, the figure and a table of
    every point (mean ± standard error per objective)."""
    objectives = list(report["objectives"])
    reference = ", ".join(_fmt(x) for x in report["reference_point"])
    rule = report.get("reference_point_rule", "")
    pipeline = report.get("pipeline") or {}
    parts = [f"# {report.get('title') or 'SIPO evaluation report'}", ""]
    if report.get("validity"):
        failed = failure_lines(report["validity"])
        if failed:
            parts += ["> **What this benchmark run cannot test** (validity conditions on validation prompts and "
                      "training diagnostics; see *Validity*):", ">", *(f"> - {line}" for line in failed), ""]
    if pipeline.get("warnings"):
        parts += ["> **Warning: SIPO's self-improvement did nothing useful in this run** (see *Pipeline funnel*):",
                  ">", *(f"> - {w}" for w in pipeline["warnings"]), ""]
        if pipeline.get("diagnosis"):
            parts += ["> What limits it, with its numbers, and the settings that move it: *What to change*.", ""]
    parts += [
        f"- Judge: `{report['judge']}`",
        f"- Objectives: {', '.join(objectives)} (higher is better)",
        f"- Reference point: ({reference})" + (f" — {rule}" if rule else ""),
        "",
        "Hypervolume of each method's points (mean score per weight vector) against the reference point; "
        "higher is better. Bold marks the best value of each column.",
        "",
        markdown_table(report),
    ]
    if any("hypervolume_ci" in e or "training_steps" in e for e in report["methods"].values()) \
            or report.get("test_sets"):
        parts += [interval_table(report), ""]
    if figure:
        parts += [f"![Pareto fronts]({figure})", ""]
    parts += validation_markdown(report)
    parts += data_markdown(report.get("data") or {})
    if pipeline.get("funnel"):
        from sipo.report.health import funnel_markdown

        parts += ["## Pipeline funnel", "",
                  "What each self-improvement round had and kept (from the stages' manifests).", "",
                  funnel_markdown(pipeline["funnel"])]
        if pipeline.get("diagnosis"):
            parts += ["## What to change", "",
                      "Each stage of the funnel of a round that kept or trained nothing (or of every round, when "
                      "sipo's points equal mod's), with its numbers and the settings that move it.", "",
                      *pipeline["diagnosis"], ""]
    parts += [
        "## Points",
        "",
        "Mean ± standard error over the prompts; *front* marks the method's non-dominated points.",
        "",
        "| method | weights | " + " | ".join(objectives) + " | n | front |",
        "|---|---|" + "---:|" * len(objectives) + "---:|:---:|",
    ]
    for name, entry in _ranked(report):
        front = set(entry["front"])
        for index, point in enumerate(entry["points"]):
            cells = []
            for o in objectives:
                err = point["stderr"].get(o)
                cells.append(_fmt(point["scores"][o]) + ("" if err is None else f" ± {_fmt(err)}"))
            lines = f"| {name} | {weights_label(point['weights'], objectives)} | " + " | ".join(cells)
            parts.append(lines + f" | {point['n']} | {'✓' if index in front else ''} |")
    return "\n".join(parts) + "\n"


def summary_csv(report: Mapping[str, Any]) -> str:
    """``summary.csv``: one row per point (method, round, weights, ``<objective>_mean``, ``<objective>_stderr``,
    n, on_front), methods in :func:`~sipo.report.plot.ordered_methods` order, points in weight order; an
    undefined standard error is empty."""
    objectives = list(report["objectives"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["method", "round", "weights"]
    for o in objectives:
        header += [f"{o}_mean", f"{o}_stderr"]
    writer.writerow(header + ["n", "on_front"])
    for name in ordered_methods(report):
        entry = report["methods"][name]
        front = set(entry["front"])
        for index, point in enumerate(entry["points"]):
            row: list[Any] = [name, entry["round"], weights_tag(point["weights"])]
            for o in objectives:
                err = point["stderr"].get(o)
                row += [repr(float(point["scores"][o])), "" if err is None else repr(float(err))]
            writer.writerow(row + [point["n"], index in front])
    return buffer.getvalue()


def _sorted_rows(score_rows: Sequence[ScoreRow], objectives: Sequence[str]) -> list[ScoreRow]:
    return sorted(
        score_rows,
        key=lambda r: (method_order(r.method), r.round, _weight_order(r.weights, objectives), r.prompt_id),
    )


def build_report(
    score_rows: Sequence[ScoreRow],
    objectives: Sequence[str],
    *,
    judge: str,
    out_dir: Path,
    reference_point: list[float] | None = None,
    title: str = "",
    test_sets: Mapping[str, Sequence[str]] | None = None,
    bootstrap: int = 0,
    training_steps: Mapping[str, int] | None = None,
    funnel: Sequence[Mapping[str, Any]] | None = None,
    validation_rows: Sequence[ScoreRow] | None = None,
    check_validity: bool = False,
    review_skill: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    diagnosis_input: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    review_probe: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``report.json``, ``scores.jsonl``, ``summary.csv``, ``pareto.png`` and ``report.md`` into ``out_dir``
    (each atomically: a temporary name, then a rename) and return the report dict (see :func:`make_report`).

    ``funnel`` (the self-improvement rounds' counts, :func:`sipo.report.health.round_funnel`) adds
    ``pipeline: {funnel, warnings}`` to the report. ``report.json`` is written last, so its presence means the
    other four are complete. ``data`` (:func:`sipo.stages.report.data_counts`: rows skipped, test prompts capped
    or dropped as too long) is stored as ``data`` and shown in report.md's *Data* section. ``diagnosis_input``
    (stage counts and settings, :func:`sipo.stages.report.diagnosis_input`) adds ``pipeline.diagnosis``, the
    bottleneck of a round that kept nothing and what moves it (:func:`sipo.report.health.diagnosis`).
    ``review_probe`` (the ``review_probe`` stage's review skill per entity set) is stored as ``review_probe`` and
    shown in report.md beside the validity conditions.
    """
    from sipo.report.health import diagnosis, health_warnings

    report = make_report(score_rows, objectives, judge=judge, reference_point=reference_point, title=title,
                         test_sets=test_sets, bootstrap=bootstrap, training_steps=training_steps,
                         validation_rows=validation_rows, check_validity=check_validity, review_skill=review_skill)
    if review_probe:
        report["review_probe"] = {name: dict(skill) for name, skill in review_probe.items()}
    if funnel is not None:
        report["pipeline"] = {"funnel": [dict(e) for e in funnel],
                              "warnings": health_warnings(funnel, report["methods"])}
        if diagnosis_input is not None:
            stage_counts, settings = diagnosis_input
            lines = diagnosis(funnel, stage_counts, settings, report["pipeline"]["warnings"])
            if lines:
                report["pipeline"]["diagnosis"] = lines
    if data:
        report["data"] = dict(data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "scores.jsonl", _sorted_rows(score_rows, report["objectives"]))
    atomic_write_text(out_dir / "summary.csv", summary_csv(report))
    plot_fronts(report, out_dir / FIGURE_NAME)
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    atomic_write_json(out_dir / "report.json", report)
    num_points = sum(len(e["points"]) for e in report["methods"].values())
    logger.info("report: wrote %s (%d methods, %d points, %d rows)", out_dir, len(report["methods"]), num_points,
                len(score_rows))
    return report


def _number_map(value: Any, field: str, path: str, line: int) -> dict[str, float]:
    if not isinstance(value, dict):
        raise DataError(f"'{field}' must be an object of numbers", path=path, line=line)
    out = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise DataError(f"'{field}.{key}' must be a number, got {number!r}", path=path, line=line)
        out[str(key)] = float(number)
    return out


def load_score_rows(path: str | Path) -> list[ScoreRow]:
    """Read ScoreRows from JSONL (``evaluate/scores.jsonl`` or a report's ``scores.jsonl``).

    Raises:
        DataError: the file is missing, or a line is not a valid ScoreRow (naming the file and line).
    """
    path_str = str(path)
    rows = []
    for line, obj in iter_json_lines(path):
        for field in ("method", "prompt_id"):
            if not isinstance(obj.get(field), str):
                raise DataError(f"'{field}' must be a string", path=path_str, line=line)
        round_ = obj.get("round", 1)
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 1:
            raise DataError(f"'round' must be an integer >= 1, got {round_!r}", path=path_str, line=line)
        response = obj.get("response", "")
        if not isinstance(response, str):
            raise DataError("'response' must be a string", path=path_str, line=line)
        prompt = obj.get("prompt", "")
        if not isinstance(prompt, str):
            raise DataError("'prompt' must be a string", path=path_str, line=line)
        rows.append(
            ScoreRow(
                method=obj["method"],
                weights=_number_map(obj.get("weights", {}), "weights", path_str, line),
                prompt_id=obj["prompt_id"],
                response=response,
                scores=_number_map(obj.get("scores"), "scores", path_str, line),
                round=round_,
                prompt=prompt,
            )
        )
    return rows


def read_report(path: str | Path) -> dict[str, Any]:
    """Load ``report.json`` (a file, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise DataError("report not found", path=str(path))
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    if not isinstance(report, dict) or not {"objectives", "judge", "reference_point", "methods"} <= set(report):
        raise DataError("not a sipo report (needs objectives, judge, reference_point, methods)", path=str(path))
    return report
