"""Stage ``report``: hypervolume, Pareto fronts, tables and the figure, from ``evaluate/scores.jsonl``.

Writes ``report/report.json``, ``report/scores.jsonl``, ``report/summary.csv``, ``report/pareto.png`` and
``report/report.md``. ``sipo report RUN_DIR`` runs it again on a finished run.

With ``evaluate/validation_scores.jsonl`` the report also holds the validation front; on the synthetic benchmark
judged by the oracle it states the validity conditions (:mod:`sipo.report.validity`), from that front and the
round-1 reviews' skill.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sipo.artifacts import RunDir
from sipo.config import PipelineConfig
from sipo.errors import RunDirError
from sipo.stage import StageContext, StageDef

logger = logging.getLogger(__name__)


def write_report(cfg: PipelineConfig, run_dir: RunDir) -> dict:
    from sipo.report import build_report, load_score_rows
    from sipo.report.build import format_hypervolume

    scores_path = run_dir.path("evaluate", "scores.jsonl")
    if not scores_path.is_file():
        raise RunDirError(f"{scores_path}: not found; run the evaluate stage first")
    from sipo.stages.prepare import read_test_sets

    rows = load_score_rows(scores_path)
    validation_path = run_dir.path("evaluate", "validation_scores.jsonl")
    validation_rows = load_score_rows(validation_path) if validation_path.is_file() else None
    check_validity = benchmark_with_oracle(cfg)
    report = build_report(rows, list(cfg.objectives), judge=cfg.eval.judge, out_dir=run_dir.path("report"),
                          reference_point=cfg.eval.reference_point, title=Path(cfg.run_dir).name,
                          test_sets=read_test_sets(run_dir), bootstrap=cfg.eval.bootstrap,
                          training_steps=training_steps(cfg, run_dir),
                          funnel=run_funnel(cfg, run_dir), validation_rows=validation_rows,
                          check_validity=check_validity,
                          review_skill=round_review_skill(cfg, run_dir) if check_validity else None)
    for name, method in sorted(report["methods"].items(), key=lambda kv: -kv[1]["hypervolume"]):
        logger.info("report: %-12s hypervolume %s", name, format_hypervolume(method["hypervolume"]))
    warnings = report.get("pipeline", {}).get("warnings", [])
    for warning in warnings:
        logger.warning("pipeline health: %s", warning)
    from sipo.report.validity import failure_lines

    for line in failure_lines(report.get("validity") or {}):
        logger.warning("validity: %s", line)
    return {"methods": len(report["methods"]),
            "hypervolume": {k: round(v["hypervolume"], 6) for k, v in report["methods"].items()},
            "health_warnings": len(warnings)}


def benchmark_with_oracle(cfg: PipelineConfig) -> bool:
    """Whether the validity conditions apply: the synthetic benchmark judged by its oracle."""
    return cfg.data.source == "synthetic" and cfg.eval.judge == "oracle"


def round_review_skill(cfg: PipelineConfig, run_dir: RunDir, round_: int = 1) -> dict | None:
    """How well round ``round_``'s reviews match the ideal review (synthetic benchmark; None without reviews)."""
    from sipo.records import Review, read_jsonl

    path = run_dir.path(f"r{round_}/review", "reviews.jsonl")
    if not path.is_file():
        return None
    from sipo.stages.sample import read_candidates
    from sipo.synthetic.diagnostics import review_skill
    from sipo.synthetic.world import build_world

    by_id = {c.candidate_id: c for c in read_candidates(run_dir, round_)}
    items = [(by_id[r.candidate_id].prompt, by_id[r.candidate_id].response, r.review)
             for r in read_jsonl(path, Review) if r.candidate_id in by_id]
    return review_skill(build_world(cfg), items, list(cfg.objectives))


def run_funnel(cfg: PipelineConfig, run_dir: RunDir) -> list[dict] | None:
    """The funnel of every self-improvement round from the manifests (None when the run has no ``sipo``)."""
    from sipo.report.health import round_funnel

    if "sipo" not in cfg.methods:
        return None
    counts = {}
    for r in range(1, cfg.rounds + 1):
        for name in ("sample", "combine", "filter", "realign"):
            manifest = run_dir.read_manifest(f"r{r}/{name}") or {}
            counts[f"r{r}/{name}"] = manifest.get("counts", {})
    return round_funnel(counts, list(cfg.objectives), cfg.rounds)


def health_warnings_of(run_dir: RunDir) -> list[str]:
    """The pipeline-health warnings of a finished report (none when there is no report.json)."""
    import json

    path = run_dir.path("report", "report.json")
    if not path.is_file():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).get("pipeline", {}).get("warnings", []))


def stage_steps(run_dir: RunDir, stage_id: str) -> int:
    """Optimizer steps of every adapter a training stage trained (``metrics_*`` counts of its manifest)."""
    counts = (run_dir.read_manifest(stage_id) or {}).get("counts", {})
    return sum(int(v.get("steps", 0)) for k, v in counts.items() if k.startswith("metrics_") and isinstance(v, dict))


def training_steps(cfg: PipelineConfig, run_dir: RunDir) -> dict[str, int]:
    """Report key -> total optimizer steps of the preference training behind the method (SFT, shared by all,
    not counted): round-1 DPO for every method built on it, plus its own stage's steps."""
    dpo = stage_steps(run_dir, "dpo")
    steps = {"sft": 0, "dpo": dpo, "dpo_soups": dpo, "mod": dpo}
    realign = 0
    for r in range(1, cfg.rounds + 1):
        realign += stage_steps(run_dir, f"r{r}/realign")
        steps["sipo" if r == cfg.rounds else f"sipo@r{r}"] = dpo + realign
    for method in ("dpo_lw", "modpo", "sipo_no_rewrite", "sipo_no_filter", "sipo_oracle_filter", "nll_control"):
        steps[method] = dpo + stage_steps(run_dir, method)  # one-hot DPO-LW / MODPO points reuse the DPO adapters
    return steps


def run(ctx: StageContext) -> dict:
    return write_report(ctx.cfg, ctx.run_dir)


def report_run_dir(path: str) -> Path:
    """Rebuild the report of a finished run directory; returns the report folder."""
    from sipo.configure import load_config

    run_dir = RunDir(path)
    saved = run_dir.root / "config.yaml"
    if not saved.is_file():
        raise RunDirError(f"{saved}: not found; is {path} a sipo run directory?")
    cfg = load_config(saved, [f"run_dir={path}"])
    write_report(cfg, run_dir)
    return run_dir.path("report")


SPEC = StageDef(
    name="report", run=run, help="hypervolumes, Pareto fronts, report.json / summary.csv / pareto.png / report.md",
    reads="scores", writes="`report/`", config_keys=("eval.reference_point", "eval.judge")
)
