"""``sipo compare RUN_A RUN_B ... --out DIR``: several runs' methods on one reference point, in one table and one
figure.

Each run's ``report/report.json`` gives its points (mean score per method and weight vector). The comparison keys
every method by ``<run label>/<method>``, takes one reference point for all of them (``--reference-point``, else
the worst mean score over every run's points minus a margin, the rule of a single report), recomputes every
hypervolume and front against it, and writes ``compare.json`` (the layout of ``report.json``, plus ``runs``),
``compare.md`` (the table) and ``compare.png`` (the figure: one colour per method, one line style per run).

Scores are comparable only when the runs share their objectives and judge. Runs with other objectives (or
objective order) or another judge are refused; the ``implicit`` judge (each run's own adapters) is accepted with a
warning in the table, since two runs' implicit rewards are not on one scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sipo.artifacts import atomic_write_json, atomic_write_text
from sipo.errors import DataError, RunDirError
from sipo.judges import JUDGES
from sipo.pareto import score_methods

logger = logging.getLogger(__name__)



def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Short, unique labels: the run folders' names, with their parent folder's name where two are alike."""
    paths = [Path(p).resolve() for p in run_dirs]
    labels = [p.name for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}:{label}" for i, label in enumerate(labels)]
    return labels


def combine_reports(reports: Sequence[dict[str, Any]], labels: Sequence[str],
                    reference_point: Sequence[float] | None = None, margin: float = 0.05) -> dict[str, Any]:
    """One report dict of every run's methods (keys ``<label>/<method>``) on one reference point. Pure.

    Raises:
        DataError: the runs differ in objectives or judge, or the reference point has the wrong length.
    """
    if not reports:
        raise DataError("nothing to compare")
    objectives = list(reports[0]["objectives"])
    judge = reports[0]["judge"]
    for label, report in zip(labels, reports):
        if list(report["objectives"]) != objectives:
            raise DataError(f"run '{label}' has objectives {report['objectives']}, not {objectives}: its scores "
                            "are not comparable")
        if report["judge"] != judge:
            raise DataError(f"run '{label}' was judged by '{report['judge']}', not '{judge}': its scores are not "
                            "comparable")
    methods: dict[str, dict[str, Any]] = {}
    for index, (label, report) in enumerate(zip(labels, reports)):
        for name, entry in report["methods"].items():
            methods[f"{label}/{name}"] = {
                "method": entry.get("method", name.split("@", 1)[0]),
                "round": entry.get("round", 1),
                "run": label,
                "run_index": index,
                "points": entry["points"],
            }
    if reference_point is not None and len(reference_point) != len(objectives):
        raise DataError(f"reference point {list(reference_point)} needs one value per objective "
                        f"({len(objectives)})")
    _, reference, rule = score_methods(methods, objectives, reference_point, margin=margin,
                                       scope="every run's methods")
    return {
        "schema_version": 1,
        "title": "Comparison of " + ", ".join(labels),
        "objectives": objectives,
        "judge": judge,
        "reference_point": reference,
        "reference_point_rule": rule,
        "runs": list(labels),
        "methods": methods,
    }


def compare_markdown(combined: dict[str, Any], run_dirs: Sequence[str | Path]) -> str:
    from sipo.report.build import markdown_table

    reference = ", ".join(f"{x:.4g}" for x in combined["reference_point"])
    lines = [f"# {combined['title']}", ""]
    for label, path in zip(combined["runs"], run_dirs):
        lines.append(f"- `{label}`: `{Path(path).resolve()}`")
    for label, line in combined.get("stale", {}).items():
        lines.append(f"- **`{label}`: {line}**; its numbers may not follow from its config.yaml")
    lines += ["", f"- Judge: `{combined['judge']}`; objectives: {', '.join(combined['objectives'])} (higher is "
                  "better)",
              f"- One reference point for every run: ({reference}) — {combined['reference_point_rule']}", ""]
    judge = JUDGES[combined["judge"]] if combined["judge"] in JUDGES else None
    if judge is not None and not judge.shared_scale:
        shared = ", ".join(f"`{d.name}`" for d in JUDGES.values() if d.shared_scale)
        lines += [f"> The `{judge.name}` judge scores each run with its own round-1 adapters, so the runs' scores "
                  f"are not on one scale; prefer a shared judge ({shared}) to compare runs.", ""]
    lines += [markdown_table(combined), "![Pareto fronts of every run](compare.png)", ""]
    return "\n".join(lines)


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 reference_point: Sequence[float] | None = None, *, allow_stale: bool = False) -> dict[str, Any]:
    """Write ``compare.json``, ``compare.md`` and ``compare.png`` of the runs into ``out_dir``; return the dict.

    Each run's report stage (and every stage before it) must check out against its config.yaml
    (:func:`sipo.pipeline.check_before_reading`); with ``allow_stale`` a run that does not is compared anyway, and
    ``compare.md`` and ``compare.json`` (``stale``) say which.
    """
    from sipo.api import open_run_config
    from sipo.artifacts import RunDir
    from sipo.pipeline import check_before_reading
    from sipo.report.build import format_hypervolume, read_report
    from sipo.report.plot import plot_fronts

    if len(run_dirs) < 2:
        raise DataError("give at least two run directories to compare")
    reports, stale = [], {}
    labels = run_labels(run_dirs)
    for label, run_dir in zip(labels, run_dirs):
        try:
            line = check_before_reading(open_run_config(run_dir), RunDir(run_dir), ["report"], "compare",
                                        allow_stale=allow_stale)
        except RunDirError as exc:  # no (readable) config.yaml: nothing to check the report against
            if not allow_stale or not (Path(run_dir) / "report" / "report.json").is_file():
                raise
            logger.warning("compare: %s; its report is used anyway (--allow-stale)", exc)
            line = f"stale run (--allow-stale): {exc}"
        if line is not None:
            stale[label] = line
        path = Path(run_dir) / "report" / "report.json"
        if not path.is_file():
            raise DataError("no report (run the report stage, or `sipo report RUN_DIR`)", path=str(path))
        reports.append(read_report(path))
    combined = combine_reports(reports, labels, reference_point)
    if stale:
        combined["stale"] = stale
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_fronts(combined, out / "compare.png")
    atomic_write_text(out / "compare.md", compare_markdown(combined, run_dirs))
    atomic_write_json(out / "compare.json", combined)
    for name, entry in sorted(combined["methods"].items(), key=lambda kv: -kv[1]["hypervolume"]):
        logger.info("compare: %-24s hypervolume %s", name, format_hypervolume(entry["hypervolume"]))
    return combined
