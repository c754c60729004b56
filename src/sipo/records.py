"""Typed records passed between stages as JSONL, joined by ``prompt_id``.

Every row carries ``schema_version``; :func:`read_jsonl` turns rows back into the same dataclass and reports a
malformed row with its file and line. Prompts are stored raw (without any chat template); templates are applied
only when tokenizing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sipo.artifacts import atomic_path
from sipo.errors import DataError

SCHEMA_VERSION = 1

Scores = dict[str, float]
"""Objective name -> score."""
Weights = dict[str, float]
"""Objective (or adapter) name -> weight; sums to 1."""


@dataclass(frozen=True)
class Pair:
    """Two responses to one prompt, scored or labelled per objective.

    ``preferred[o]`` is ``"a"``, ``"b"`` or ``None`` (a tie under objective ``o``). The pair *conflicts* when two
    objectives prefer different responses.
    """

    pair_id: str
    prompt_id: str
    prompt: str
    response_a: str
    response_b: str
    preferred: dict[str, str | None]
    scores_a: Scores = field(default_factory=dict)
    scores_b: Scores = field(default_factory=dict)
    conflict: bool = False
    unlabelled: list[str] = field(default_factory=list)
    """Objectives the data gives no label for (one dataset per objective); ``preferred`` holds None for them until
    the ``label`` stage fills them."""
    filled: list[str] = field(default_factory=list)
    """Objectives whose label was filled by a judge (stage ``label``), not taken from the data."""

    def chosen_rejected(self, objective: str) -> tuple[str, str] | None:
        """(chosen, rejected) under ``objective``; None on a tie."""
        winner = self.preferred.get(objective)
        if winner == "a":
            return self.response_a, self.response_b
        if winner == "b":
            return self.response_b, self.response_a
        return None


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    prompt: str


@dataclass(frozen=True)
class Candidate:
    """A response decoded for a prompt with a weight vector (MOD sample or its rewrite)."""

    candidate_id: str
    prompt_id: str
    prompt: str
    response: str
    weights: Weights
    source: str = "mod"
    """``mod`` or ``rewrite``."""


@dataclass(frozen=True)
class Review:
    candidate_id: str
    prompt_id: str
    review: str
    """Parsed review text (suggestions), empty if the reviewer's output could not be parsed."""
    raw: str = ""


@dataclass(frozen=True)
class ScoredCandidate:
    candidate: Candidate
    scores: Scores
    """Implicit reward of each round-1 adapter (objective name -> r_o)."""


@dataclass(frozen=True)
class CombinedCandidate:
    """The outcome of the combine step for one MOD candidate."""

    candidate: Candidate
    """The response kept (the rewrite if it replaced the original, else the original)."""
    scores: Scores
    original_scores: Scores
    rewrite_scores: Scores | None
    replaced: bool


@dataclass(frozen=True)
class Selection:
    """The response picked by the filter for a prompt, with the original pair it beats."""

    prompt_id: str
    prompt: str
    response: str
    candidate_id: str
    pair_id: str
    response_a: str
    response_b: str
    judge_scores: dict[str, float]
    """Judge name -> reward of the selected response."""


@dataclass(frozen=True)
class ScoreRow:
    """One evaluated response: method x weights x prompt."""

    method: str
    weights: Weights
    prompt_id: str
    response: str
    scores: Scores
    round: int = 1
    prompt: str = ""
    """The prompt's text as stored (:mod:`sipo.conversation`: a conversation is ``<sipo:messages>[...]``); empty
    in rows written before it was recorded."""


R = TypeVar("R")


def to_row(record: Any) -> dict[str, Any]:
    row = dataclasses.asdict(record)
    row["schema_version"] = SCHEMA_VERSION
    return row


def _from_row(cls: type[R], row: dict[str, Any]) -> R:
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in row:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise KeyError(f.name)
            continue
        value = row[f.name]
        if f.type in ("Candidate",) and isinstance(value, dict):
            value = _from_row(Candidate, value)
        kwargs[f.name] = value
    return cls(**kwargs)  # type: ignore[call-arg]


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write records atomically (temporary file, then rename). Returns the number of rows.

    Raises:
        DataError: a row holds NaN or infinity (JSON has no such numbers, and a later stage would fail on them
            far from their cause: a diverged model, most often); nothing is written.
    """
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                row = record if isinstance(record, dict) else to_row(record)
                # Field order is the dataclass order and weights keep the objectives' order, so rows are stable.
                try:
                    text = json.dumps(row, ensure_ascii=False, allow_nan=False)
                except ValueError:
                    raise DataError("this output would hold NaN or infinity (did a model diverge? lower the "
                                    "learning rates)", path=str(path), line=count + 1) from None
                f.write(text + "\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
    return count


def decode_line(raw: bytes, path: str | Path, lineno: int) -> str:
    """One line of a UTF-8 text file (a byte-order mark on the first line is dropped, as editors write one).

    Raises:
        DataError: the line is not UTF-8; the message names the line, the byte and its column.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}: {exc.reason})",
                        path=str(path), line=lineno) from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line; a malformed line raises DataError with its place."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON ({exc.msg})", path=str(path), line=lineno) from None
            except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, nesting too deep
                reason = str(exc).split(":")[0] if isinstance(exc, ValueError) else "nested too deeply"
                raise DataError(f"malformed JSON ({reason})", path=str(path), line=lineno) from None
            if not isinstance(obj, dict):
                raise DataError("expected a JSON object", path=str(path), line=lineno)
            yield lineno, obj


def read_jsonl(path: str | Path, cls: type[R]) -> list[R]:
    """Read rows written by :func:`write_jsonl` back into ``cls``."""
    records = []
    for lineno, row in iter_json_lines(path):
        try:
            records.append(_from_row(cls, row))
        except (KeyError, TypeError) as exc:
            raise DataError(f"not a {cls.__name__} row ({exc})", path=str(path), line=lineno) from None
    return records
