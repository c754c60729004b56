"""The ``jsonl`` source (a user's own preference data, in any format) and the building blocks every source shares.

``data.path`` is a JSONL, parquet or arrow file, a folder of them (read in sorted name order), a ``save_to_disk``
folder or a Hub dataset id (:mod:`sipo.data.readers`). The format is detected from the first row and every later
row must follow it. Besides the two below, TRL's preference rows and HelpSteer2's preference pairs
(:mod:`sipo.data.formats`) and PKU-SafeRLHF rows (:mod:`sipo.data.pku_saferlhf`) are recognised; every format, with
an example row, is in docs/data.md.

1. **Per-response scores** (the first row has a ``response`` column): one row per response, several rows per
   prompt, one numeric column per objective::

       {"prompt": "Name a colour.", "response": "Blue.", "correctness": 4, "verbosity": 1}
       {"prompt": "Name a colour.", "response": "Blue, like the sky at noon.", "correctness": 3, "verbosity": 3}

   Rows are grouped by prompt text. Every two distinct responses of a prompt form a pair (all combinations;
   ``response_a`` is the one that appears first). Under each objective the higher score wins; equal scores are a
   tie. Identical responses of one prompt are merged into one, with their scores averaged (repeated ratings of
   the same text). Prompts with a single distinct response give no pair and are dropped (logged).

2. **Pairwise choices** (the first row has ``response_a`` and ``response_b`` columns): one row per pair, with the
   winner per objective either in a ``preferred`` object or in one column per objective::

       {"prompt": "...", "response_a": "...", "response_b": "...", "preferred": {"correctness": "a", "verbosity": "b"}}
       {"prompt": "...", "response_a": "...", "response_b": "...", "correctness": "a", "verbosity": "tie"}

   A label is ``"a"``, ``"b"``, ``"tie"`` or ``null`` (also a tie). The pair's scores are 1.0 for the preferred
   response and 0.0 for the other (0.5 each on a tie). Rows whose two responses are identical are skipped
   (logged).

Whether labels sit in ``preferred`` or in per-objective columns is also decided by the first row.

Column names can be changed with ``data.response_columns``, which maps our names (``prompt``, ``response``,
``response_a``, ``response_b``, ``preferred`` or an objective) to the file's, e.g.
``data.response_columns={prompt: question, correctness: accuracy}``. Objectives are always named as in
``objectives``; only the file's column is renamed.

Every mistake in the file (malformed JSON, a missing or misspelled column, a score that is not a number or a
label that is not a/b/tie, an empty prompt or response, a missing path) raises :class:`~sipo.errors.DataError`
naming the file and line.

Formats are a registry (:data:`FORMATS`) of ``(detect, build)`` pairs, tried in order on the first row: a new
format is one :meth:`~sipo.registry.Registry.register` call. The id scheme and the pair builders that every source
shares are in :mod:`sipo.data.pairs`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipo.config import PipelineConfig
from sipo.data import bad_rows, formats
from sipo.data.bad_rows import BadRow
from sipo.data.pairs import (
    ScoredResponse,
    get_column,
    get_label,
    get_score,
    get_text,
    json_type,
    label_scores,
    make_pair,
    pairs_from_scored_responses,
)
from sipo.data.pku_saferlhf import pku_pairs
from sipo.data.readers import read_rows, source_args
from sipo.errors import ConfigError, DataError
from sipo.records import Pair
from sipo.registry import Registry

logger = logging.getLogger(__name__)

PAIRWISE_COLUMNS = ("prompt", "response_a", "response_b", "preferred")
SCORED_COLUMNS = ("prompt", "response")


# ---------------------------------------------------------------------------------------------------------------
# The jsonl source


def column_names(objectives: Sequence[str], renames: Mapping[str, str]) -> dict[str, str]:
    """Our column names -> the file's, after ``data.response_columns``; unknown names raise ConfigError."""
    ours = list(SCORED_COLUMNS) + [c for c in PAIRWISE_COLUMNS if c not in SCORED_COLUMNS] + list(objectives)
    for name, theirs in renames.items():
        if name not in ours:
            raise ConfigError(
                f"config key 'data.response_columns': unknown name '{name}' (rename one of {', '.join(ours)})"
            )
        if not isinstance(theirs, str) or not theirs:
            raise ConfigError(f"config key 'data.response_columns.{name}': must be a non-empty column name")
    return {name: renames.get(name, name) for name in ours}


Rows = Iterable[tuple[Any, int, dict[str, Any]]]


@dataclass(frozen=True)
class Format:
    """One format of a user's data: how to recognise its first row, and how to turn its rows into pairs."""

    name: str
    detect: Callable[[Mapping[str, Any], Mapping[str, str]], bool]
    """``(first row, column names after data.response_columns) -> whether the rows are in this format``."""
    build: Callable[[Rows, Sequence[str], Mapping[str, str], Any, Mapping[str, Any]], list[Pair]]
    """``(rows, objectives, column names, data.path, first row) -> pairs``."""


FORMATS: Registry[Format] = Registry("data format")
"""The formats, in the order they are tried on the first row."""

for _format in (
    Format("trl", lambda row, columns: formats.is_trl(row),
           lambda rows, objectives, columns, path, first: formats.trl_pairs(
               rows, formats.single_label_objective(objectives, "TRL preference"))),
    Format("pairwise", lambda row, columns: columns["response_a"] in row or columns["response_b"] in row,
           lambda rows, objectives, columns, path, first: _pairwise_rows(
               rows, objectives, columns, nested=columns["preferred"] in first)),
    Format("helpsteer2_preference", lambda row, columns: formats.is_helpsteer2_preference(row),
           lambda rows, objectives, columns, path, first: formats.helpsteer2_preference_pairs(
               rows, formats.single_label_objective(objectives, "HelpSteer2 preference"))),
    Format("pku_saferlhf", lambda row, columns: "response_0" in row and "response_1" in row,
           lambda rows, objectives, columns, path, first: pku_pairs(rows, objectives, path)),
    Format("scored", lambda row, columns: columns["response"] in row,
           lambda rows, objectives, columns, path, first: pairs_from_scored_responses(
               _scored_rows(rows, objectives, columns), objectives)),
):
    FORMATS.register(_format)


def detect_format(row: Mapping[str, Any], columns: Mapping[str, str], file: Any, line: int) -> str:
    """The name of the first format of :data:`FORMATS` that recognises ``row``: ``trl`` (chosen / rejected),
    ``pairwise`` (response_a / response_b), ``helpsteer2_preference`` (response_1 / response_2 /
    preference_strength), ``pku_saferlhf`` (response_0 / response_1) or ``scored`` (response)."""
    for fmt in FORMATS.values():
        if fmt.detect(row, columns):
            return fmt.name
    found = ", ".join(sorted(row)) or "none"
    raise DataError(
        f"cannot tell the format: expected a '{columns['response']}' column (per-response scores), "
        f"'{columns['response_a']}' and '{columns['response_b']}' columns (pairwise), 'chosen' and 'rejected' "
        "(TRL preference), 'response_0' and 'response_1' (PKU-SafeRLHF) or 'response_1', 'response_2' and "
        f"'preference_strength' (HelpSteer2 preference); found columns: {found} (rename columns with "
        "data.response_columns; formats: docs/data.md)",
        path=str(file),
        line=line,
    )


def load_jsonl(
    path: str | Path | None, objectives: Sequence[str], response_columns: Mapping[str, str] | None = None,
    *, split: str = "train", revision: str | None = None, data_dir: str | None = None,
) -> list[Pair]:
    """Read a user's data in any format of docs/data.md (detected from the first row) into pairs."""
    columns = column_names(objectives, response_columns or {})
    rows = read_rows(path, split=split, revision=revision, data_dir=data_dir)
    first = next(rows, None)
    if first is None:
        raise DataError("no rows found (data.path)", path=str(path))
    file, line, row = first
    fmt = detect_format(row, columns, file, line)
    logger.info("%s: %s format", path, fmt)
    return FORMATS[fmt].build(itertools.chain([first], rows), objectives, columns, path, row)


def _scored_rows(
    rows: Iterable[tuple[Path, int, dict[str, Any]]], objectives: Sequence[str], columns: Mapping[str, str]
) -> Iterator[ScoredResponse]:
    hint = "objectives must be score columns (rename with data.response_columns)"
    for file, line, row in rows:
        try:
            prompt = get_text(row, columns["prompt"], file, line)
            response = get_text(row, columns["response"], file, line)
        except BadRow as exc:
            bad_rows.skip(exc)
            continue
        scores = {o: get_score(row, columns[o], file, line, hint=hint) for o in objectives}
        yield prompt, response, scores


def _pairwise_rows(
    rows: Iterable[tuple[Path, int, dict[str, Any]]],
    objectives: Sequence[str],
    columns: Mapping[str, str],
    *,
    nested: bool,
) -> list[Pair]:
    pairs = []
    skipped = 0
    for file, line, row in rows:
        try:
            prompt = get_text(row, columns["prompt"], file, line)
            response_a = get_text(row, columns["response_a"], file, line)
            response_b = get_text(row, columns["response_b"], file, line)
        except BadRow as exc:
            bad_rows.skip(exc)
            skipped += 1
            continue
        preferred: dict[str, str | None] = {}
        if nested:
            labels = get_column(row, columns["preferred"], file, line)
            if not isinstance(labels, dict):
                raise DataError(
                    f"column '{columns['preferred']}' must be an object of objective -> \"a\"/\"b\"/\"tie\", "
                    f"got {json_type(labels)}",
                    path=str(file),
                    line=line,
                )
            for o in objectives:
                if o not in labels:
                    found = ", ".join(sorted(labels)) or "none"
                    raise DataError(
                        f"column '{columns['preferred']}' has no label for objective '{o}' (found: {found})",
                        path=str(file),
                        line=line,
                    )
                preferred[o] = get_label(labels[o], f"'{columns['preferred']}'.{o}", file, line)
        else:
            hint = f"give each objective's choice in a column or a '{columns['preferred']}' object"
            for o in objectives:
                value = get_column(row, columns[o], file, line, hint=hint)
                preferred[o] = get_label(value, f"column '{columns[o]}'", file, line)
        if response_a == response_b:
            bad_rows.skip(BadRow("two identical responses", path=str(file), line=line))
            skipped += 1
            continue
        scores_a, scores_b = label_scores(preferred)
        pairs.append(make_pair(prompt, response_a, response_b, preferred, scores_a, scores_b))
    logger.info("%d pairwise rows -> %d pairs (%d unusable rows skipped)", len(pairs) + skipped, len(pairs), skipped)
    return pairs


def load(cfg: PipelineConfig) -> list[Pair]:
    """The ``jsonl`` source: ``data.path`` read with ``data.response_columns`` for ``objectives``."""
    return load_jsonl(cfg.data.path, list(cfg.objectives), dict(cfg.data.response_columns), **source_args(cfg))
