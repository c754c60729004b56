"""Checks of a run's inputs before anything is written: data files, model folders and prompt templates.

:func:`check_inputs` is called by the pipeline with the names of the stages that are about to run, so that a
missing data file, a misspelled objective, a missing model folder or a pickle-only checkpoint ends the run before
``config.yaml`` is saved or a stage starts (the stages themselves check again: these are only the cheap checks).
"""

from __future__ import annotations

from collections.abc import Collection

from sipo.config import FillJudge, PipelineConfig
from sipo.stages.registry import STAGES


def check_data(cfg: PipelineConfig) -> None:
    """The built-in sources' objectives, column renames and ``data.path``; raises ConfigError or DataError."""
    from sipo.data import helpsteer, jsonl, pku_saferlhf

    source = cfg.data.source
    objectives = list(cfg.objectives)
    if source == "helpsteer":
        helpsteer.check_objectives(objectives)
    elif source == "pku_saferlhf":
        pku_saferlhf.check_objectives(objectives)
    elif source == "jsonl":
        jsonl.column_names(objectives, dict(cfg.data.response_columns))
    if source in ("helpsteer", "pku_saferlhf", "jsonl"):
        from sipo.config import data_specs
        from sipo.data.readers import check_path

        specs = data_specs(cfg)
        for spec in specs.values() if specs else [{"path": cfg.data.path}]:
            check_path(spec["path"])
    if cfg.data.test_path:
        from sipo.data.readers import check_path

        check_path(cfg.data.test_path, "data.test_path")


def check_inputs(cfg: PipelineConfig, stages: Collection[str]) -> None:
    """Check what the named stages (names such as ``prepare`` or ``sample``) will read.

    Raises:
        ConfigError: a misspelled objective, an unknown column rename, a missing model folder (or one holding only
            pickle weights without ``model.allow_pickle``), a missing reward model folder or prompt template.
        DataError: ``data.path`` does not exist or holds no ``*.jsonl`` files.
    """
    stages = set(stages)
    definitions = [STAGES[name] for name in stages if name in STAGES]
    if "prepare" in stages:
        check_data(cfg)
    if any(d.loads_model for d in definitions) and cfg.model.name_or_path not in ("random", "smollm2"):
        from sipo.models.loading import resolve_model_source

        resolve_model_source(cfg.model)
    if any(d.renders_templates for d in definitions):
        from sipo.prompting import _load_template

        _load_template(cfg.review.template)  # found, and valid jinja
        _load_template(cfg.rewrite.template)
    if ("evaluate" in stages and cfg.eval.judge == "reward_model") or \
            ("label" in stages and cfg.data.fill_judge == FillJudge.reward_model):
        from sipo.scoring.reward_model import resolve_source

        for i, spec in enumerate(cfg.eval.reward_model.models):
            resolve_source(spec.name_or_path, cfg.model, f"eval.reward_model.models[{i}].name_or_path")


def precheck_stages(cfg: PipelineConfig, stages: Collection[str], cache: dict) -> None:
    """Do the parts of the named stages' work that can refuse the run and write nothing, before the run writes
    anything: the ``prepare`` stage's data loading and splitting (every malformed row, a split that comes out
    empty). The result is kept in ``cache`` for the stage, so the data is read once."""
    if "prepare" in stages:
        from sipo.stages.prepare import compute

        cache["prepare"] = compute(cfg)
