"""Stage ``prepare``: per-objective preference pairs, conflict flags and the splits, from ``data.source``.

Writes ``prepare/train_<objective>.jsonl`` (each objective's DPO mixture with ``data.conflict_fraction``
conflicting pairs), ``prepare/train_conflict.jsonl`` (one conflicting pair per training prompt: what SIPO
improves on), ``prepare/validation.jsonl``, ``prepare/test_prompts.jsonl`` and ``prepare/sft.jsonl``
(``{prompt, completion}`` rows for the optional ``sft`` stage). Counts go to the manifest. With
``data.test_path`` the test prompts are that file's (capped by ``data.max_test_prompts``); rows of any file that
give no pair or no prompt are skipped and counted (``bad_rows``) or refused (``data.on_bad_row``); with one dataset per objective the pairs lack some
labels (``unlabelled``) until the ``label`` stage.

    sipo stage prepare configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import json
import logging

from sipo.artifacts import atomic_write_json
from sipo.data import SOURCES, bad_rows, check_source, load_pairs
from sipo.data.formats import load_test_prompts
from sipo.data.splits import make_splits, write_splits
from sipo.records import write_jsonl
from sipo.report.health import mixture_warnings
from sipo.stage import StageContext, StageDef

logger = logging.getLogger(__name__)


def sft_rows(cfg, splits) -> list[dict]:
    """SFT data: the source's own (the synthetic benchmark's); otherwise every distinct training response."""
    own = SOURCES[cfg.data.source].sft_examples
    if own is not None:
        return own(cfg)
    seen, rows = set(), []
    for pairs in splits.train.values():
        for pair in pairs:
            for response in (pair.response_a, pair.response_b):
                if (pair.prompt_id, response) not in seen:
                    seen.add((pair.prompt_id, response))
                    rows.append({"prompt": pair.prompt, "completion": response})
    return rows


TEST_SETS_FILE = "test_sets.json"
"""``prepare/test_sets.json``: test set name -> its prompt ids (benchmark v2's in-distribution and transfer)."""


def write_test_sets(cfg, splits, out_dir) -> None:
    """A source with named test sets (benchmark v2): name each test prompt's test set, for the report (nothing is
    written for a source without them, or benchmark v1)."""
    named = SOURCES[cfg.data.source].test_sets
    if named is None:
        return
    kept = {p.prompt_id for p in splits.test_prompts}
    sets = {name: [pid for pid in ids if pid in kept] for name, ids in named(cfg).items()}
    if sets:
        atomic_write_json(out_dir / TEST_SETS_FILE, sets)
        for name, ids in sets.items():
            splits.counts[f"test_prompts_{name}"] = len(ids)


def read_test_sets(run_dir) -> dict[str, list[str]]:
    """The test sets a ``prepare`` stage wrote (empty when it wrote none)."""
    path = run_dir.path("prepare", TEST_SETS_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}


def compute(cfg) -> tuple:
    """The stage's work without writing: (pairs, splits, sft rows). The pipeline calls it before a run writes
    anything, so that refused data leaves the run directory as it was (:func:`sipo.preflight.precheck_stages`)."""
    with bad_rows.collecting(cfg.data.on_bad_row) as log:
        pairs = load_pairs(cfg)
        test_prompts = None
        if cfg.data.test_path:
            test_prompts = load_test_prompts(cfg.data.test_path, split=cfg.data.split, revision=cfg.data.revision)
    own_validation = SOURCES[cfg.data.source].validation_prompts
    splits = make_splits(
        pairs, list(cfg.objectives), conflict_fraction=cfg.data.conflict_fraction,
        test_fraction=cfg.data.test_fraction, validation_fraction=cfg.data.validation_fraction, seed=cfg.seed,
        max_train_pairs=cfg.data.max_train_pairs, max_conflict_prompts=cfg.data.max_conflict_prompts,
        max_test_prompts=cfg.data.max_test_prompts, conflict_max_ties=cfg.data.conflict_max_ties,
        test_prompts=test_prompts, validation_prompt_ids=own_validation(cfg) if own_validation else None)
    own_test_prompts = SOURCES[cfg.data.source].test_prompts
    if own_test_prompts is not None and test_prompts is None:
        splits.test_prompts = own_test_prompts(cfg)[: cfg.data.max_test_prompts or None]
        splits.counts["test_prompts"] = len(splits.test_prompts)
    if log.skipped:
        splits.counts["bad_rows"] = log.counts()
    return pairs, splits, sft_rows(cfg, splits)


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    computed = ctx.cache.pop("prepare", None)
    pairs, splits, rows = computed if computed is not None else compute(cfg)
    write_splits(splits, ctx.out_dir)
    write_test_sets(cfg, splits, ctx.out_dir)
    counts = dict(splits.counts)
    counts["sft_examples"] = write_jsonl(ctx.out_dir / "sft.jsonl", rows)
    for warning in mixture_warnings(counts, cfg.data.conflict_fraction, cfg.data.max_train_pairs):
        logger.warning("%s", warning)
    logger.info("prepare: %d pairs, %d conflicting prompts for self-improvement, %d test prompts",
                len(pairs), len(splits.train_conflict), len(splits.test_prompts))
    return counts


def _source_keys(cfg) -> tuple[str, ...]:
    return SOURCES[cfg.data.source].config_keys


def _source_inputs(cfg) -> dict:
    return SOURCES[cfg.data.source].inputs(cfg)


SPEC = StageDef(
    name="prepare", run=run,
    help="build per-objective pairs, flag conflicts, split train/train_conflict/validation/test by prompt",
    reads="`data.source`", writes="`prepare/*.jsonl`", config_keys=("data", "objectives", "seed"),
    extra_keys=_source_keys, upstream=lambda cfg, before: (), inputs=_source_inputs, check_inputs=check_source,
    precheck=compute
)
