"""Load a run's config and check it whole: the config tree's own rules, then the registries'.

The import graph has no cycle through :mod:`sipo.config`::

    sipo.errors  <-  sipo.config  <-  sipo.methods, sipo.judges, sipo.data, sipo.tracking, ...  <-  sipo.configure

:mod:`sipo.config` is the schema: each section checks its own fields, :meth:`~sipo.config.PipelineConfig.validate`
adds the rules between sections, and it imports nothing of sipo but :mod:`sipo.errors`. The names that users and
plugins extend (``methods``, ``eval.judge``, ``data.source``) live in registries next to the code they name, and
that code reads the config, so the registries import :mod:`sipo.config`; checking the config against them is
therefore done here, above both, and :func:`load_config` (read, then :func:`validate`) lives here too. A
registry is read when a config is validated, not when this module is imported, so a method, judge or source
registered after import is a valid choice.

Example::

    cfg = load_config("configs/smoke.yaml", ["run_dir=/tmp/run", "dpo.beta=0.2", "methods=[sft,mod,sipo]"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sipo.config import PipelineConfig, read_config
from sipo.data import check_source_config
from sipo.judges import JUDGES
from sipo.methods import METHODS
from sipo.tracking import check_report_to


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Load a YAML preset, apply dotted ``key=value`` overrides, validate, and return the typed config.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong type or is invalid.
    """
    cfg = read_config(path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: PipelineConfig) -> None:
    """Check values that types alone cannot: the config tree (every section, then the rules between sections),
    then the names it takes from registries and the settings those entries check (the data source first: what it
    asks of ``data.path``, then its own rules; a method's check may read what the source offers). Raises
    :class:`ConfigError` naming the key at fault."""
    cfg.validate()
    check_source_config(cfg)
    for method in cfg.methods:
        entry = METHODS.choose(method, "methods")
        if entry.check is not None:
            entry.check(cfg)
    judge = JUDGES.choose(cfg.eval.judge, "eval.judge")
    if judge.check is not None:
        judge.check(cfg)
    if cfg.train.report_to:
        check_report_to(list(cfg.train.report_to))
