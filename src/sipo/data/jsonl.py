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

Shared building blocks (used by the ``helpsteer``, ``pku_saferlhf`` and ``synthetic`` sources): the id scheme
(:func:`prompt_id_for`, :func:`pair_id_for`: hashes of the text, never row positions), :func:`make_pair`,
:func:`pairs_from_scored_responses`, the checked column readers :func:`get_text` / :func:`get_score`, and
:func:`resolve_data_files` / :func:`iter_rows`.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sipo.config import PipelineConfig
from sipo.errors import ConfigError, DataError
from sipo.records import Pair, iter_json_lines

logger = logging.getLogger(__name__)

ID_HEX_DIGITS = 16
"""Length of prompt and pair ids (hex digits of a sha256)."""

PAIRWISE_COLUMNS = ("prompt", "response_a", "response_b", "preferred")
SCORED_COLUMNS = ("prompt", "response")
LABELS: dict[str, str | None] = {"a": "a", "b": "b", "tie": None}
"""Accepted pairwise labels (JSON ``null`` is a tie too)."""

ScoredResponse = tuple[str, str, Mapping[str, float]]
"""(prompt, response, objective -> score)."""


# ---------------------------------------------------------------------------------------------------------------
# Ids and pairs


def text_hash(text: str) -> str:
    """First :data:`ID_HEX_DIGITS` hex digits of the sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS]


def prompt_id_for(prompt: str) -> str:
    """The stable id of a prompt: a hash of its exact text (never its row position)."""
    return text_hash(prompt)


def pair_id_for(prompt: str, response_a: str, response_b: str) -> str:
    """The stable id of an ordered pair: a hash of the prompt id and of both responses' hashes."""
    return text_hash(f"{prompt_id_for(prompt)}:{text_hash(response_a)}:{text_hash(response_b)}")


def is_conflict(preferred: Mapping[str, str | None]) -> bool:
    """True when two objectives prefer different responses (a tie prefers neither)."""
    return len({winner for winner in preferred.values() if winner is not None}) > 1


def preferred_by_score(
    scores_a: Mapping[str, float], scores_b: Mapping[str, float], objectives: Sequence[str]
) -> dict[str, str | None]:
    """Per objective: ``"a"`` if a scores higher, ``"b"`` if b does, ``None`` on equal scores."""
    preferred: dict[str, str | None] = {}
    for objective in objectives:
        a, b = scores_a[objective], scores_b[objective]
        preferred[objective] = "a" if a > b else "b" if b > a else None
    return preferred


def make_pair(
    prompt: str,
    response_a: str,
    response_b: str,
    preferred: Mapping[str, str | None],
    scores_a: Mapping[str, float] | None = None,
    scores_b: Mapping[str, float] | None = None,
) -> Pair:
    """A :class:`Pair` with its ids and conflict flag derived from the texts and labels."""
    for objective, winner in preferred.items():
        if winner not in ("a", "b", None):
            raise ValueError(f"preferred[{objective!r}] must be 'a', 'b' or None, got {winner!r}")
    return Pair(
        pair_id=pair_id_for(prompt, response_a, response_b),
        prompt_id=prompt_id_for(prompt),
        prompt=prompt,
        response_a=response_a,
        response_b=response_b,
        preferred=dict(preferred),
        scores_a={k: float(v) for k, v in (scores_a or {}).items()},
        scores_b={k: float(v) for k, v in (scores_b or {}).items()},
        conflict=is_conflict(preferred),
    )


def label_scores(preferred: Mapping[str, str | None]) -> tuple[dict[str, float], dict[str, float]]:
    """Scores of a labelled pair: 1.0 for the preferred response, 0.0 for the other, 0.5 each on a tie."""
    scores_a = {o: 1.0 if w == "a" else 0.0 if w == "b" else 0.5 for o, w in preferred.items()}
    scores_b = {o: 1.0 - s for o, s in scores_a.items()}
    return scores_a, scores_b


def pairs_from_scored_responses(responses: Iterable[ScoredResponse], objectives: Sequence[str]) -> list[Pair]:
    """All pairs of distinct responses per prompt, labelled by comparing scores.

    Prompts keep their order of first appearance, and so do the responses of a prompt; the pairs of a prompt are
    ``itertools.combinations`` of its responses (a prompt with k distinct responses gives k(k-1)/2 pairs).
    Identical responses of one prompt are merged, their scores averaged.
    """
    grouped: dict[str, dict[str, list[Mapping[str, float]]]] = {}
    num_rows = 0
    for prompt, response, scores in responses:
        grouped.setdefault(prompt, {}).setdefault(response, []).append(scores)
        num_rows += 1
    pairs: list[Pair] = []
    single = merged = 0
    for prompt, by_response in grouped.items():
        averaged = {}
        for response, ratings in by_response.items():
            merged += len(ratings) - 1
            averaged[response] = {o: math.fsum(r[o] for r in ratings) / len(ratings) for o in objectives}
        if len(averaged) < 2:
            single += 1
            continue
        for (resp_a, sc_a), (resp_b, sc_b) in itertools.combinations(averaged.items(), 2):
            pairs.append(make_pair(prompt, resp_a, resp_b, preferred_by_score(sc_a, sc_b, objectives), sc_a, sc_b))
    logger.info(
        "%d rows, %d prompts -> %d pairs (dropped %d prompt(s) with a single distinct response, "
        "merged %d duplicate response(s))", num_rows, len(grouped), len(pairs), single, merged,
    )
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Files and checked column readers


def resolve_data_files(path: str | Path | None) -> list[Path]:
    """``data.path`` as a list of files: the file itself, or a folder's ``*.jsonl`` files in sorted order."""
    if path is None or str(path) == "":
        raise ConfigError("config key 'data.path': is required for this data source")
    root = Path(path)
    if root.is_file():
        return [root]
    if root.is_dir():
        files = sorted(p for p in root.glob("*.jsonl") if p.is_file())
        if not files:
            raise DataError("folder holds no *.jsonl files (data.path)", path=str(root))
        return files
    raise DataError("no such file or folder (data.path)", path=str(root))


def iter_rows(files: Iterable[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Yield (file, line number, row) for every non-blank line of every file."""
    for file in files:
        try:
            for line, row in iter_json_lines(file):
                yield file, line, row
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(file)) from None


def json_type(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, str):
        shown = value if len(value) <= 30 else value[:27] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, (int, float)):
        return f"the number {value:.6g}" if isinstance(value, float) else "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def missing_column(column: str, row: Mapping[str, Any], file: Path, line: int, *, hint: str = "") -> DataError:
    """A DataError naming the missing column, a close match if there is one, and the columns found."""
    found = ", ".join(sorted(row)) or "none"
    lowered = {str(k).lower(): str(k) for k in row}
    close = difflib.get_close_matches(column.lower(), list(lowered), n=1, cutoff=0.75)
    guess = f" (did you mean '{lowered[close[0]]}'?)" if close else ""
    extra = f"; {hint}" if hint else ""
    return DataError(f"missing column '{column}'{guess}; found columns: {found}{extra}", path=str(file), line=line)


def get_column(row: Mapping[str, Any], column: str, file: Path, line: int, *, hint: str = "") -> Any:
    if column not in row:
        raise missing_column(column, row, file, line, hint=hint)
    return row[column]


def get_text(row: Mapping[str, Any], column: str, file: Path, line: int, *, hint: str = "") -> str:
    """A non-empty string column (returned as is; only the emptiness check strips whitespace)."""
    value = get_column(row, column, file, line, hint=hint)
    if not isinstance(value, str):
        raise DataError(f"column '{column}' must be a string, got {json_type(value)}", path=str(file), line=line)
    if not value.strip():
        raise DataError(f"column '{column}' is empty", path=str(file), line=line)
    return value


def get_score(
    row: Mapping[str, Any],
    column: str,
    file: Path,
    line: int,
    *,
    low: float | None = None,
    high: float | None = None,
    hint: str = "",
) -> float:
    """A finite number (booleans and strings are not numbers), optionally within ``[low, high]``."""
    value = get_column(row, column, file, line, hint=hint)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"score column '{column}' must be a number, got {json_type(value)}", path=str(file), line=line)
    try:
        score = float(value)
    except OverflowError:
        score = math.inf
    if not math.isfinite(score):
        raise DataError(f"score column '{column}' must be a finite number", path=str(file), line=line)
    if (low is not None and score < low) or (high is not None and score > high):
        bounds = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise DataError(f"score column '{column}' = {score:g} is out of range {bounds}", path=str(file), line=line)
    return score


def get_label(value: Any, what: str, file: Path, line: int) -> str | None:
    """A pairwise label: ``"a"``, ``"b"``, ``"tie"`` or null (``"tie"`` and null both mean a tie)."""
    if value is None:
        return None
    if isinstance(value, str) and value in LABELS:
        return LABELS[value]
    raise DataError(f"{what} must be \"a\", \"b\", \"tie\" or null, got {json_type(value)}", path=str(file), line=line)


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


def detect_format(row: Mapping[str, Any], columns: Mapping[str, str], file: Any, line: int) -> str:
    """The format of a row, from its columns: ``trl`` (chosen / rejected), ``pairwise`` (response_a / response_b),
    ``helpsteer2_preference`` (response_1 / response_2 / preference_strength), ``pku_saferlhf``
    (response_0 / response_1) or ``scored`` (response)."""
    from sipo.data import formats

    if formats.is_trl(row):
        return "trl"
    if columns["response_a"] in row or columns["response_b"] in row:
        return "pairwise"
    if formats.is_helpsteer2_preference(row):
        return "helpsteer2_preference"
    if "response_0" in row and "response_1" in row:
        return "pku_saferlhf"
    if columns["response"] in row:
        return "scored"
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
    from sipo.data import formats
    from sipo.data.pku_saferlhf import pku_pairs
    from sipo.data.readers import read_rows

    columns = column_names(objectives, response_columns or {})
    rows = read_rows(path, split=split, revision=revision, data_dir=data_dir)
    first = next(rows, None)
    if first is None:
        raise DataError("no rows found (data.path)", path=str(path))
    file, line, row = first
    all_rows = itertools.chain([first], rows)
    fmt = detect_format(row, columns, file, line)
    logger.info("%s: %s format", path, fmt)
    if fmt == "trl":
        return formats.trl_pairs(all_rows, formats.single_label_objective(objectives, "TRL preference"))
    if fmt == "helpsteer2_preference":
        objective = formats.single_label_objective(objectives, "HelpSteer2 preference")
        return formats.helpsteer2_preference_pairs(all_rows, objective)
    if fmt == "pku_saferlhf":
        return pku_pairs(all_rows, objectives, path)
    if fmt == "scored":
        return pairs_from_scored_responses(_scored_rows(all_rows, objectives, columns), objectives)
    nested = columns["preferred"] in row
    return _pairwise_rows(all_rows, objectives, columns, nested=nested)


def _scored_rows(
    rows: Iterable[tuple[Path, int, dict[str, Any]]], objectives: Sequence[str], columns: Mapping[str, str]
) -> Iterator[ScoredResponse]:
    hint = "objectives must be score columns (rename with data.response_columns)"
    for file, line, row in rows:
        prompt = get_text(row, columns["prompt"], file, line)
        response = get_text(row, columns["response"], file, line)
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
    identical = 0
    for file, line, row in rows:
        prompt = get_text(row, columns["prompt"], file, line)
        response_a = get_text(row, columns["response_a"], file, line)
        response_b = get_text(row, columns["response_b"], file, line)
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
            identical += 1
            continue
        scores_a, scores_b = label_scores(preferred)
        pairs.append(make_pair(prompt, response_a, response_b, preferred, scores_a, scores_b))
    if identical:
        logger.warning("skipped %d pairwise rows whose two responses are identical", identical)
    logger.info("%d pairwise rows -> %d pairs", len(pairs) + identical, len(pairs))
    return pairs


def load(cfg: PipelineConfig) -> list[Pair]:
    """The ``jsonl`` source: ``data.path`` read with ``data.response_columns`` for ``objectives``."""
    from sipo.data.readers import source_args

    return load_jsonl(cfg.data.path, list(cfg.objectives), dict(cfg.data.response_columns), **source_args(cfg))
