"""Stage ``report``: hypervolume, Pareto fronts, tables and the figure, from ``evaluate/scores.jsonl``.

Writes ``report/report.json``, ``report/scores.jsonl``, ``report/summary.csv``, ``report/pareto.png`` and
``report/report.md``. ``sipo report RUN_DIR`` runs it again on a finished run.

With ``evaluate/validation_scores.jsonl`` the report also holds the validation front; on the synthetic benchmark
judged by the oracle it states the validity conditions (:mod:`sipo.report.validity`), from that front and the
round-1 reviews' skill.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sipo.artifacts import RunDir, atomic_write_text
from sipo.config import PipelineConfig
from sipo.configure import load_config
from sipo.data import SOURCES
from sipo.errors import RunDirError
from sipo.judges import JUDGES
from sipo.methods import METHODS
from sipo.report import build_report, load_score_rows
from sipo.report.build import format_hypervolume
from sipo.report.health import round_funnel
from sipo.report.validity import failure_lines
from sipo.stage import StageContext, StageDef
from sipo.stages.prepare import read_test_sets
from sipo.stages.review import OUTPUT as REVIEWS
from sipo.stages.review import read_reviews
from sipo.stages.review_probe import read_probe
from sipo.stages.sample import read_candidates

logger = logging.getLogger(__name__)


def write_report(cfg: PipelineConfig, run_dir: RunDir) -> dict:
    scores_path = run_dir.path("evaluate", "scores.jsonl")
    if not scores_path.is_file():
        raise RunDirError(f"{scores_path}: not found; run the evaluate stage first")
    rows = load_score_rows(scores_path)
    validation_path = run_dir.path("evaluate", "validation_scores.jsonl")
    validation_rows = load_score_rows(validation_path) if validation_path.is_file() else None
    check_validity = benchmark_with_oracle(cfg)
    report = build_report(rows, list(cfg.objectives), judge=cfg.eval.judge, out_dir=run_dir.path("report"),
                          reference_point=cfg.eval.reference_point, title=Path(cfg.run_dir).name,
                          test_sets=read_test_sets(run_dir), bootstrap=cfg.eval.bootstrap,
                          training_steps=training_steps(cfg, run_dir),
                          funnel=run_funnel(cfg, run_dir), data=data_counts(run_dir, cfg),
                          diagnosis_input=diagnosis_input(cfg, run_dir),
                          validation_rows=validation_rows,
                          check_validity=check_validity,
                          review_skill=round_review_skill(cfg, run_dir) if check_validity else None,
                          review_probe=read_probe(run_dir))
    for name, method in sorted(report["methods"].items(), key=lambda kv: -kv[1]["hypervolume"]):
        logger.info("report: %-12s hypervolume %s", name, format_hypervolume(method["hypervolume"]))
    warnings = report.get("pipeline", {}).get("warnings", [])
    for warning in warnings:
        logger.warning("pipeline health: %s", warning)
    for line in failure_lines(report.get("validity") or {}):
        logger.warning("validity: %s", line)
    return {"methods": len(report["methods"]),
            "hypervolume": {k: round(v["hypervolume"], 6) for k, v in report["methods"].items()},
            "health_warnings": len(warnings)}


def benchmark_with_oracle(cfg: PipelineConfig) -> bool:
    """Whether the validity conditions apply: a source with its own ground truth (one that can judge reviews:
    the synthetic benchmark) judged by a ground-truth judge (its oracle)."""
    return SOURCES[cfg.data.source].review_skill is not None and JUDGES[cfg.eval.judge].ground_truth


def round_review_skill(cfg: PipelineConfig, run_dir: RunDir, round_: int = 1) -> dict | None:
    """How well round ``round_``'s reviews match the ideal review (the source's ``review_skill`` hook; None
    without reviews or without the hook)."""
    measure = SOURCES[cfg.data.source].review_skill
    if measure is None or not run_dir.path(f"r{round_}/review", REVIEWS).is_file():
        return None
    by_id = {c.candidate_id: c for c in read_candidates(run_dir, round_)}
    items = [(by_id[i].prompt, by_id[i].response, r.review) for i, r in read_reviews(run_dir, round_).items()
             if i in by_id]
    return measure(cfg, items)


def run_funnel(cfg: PipelineConfig, run_dir: RunDir) -> list[dict] | None:
    """The funnel of every self-improvement round from the manifests (None when no configured method has
    rounds)."""
    if not any(METHODS.choose(name, "methods").rounds for name in cfg.methods):
        return None
    counts = {}
    for r in range(1, cfg.rounds + 1):
        for name in ("sample", "combine", "filter", "realign"):
            manifest = run_dir.read_manifest(f"r{r}/{name}") or {}
            counts[f"r{r}/{name}"] = manifest.get("counts", {})
    return round_funnel(counts, list(cfg.objectives), cfg.rounds)


def diagnosis_input(cfg: PipelineConfig, run_dir: RunDir) -> tuple[dict, dict]:
    """(stage id -> manifest counts, the settings the advice names) for :func:`sipo.report.health.diagnosis`."""
    counts = {}
    for stage_id in ("prepare", "label", *(f"r{r}/{name}" for r in range(1, cfg.rounds + 1)
                                           for name in ("sample", "filter", "realign"))):
        manifest = run_dir.read_manifest(stage_id)
        if manifest:
            counts[stage_id] = manifest.get("counts", {})
    train = cfg.realign.train
    settings = {"data.max_conflict_prompts": cfg.data.max_conflict_prompts, "filter.soups": cfg.filter.soups,
                "realign.train.batch_size": train.batch_size,
                "realign.train.gradient_accumulation_steps": train.gradient_accumulation_steps,
                "realign.train.epochs": train.epochs}
    return counts, settings


def data_counts(run_dir: RunDir, cfg: PipelineConfig | None = None) -> dict:
    """What the data lost on the way (report.json ``data``): the unusable rows skipped (``bad_rows`` of the
    prepare manifest), the test prompts of ``data.test_path`` and those kept, the test prompts dropped by
    evaluate as longer than ``model.max_prompt_tokens``, and (with ``cfg``) the DPO mixtures that use under half
    of their usable pairs. Empty when nothing was lost or capped."""
    prepare = (run_dir.read_manifest("prepare") or {}).get("counts", {})
    evaluate = (run_dir.read_manifest("evaluate") or {}).get("counts", {})
    data: dict = {}
    if prepare.get("bad_rows", {}).get("skipped"):
        data["bad_rows"] = prepare["bad_rows"]
    if "test_path_prompts" in prepare:
        data["test_path_prompts"] = prepare["test_path_prompts"]
        data["test_prompts_kept"] = prepare.get("test_prompts")
    if evaluate.get("dropped_long_prompts"):
        data["dropped_long_prompts"] = evaluate["dropped_long_prompts"]
        data["evaluated_prompts"] = evaluate.get("prompts")
    if cfg is not None:
        from sipo.report.health import mixture_warnings

        mixture = mixture_warnings(prepare, cfg.data.conflict_fraction, cfg.data.max_train_pairs)
        if mixture:
            data["mixture_warnings"] = mixture
    return data


def health_warnings_of(run_dir: RunDir) -> list[str]:
    """The pipeline-health warnings of a finished report (none when there is no report.json)."""
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
    not counted), as each method's definition counts them (:meth:`sipo.methods.MethodDef.training_steps`)."""
    steps: dict[str, int] = {}
    for definition in METHODS.values():
        steps.update(definition.training_steps(cfg, lambda stage_id: stage_steps(run_dir, stage_id)))
    return steps


def run(ctx: StageContext) -> dict:
    return write_report(ctx.cfg, ctx.run_dir)


def report_run_dir(path: str, *, stale: str | None = None) -> Path:
    """Rebuild the report of a finished run directory; returns the report folder. ``stale``: a line saying that
    the run did not check out (``sipo report --allow-stale``, see :func:`sipo.api.rebuild_report`), put under the
    title of report.md."""
    run_dir = RunDir(path)
    saved = run_dir.root / "config.yaml"
    if not saved.is_file():
        raise RunDirError(f"{saved}: not found; is {path} a sipo run directory?")
    cfg = load_config(saved, [f"run_dir={path}"])
    write_report(cfg, run_dir)
    if stale is not None:
        markdown = run_dir.path("report", "report.md")
        title, _, rest = markdown.read_text(encoding="utf-8").partition("\n")
        atomic_write_text(markdown, f"{title}\n\n> **{stale}.** These numbers may not follow from config.yaml."
                                    f"\n{rest}")
    return run_dir.path("report")


SPEC = StageDef(
    name="report", run=run, help="hypervolumes, Pareto fronts, report.json / summary.csv / pareto.png / report.md",
    reads="scores", writes="`report/`", config_keys=("eval.reference_point", "eval.judge"),
    # The review probe's skill goes into the report too (its manifest), so a re-run probe re-runs the report.
    upstream=lambda cfg, before: ("evaluate", *(i for i, d in before if d.name == "review_probe"))
)
