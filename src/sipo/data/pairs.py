"""Pairs and their ids, built the same way by every data source, and the checked column readers the sources use.

- The id scheme: :func:`prompt_id_for`, :func:`pair_id_for` (hashes of the text, never row positions).
- The pair builders: :func:`make_pair` (ids and conflict flag derived from the texts and labels),
  :func:`pairs_from_scored_responses` (every two distinct responses of a prompt, labelled by their scores),
  :func:`label_scores` (the scores of a labelled pair).
- The checked column readers :func:`get_text`, :func:`get_score`, :func:`get_label`: every mistake in a row
  raises :class:`~sipo.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sipo.data.bad_rows import BadRow
from sipo.errors import DataError
from sipo.records import Pair

logger = logging.getLogger(__name__)

ID_HEX_DIGITS = 16
"""Length of prompt and pair ids (hex digits of a sha256)."""

LABELS: dict[str, str | None] = {"a": "a", "b": "b", "tie": None}
"""Accepted pairwise labels (JSON ``null`` is a tie too)."""

ScoredResponse = tuple[str, str, Mapping[str, float]]
"""(prompt, response, objective -> score)."""



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
    """A non-empty string column (returned as is; only the emptiness check strips whitespace). An empty or null
    text makes the row unusable (:class:`~sipo.data.bad_rows.BadRow`, skipped or refused by ``data.on_bad_row``);
    any other type is a malformed row (DataError)."""
    value = get_column(row, column, file, line, hint=hint)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow(f"column '{column}' is empty", path=str(file), line=line)
    if not isinstance(value, str):
        raise DataError(f"column '{column}' must be a string, got {json_type(value)}", path=str(file), line=line)
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
