"""Preference data sources and the pure logic of the ``prepare`` stage.

A *source* is a :class:`SourceDef` in :data:`SOURCES`, under the name used by ``data.source``: its ``load``
function ``fn(cfg: PipelineConfig) -> list[Pair]``, the local files it reads (which fingerprint ``prepare``), the
checks of its objectives and paths before a run writes anything, and what it asks of the config (whether it reads
``data.path``, rules of its own) and offers beyond its pairs (an exact oracle). No module outside a source's
definition branches on its name: they read these properties. Built in:

- ``helpsteer``: nvidia/HelpSteer and HelpSteer2 rows (:mod:`sipo.data.helpsteer`);
- ``pku_saferlhf``: PKU-SafeRLHF / -10K / BeaverTails rows (:mod:`sipo.data.pku_saferlhf`);
- ``jsonl``: a user's own data in any format, detected from the first row (:mod:`sipo.data.jsonl`; TRL and
  HelpSteer2 preference rows in :mod:`sipo.data.formats`);
- ``synthetic``: the synthetic benchmark, which builds its own data and knows the truth (:mod:`sipo.synthetic`).

Every source reads JSONL, parquet, arrow, ``save_to_disk`` folders and Hub ids through :mod:`sipo.data.readers`.
With ``data.path`` mapping objectives to datasets, :func:`load_pairs` calls the source once per objective and
leaves the other objectives' labels to the ``label`` stage (``Pair.unlabelled``). Formats: docs/data.md.

Add one with :func:`register_source` (build its pairs with :func:`make_pair` or
:func:`pairs_from_scored_responses`, so that ids follow the same scheme). :func:`load_pairs` calls the configured
source, drops duplicate pairs, checks the labels and logs the counts; :func:`make_splits` (in
:mod:`sipo.data.splits`) turns the pairs into the train / train_conflict / validation / test splits.

Example::

    pairs = load_pairs(cfg)
    splits = make_splits(pairs, cfg.objectives, conflict_fraction=cfg.data.conflict_fraction,
                         test_fraction=cfg.data.test_fraction, validation_fraction=cfg.data.validation_fraction,
                         seed=cfg.seed)
    write_splits(splits, run_dir.stage_dir("prepare"))
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipo.config import PipelineConfig, data_input_paths, data_specs
from sipo.data import bad_rows, helpsteer, jsonl, pku_saferlhf
from sipo.data.pairs import is_conflict, make_pair, pair_id_for, pairs_from_scored_responses, prompt_id_for
from sipo.data.readers import check_path
from sipo.data.splits import (
    Splits,
    load_splits,
    make_splits,
    mixture_sizes,
    pair_counts,
    read_test_prompts,
    read_train,
    read_train_conflict,
    read_validation,
    split_sizes,
    train_file,
    write_splits,
)
from sipo.errors import ConfigError, DataError
from sipo.prompting import template_files
from sipo.records import Pair
from sipo.registry import Registry

logger = logging.getLogger(__name__)

SourceFn = Callable[[PipelineConfig], list[Pair]]
"""A data source: the config in, the preference pairs (labelled for every objective) out."""



def data_files(cfg: PipelineConfig) -> dict[str, Path]:
    """The local files and folders of ``data.path`` (each entry of a per-objective mapping) and ``data.test_path``,
    by label; a Hub id is named by the config values."""
    return {f"data[{i}]": Path(location).expanduser() for i, location in enumerate(data_input_paths(cfg))
            if Path(location).expanduser().exists()}


@dataclass(frozen=True)
class SourceDef:
    """A data source (``data.source``): how it loads its pairs and what outside the run it reads."""

    name: str
    load: SourceFn
    inputs: Callable[[PipelineConfig], dict[str, Path]] = data_files
    """``config -> {label: path}`` of the local files it reads, which fingerprint the ``prepare`` stage."""
    check: Callable[[PipelineConfig], None] | None = None
    """Checks the objectives, column names and paths before the run writes anything (ConfigError, DataError)."""
    needs_path: bool = True
    """It reads ``data.path``, which the config must then set; False: it builds its own data (the synthetic
    benchmark)."""
    check_config: Callable[[PipelineConfig], None] | None = None
    """Its own rules of the config, checked with the config's (:func:`check_source_config`, ``--dry-run``
    included) before anything runs; raises ConfigError naming the key."""
    config_keys: tuple[str, ...] = ()
    """Config keys outside ``data`` that its pairs depend on (they fingerprint ``prepare``)."""
    sft_examples: Callable[[PipelineConfig], list[dict]] | None = None
    """The source's own SFT demonstrations (``{prompt, completion}`` rows); None: every distinct training
    response."""
    test_prompts: Callable[[PipelineConfig], list] | None = None
    """The source's own held-out test prompts (``PromptRecord``), used when ``data.test_path`` is not set; None:
    test prompts are split off the pairs."""
    test_sets: Callable[[PipelineConfig], dict[str, list[str]]] | None = None
    """Named test sets (name -> prompt ids) that the report shows separately; None: one test set."""
    review_skill: Callable[[PipelineConfig, list[tuple[str, str, str]]], dict[str, Any]] | None = None
    """``(config, [(prompt, response, review), ...]) ->`` how well the reviews match the ideal review, measured
    against the source's own ground truth (:func:`sipo.synthetic.sft_data.review_skill`); None: the source has
    no ground truth, and the report states no validity conditions (:mod:`sipo.report.validity`)."""
    oracle: Callable[[PipelineConfig], Any] | None = None
    """``config ->`` the source's exact judge, which knows every response's true scores: ``.score(prompts,
    responses) -> {objective: [score, ...]}`` (:class:`sipo.synthetic.oracle.OracleJudge`). The
    ``sipo_oracle_filter`` upper bound selects with it; None: the source has no oracle."""
    review_probe: Callable[[PipelineConfig, int], dict[str, list]] | None = None
    """``(config, limit) -> {set name: [PromptRecord, ...]}``: training prompts, at most ``limit`` per set, whose
    reviews the ``review_probe`` stage measures with ``review_skill`` (the synthetic benchmark: its loop's entities
    and its held-out ones); None or empty: no probe."""
    validation_prompts: Callable[[PipelineConfig], list[str]] | None = None
    """``config ->`` the prompt ids of the source's own validation prompts, which take the place of the seeded
    ``data.validation_fraction`` share of the prompts; None or empty: that share."""


SOURCES: Registry[SourceDef] = Registry("data source")


def register_source(name: str, fn: SourceFn, *, replace: bool = False) -> None:
    """Make ``fn`` available as ``data.source: name``; re-registering a name needs ``replace=True``."""
    if name in SOURCES and SOURCES[name].load is fn:
        return
    if name in SOURCES and not replace:
        raise ValueError(f"data source '{name}' is already registered")
    SOURCES.register(SourceDef(name, fn), replace=replace)


def _data_paths_check(check_objectives: Callable[[PipelineConfig], None]) -> Callable[[PipelineConfig], None]:
    """A file source's input check: its objectives (or columns), then every ``data.path`` exists."""

    def check(cfg: PipelineConfig) -> None:
        check_objectives(cfg)
        specs = data_specs(cfg)
        for spec in specs.values() if specs else [{"path": cfg.data.path}]:
            check_path(spec["path"])

    return check


# The synthetic benchmark is imported on first use: it builds its pairs with this package's helpers.
def _synthetic_pairs(cfg: PipelineConfig) -> list[Pair]:
    from sipo.synthetic.writer import load_pairs as synthetic_load_pairs

    return synthetic_load_pairs(cfg)


def _synthetic_sft(cfg: PipelineConfig) -> list[dict]:
    from sipo.synthetic.sft_data import sft_examples

    return sft_examples(cfg, cfg.objective_descriptions)


def _synthetic_test_prompts(cfg: PipelineConfig) -> list:
    # The benchmark holds out (entity, phrasing) combinations of its own; no training pair uses them.
    from sipo.synthetic.writer import test_prompts

    return test_prompts(cfg)


def _synthetic_test_sets(cfg: PipelineConfig) -> dict[str, list[str]]:
    from sipo.synthetic.world import test_sets

    return test_sets(cfg)


def _synthetic_probe_prompts(cfg: PipelineConfig, limit: int) -> dict[str, list]:
    from sipo.synthetic.world import probe_prompts

    return probe_prompts(cfg, limit)


def _synthetic_validation_prompts(cfg: PipelineConfig) -> list[str]:
    from sipo.synthetic.world import validation_prompt_ids

    return validation_prompt_ids(cfg)


def _synthetic_review_skill(cfg: PipelineConfig, items: list[tuple[str, str, str]]) -> dict[str, Any]:
    from sipo.synthetic.sft_data import review_skill
    from sipo.synthetic.world import build_world

    return review_skill(build_world(cfg), items, list(cfg.objectives))


def _synthetic_oracle(cfg: PipelineConfig) -> Any:
    from sipo.synthetic.oracle import OracleJudge

    return OracleJudge(cfg)


def _synthetic_check_config(cfg: PipelineConfig) -> None:
    """The benchmark builds its own data from ``data.synthetic``, so one dataset per objective has no place; its
    random model knows nothing of the world until the sft stage teaches it the facts."""
    if isinstance(cfg.data.path, Mapping):
        raise ConfigError("config key 'data.path': the synthetic benchmark takes no data.path")
    if cfg.model.name_or_path == "random" and not cfg.sft.enabled:
        raise ConfigError("config key 'sft.enabled': a random model on the synthetic benchmark must be trained by "
                          "the sft stage")


for _source in (
    SourceDef("helpsteer", helpsteer.load,
              check=_data_paths_check(lambda cfg: helpsteer.check_objectives(list(cfg.objectives)))),
    SourceDef("pku_saferlhf", pku_saferlhf.load,
              check=_data_paths_check(lambda cfg: pku_saferlhf.check_objectives(list(cfg.objectives)))),
    SourceDef("jsonl", jsonl.load, check=_data_paths_check(
        lambda cfg: jsonl.column_names(list(cfg.objectives), dict(cfg.data.response_columns)))),
    # The benchmark's SFT demonstrations (prepare/sft.jsonl) render the review and rewrite prompts.
    SourceDef("synthetic", _synthetic_pairs, inputs=template_files, needs_path=False,
              check_config=_synthetic_check_config,
              config_keys=("objective_descriptions", "review.template", "rewrite.template"),
              sft_examples=_synthetic_sft, test_prompts=_synthetic_test_prompts, test_sets=_synthetic_test_sets,
              review_skill=_synthetic_review_skill, oracle=_synthetic_oracle,
              review_probe=_synthetic_probe_prompts, validation_prompts=_synthetic_validation_prompts),
):
    SOURCES.register(_source)


def configured_source(cfg: PipelineConfig) -> SourceDef:
    """The definition of ``data.source``; a name that is not registered is a ConfigError naming the key."""
    name = cfg.data.source
    if name not in SOURCES:
        raise ConfigError(f"config key 'data.source': unknown source '{name}' (choose from {', '.join(SOURCES)})")
    return SOURCES[name]


def check_source_config(cfg: PipelineConfig) -> None:
    """The config against its source, when the config is validated (:func:`sipo.configure.validate`), after the
    config tree's own rules: the source is registered, ``data.path`` is set when the source reads one, then the
    source's own :attr:`SourceDef.check_config`. Raises ConfigError naming the key."""
    source = configured_source(cfg)
    if source.needs_path and not cfg.data.path:
        raise ConfigError(f"config key 'data.path': is required for data.source={source.name}")
    if source.check_config is not None:
        source.check_config(cfg)


def check_source(cfg: PipelineConfig) -> None:
    """The configured source's checks and ``data.test_path``; raises ConfigError or DataError."""
    source = SOURCES.choose(cfg.data.source, "data.source")
    if source.check is not None:
        source.check(cfg)
    if cfg.data.test_path:
        check_path(cfg.data.test_path, "data.test_path")


def load_pairs(cfg: PipelineConfig) -> list[Pair]:
    """The configured source's pairs, without duplicate ``pair_id``s (the first is kept), in source order.

    Raises:
        ConfigError: unknown ``data.source`` or objectives the source does not have.
        DataError: the data is missing or malformed, or gives no pair at all.
    """
    name = configured_source(cfg).name
    with bad_rows.collecting(cfg.data.on_bad_row) as log:
        pairs = _load_pairs(cfg, name)
    if not pairs:
        where = f"data.path={cfg.data.path}" if cfg.data.path else f"data.source={name}"
        skipped = f"; {log.skipped} unusable row(s) were skipped (see the warnings above)" if log.skipped else ""
        raise DataError(
            f"no preference pairs could be built ({where}): each pair needs two distinct responses to one "
            f"prompt{skipped}")
    counts = pair_counts(pairs, list(cfg.objectives))
    logger.info("%s: %d pairs over %d prompts, %d conflicting, ties per objective %s",
                name, counts["pairs"], counts["prompts"], counts["conflicting_pairs"], counts["ties"])
    return pairs


def _load_pairs(cfg: PipelineConfig, name: str) -> list[Pair]:
    objectives = list(cfg.objectives)
    specs = data_specs(cfg)
    if specs is not None:
        pairs = _pairs_per_objective(cfg, specs)
    else:
        pairs = []
        seen: set[str] = set()
        duplicates = 0
        for pair in SOURCES[name].load(cfg):
            missing = [o for o in objectives if o not in pair.preferred]
            if missing:
                raise ValueError(f"source '{name}' returned pair {pair.pair_id} without a label for '{missing[0]}'")
            if pair.pair_id in seen:
                duplicates += 1
                continue
            seen.add(pair.pair_id)
            pairs.append(pair)
        if duplicates:
            logger.warning("dropped %d duplicate pairs (same prompt and responses)", duplicates)
    return pairs


def _pairs_per_objective(cfg: PipelineConfig, specs: dict[str, dict]) -> list[Pair]:
    """One dataset per objective: each labels its own objective; the others are left unlabelled (None in
    ``preferred``, listed in ``unlabelled``) for the ``label`` stage. A pair found in two objectives' datasets
    (same prompt and responses, in the same order) gets both labels."""
    objectives = list(cfg.objectives)
    merged: dict[str, Pair] = {}
    duplicates = 0
    for objective in objectives:
        spec = specs[objective]
        sub = dataclasses.replace(cfg, objectives=[objective], data=dataclasses.replace(
            cfg.data, path=spec["path"], split=spec["split"], revision=spec["revision"], data_dir=spec["data_dir"]))
        seen: set[str] = set()
        count = 0
        for pair in SOURCES[cfg.data.source].load(sub):
            if pair.pair_id in seen:
                duplicates += 1
                continue
            seen.add(pair.pair_id)
            count += 1
            label = pair.preferred[objective]
            old = merged.get(pair.pair_id)
            if old is None:
                merged[pair.pair_id] = dataclasses.replace(
                    pair, preferred={o: label if o == objective else None for o in objectives},
                    unlabelled=[o for o in objectives if o != objective], conflict=False)
                continue
            preferred = {**old.preferred, objective: label}
            merged[pair.pair_id] = dataclasses.replace(
                old, preferred=preferred, unlabelled=[o for o in old.unlabelled if o != objective],
                scores_a={**old.scores_a, **pair.scores_a}, scores_b={**old.scores_b, **pair.scores_b},
                conflict=is_conflict(preferred))
        logger.info("data.path.%s (%s): %d pairs labelled for %s", objective, spec["path"], count, objective)
    if duplicates:
        logger.warning("dropped %d duplicate pairs (same prompt and responses)", duplicates)
    return list(merged.values())


__all__ = [
    "SOURCES",
    "SourceFn",
    "SourceDef",
    "Splits",
    "check_source",
    "check_source_config",
    "configured_source",
    "is_conflict",
    "load_pairs",
    "load_splits",
    "make_pair",
    "make_splits",
    "mixture_sizes",
    "pair_counts",
    "pair_id_for",
    "pairs_from_scored_responses",
    "prompt_id_for",
    "read_test_prompts",
    "read_train",
    "read_train_conflict",
    "read_validation",
    "register_source",
    "split_sizes",
    "train_file",
    "write_splits",
]
