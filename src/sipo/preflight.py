"""Checks of a run's inputs before anything is written: data files, model folders and prompt templates.

:func:`check_inputs` is called by the pipeline with the names of the stages that are about to run, so that a
missing data file, a misspelled objective, a missing model folder or a pickle-only checkpoint ends the run before
``config.yaml`` is saved or a stage starts (the stages themselves check again: these are only the cheap checks).
"""

from __future__ import annotations

from collections.abc import Collection

from sipo.config import PipelineConfig
from sipo.prompting import check_templates
from sipo.stages.registry import STAGES


def check_inputs(cfg: PipelineConfig, stages: Collection[str]) -> None:
    """Check what the named stages (names such as ``prepare`` or ``sample``) will read: each definition's own
    ``check_inputs`` (the data source's objectives and paths, a judge's models), the base model when one loads it,
    and the templates when one renders them.

    Raises:
        ConfigError: a misspelled objective, an unknown column rename, a missing model folder (or one holding only
            pickle weights without ``model.allow_pickle``), a missing reward model folder or prompt template.
        DataError: ``data.path`` does not exist or holds no ``*.jsonl`` files.
    """
    definitions = [d for d in STAGES.values() if d.name in set(stages)]
    for definition in definitions:
        if definition.check_inputs is not None:
            definition.check_inputs(cfg)
    if any(d.loads_model for d in definitions) and cfg.model.name_or_path not in ("random", "smollm2"):
        from sipo.models.loading import resolve_model_source  # sipo.models imports torch

        resolve_model_source(cfg.model)
    if any(d.renders_templates for d in definitions):
        check_templates(cfg)


def precheck_stages(cfg: PipelineConfig, stages: Collection[str], cache: dict) -> None:
    """Do the parts of the named stages' work that can refuse the run and write nothing (their definitions'
    ``precheck``: e.g. the ``prepare`` stage's data loading and splitting, every malformed row, a split that comes
    out empty) before the run writes anything. Each result is kept in ``cache`` under the stage's name, for the
    stage, so the data is read once."""
    for definition in STAGES.values():
        if definition.name in stages and definition.precheck is not None:
            cache[definition.name] = definition.precheck(cfg)
