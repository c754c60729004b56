"""Stage ``prepare``: per-objective preference pairs, conflict flags and the splits, from ``data.source``.

Writes ``prepare/train_<objective>.jsonl`` (each objective's DPO mixture with ``data.conflict_fraction``
conflicting pairs), ``prepare/train_conflict.jsonl`` (one conflicting pair per training prompt: what SIPO
improves on), ``prepare/validation.jsonl``, ``prepare/test_prompts.jsonl`` and ``prepare/sft.jsonl``
(``{prompt, completion}`` rows for the optional ``sft`` stage). Counts go to the manifest. With
``data.test_path`` the test prompts are exactly that file's; with one dataset per objective the pairs lack some
labels (``unlabelled``) until the ``label`` stage.

    sipo stage prepare configs/smoke.yaml run_dir=runs/smoke
"""

from __future__ import annotations

import logging

from sipo.data import SOURCES, check_source
from sipo.records import write_jsonl
from sipo.stage import StageContext, StageDef

logger = logging.getLogger(__name__)


def sft_rows(cfg, splits) -> list[dict]:
    """SFT data: the synthetic benchmark's own; otherwise every distinct training response."""
    if cfg.data.source == "synthetic":
        from sipo.synthetic.sft_data import sft_examples

        return sft_examples(cfg, cfg.objective_descriptions)
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
    """Benchmark v2: name each test prompt's test set, for the report (nothing is written for benchmark v1)."""
    from sipo.artifacts import atomic_write_json
    from sipo.synthetic.world import test_sets

    kept = {p.prompt_id for p in splits.test_prompts}
    sets = {name: [pid for pid in ids if pid in kept] for name, ids in test_sets(cfg).items()}
    if sets:
        atomic_write_json(out_dir / TEST_SETS_FILE, sets)
        for name, ids in sets.items():
            splits.counts[f"test_prompts_{name}"] = len(ids)


def read_test_sets(run_dir) -> dict[str, list[str]]:
    """The test sets a ``prepare`` stage wrote (empty when it wrote none)."""
    import json

    path = run_dir.path("prepare", TEST_SETS_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}


def compute(cfg) -> tuple:
    """The stage's work without writing: (pairs, splits, sft rows). The pipeline calls it before a run writes
    anything, so that refused data leaves the run directory as it was (:func:`sipo.preflight.precheck_stages`)."""
    from sipo.data import load_pairs
    from sipo.data.splits import make_splits

    pairs = load_pairs(cfg)
    test_prompts = None
    if cfg.data.test_path:
        from sipo.data.formats import load_test_prompts

        test_prompts = load_test_prompts(cfg.data.test_path, split=cfg.data.split, revision=cfg.data.revision)
    splits = make_splits(
        pairs, list(cfg.objectives), conflict_fraction=cfg.data.conflict_fraction,
        test_fraction=cfg.data.test_fraction, validation_fraction=cfg.data.validation_fraction, seed=cfg.seed,
        max_train_pairs=cfg.data.max_train_pairs, max_conflict_prompts=cfg.data.max_conflict_prompts,
        max_test_prompts=cfg.data.max_test_prompts, conflict_max_ties=cfg.data.conflict_max_ties,
        test_prompts=test_prompts)
    if cfg.data.source == "synthetic" and test_prompts is None:
        from sipo.synthetic.writer import test_prompts

        # The benchmark holds out (entity, phrasing) combinations of its own; no training pair uses them.
        splits.test_prompts = test_prompts(cfg)[: cfg.data.max_test_prompts or None]
        splits.counts["test_prompts"] = len(splits.test_prompts)
    return pairs, splits, sft_rows(cfg, splits)


def run(ctx: StageContext) -> dict:
    from sipo.data.splits import write_splits

    cfg = ctx.cfg
    computed = ctx.cache.pop("prepare", None)
    pairs, splits, rows = computed if computed is not None else compute(cfg)
    write_splits(splits, ctx.out_dir)
    if cfg.data.source == "synthetic":
        write_test_sets(cfg, splits, ctx.out_dir)
    counts = dict(splits.counts)
    counts["sft_examples"] = write_jsonl(ctx.out_dir / "sft.jsonl", rows)
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
    extra_keys=_source_keys, upstream=lambda cfg, before: (), inputs=_source_inputs, check_inputs=check_source
)
