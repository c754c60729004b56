"""Rows that are well formed but unusable: one policy for every data file sipo reads (``data.on_bad_row``).

A row is *unusable* when its columns have the right types but it gives no pair (or, in ``data.test_path``, no
test prompt): an empty or null text, two identical responses, implicit-prompt sides that share no prompt, a
side with more than one turn after the shared prompt (HH-RLHF's row 1255 of harmless-base test). Every reader
raises :class:`BadRow` for such a row and hands it to :meth:`BadRowLog.skip`:

- ``data.on_bad_row: skip`` (the default): the row is skipped and counted per file and reason, with its first
  row numbers; the ``prepare`` manifest holds the counts (``bad_rows``) and report.md shows them;
- ``data.on_bad_row: refuse``: the first such row stops the run with one line naming the file and the row.

A *malformed* row (not JSON, a missing column, a value of the wrong type or out of range) always stops the run:
it means the file or the column names are not what the config says.

:func:`collecting` makes a log the current one for the readers called inside it::

    with collecting("skip") as log:
        pairs = load_pairs(cfg)
    log.counts()   # {"policy": "skip", "skipped": 5, "files": {"test.jsonl": {...}}}
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sipo.errors import DataError

logger = logging.getLogger(__name__)

FIRST_ROWS = 5
"""How many row numbers of each file's skipped rows are kept (the first ones)."""

POLICIES = ("skip", "refuse")


class BadRow(DataError):
    """A well-formed row that gives no pair or no test prompt; ``reason`` says why, without the row's text."""

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None):
        super().__init__(reason, path=path, line=line)
        self.reason = reason


@dataclass
class BadRowLog:
    """The unusable rows seen while reading, per file: how many, why, and the first row numbers."""

    policy: str = "skip"
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def skip(self, row: BadRow) -> None:
        """Count ``row`` (policy ``skip``) or raise it (policy ``refuse``)."""
        if self.policy == "refuse":
            raise DataError(f"{row.reason} (data.on_bad_row=refuse; 'skip' skips and counts such rows)",
                            path=row.path, line=row.line)
        entry = self.files.setdefault(str(row.path), {"skipped": 0, "reasons": {}, "first_rows": []})
        entry["skipped"] += 1
        entry["reasons"][row.reason] = entry["reasons"].get(row.reason, 0) + 1
        if len(entry["first_rows"]) < FIRST_ROWS and row.line is not None:
            entry["first_rows"].append(row.line)

    @property
    def skipped(self) -> int:
        return sum(entry["skipped"] for entry in self.files.values())

    def counts(self) -> dict[str, Any]:
        """The manifest's ``bad_rows``: ``{"policy", "skipped", "files": {file: {"skipped", "reasons",
        "first_rows"}}}``."""
        return {"policy": self.policy, "skipped": self.skipped,
                "files": {name: {"skipped": e["skipped"], "reasons": dict(sorted(e["reasons"].items())),
                                 "first_rows": list(e["first_rows"])} for name, e in self.files.items()}}


_CURRENT: contextvars.ContextVar[BadRowLog | None] = contextvars.ContextVar("sipo_bad_rows", default=None)


def current() -> BadRowLog:
    """The log of the enclosing :func:`collecting`; outside one, a new log that skips (counts nowhere else)."""
    log = _CURRENT.get()
    return log if log is not None else BadRowLog()


def skip(row: BadRow) -> None:
    """Hand an unusable row to the current log: counted, or raised under ``refuse``."""
    current().skip(row)


@contextmanager
def collecting(policy: str = "skip") -> Iterator[BadRowLog]:
    """Make a new log with ``policy`` current for the block; logs one warning per file with skipped rows. Inside
    another ``collecting`` block it yields the enclosing log (whose policy applies) and logs nothing."""
    if policy not in POLICIES:
        raise ValueError(f"on_bad_row must be one of {POLICIES}, got {policy!r}")
    enclosing = _CURRENT.get()
    if enclosing is not None:
        yield enclosing
        return
    log = BadRowLog(policy)
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)
    for name, entry in log.files.items():
        logger.warning("%s: skipped %d unusable row(s) (%s; first rows %s; data.on_bad_row=refuse stops instead)",
                       name, entry["skipped"], ", ".join(f"{n}: {r}" for r, n in sorted(entry["reasons"].items())),
                       ", ".join(map(str, entry["first_rows"])))


def summary_lines(counts: dict[str, Any]) -> list[str]:
    """report.md lines, one per file, of a manifest's ``bad_rows``."""
    lines = []
    for name, entry in (counts or {}).get("files", {}).items():
        reasons = "; ".join(f"{n} × {r}" for r, n in entry["reasons"].items())
        first = ", ".join(map(str, entry["first_rows"]))
        more = ", …" if entry["skipped"] > len(entry["first_rows"]) else ""
        lines.append(f"`{name}`: {entry['skipped']} row(s) skipped ({reasons}); rows {first}{more}")
    return lines
