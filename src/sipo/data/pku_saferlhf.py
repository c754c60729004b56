"""The ``pku_saferlhf`` source: PKU-SafeRLHF, PKU-SafeRLHF-10K and BeaverTails preference rows.

Each row is one pair with a 0/1 label per objective (other columns, such as ``is_response_0_safe`` or the harm
categories, are ignored)::

    {"prompt": "...", "response_0": "...", "response_1": "...", "better_response_id": 0, "safer_response_id": 1}

Objectives are named as in the paper, ``better`` (helpfulness) and ``safer`` (harmlessness), and map to label
columns through :data:`LABEL_COLUMNS`. ``response_0`` becomes ``response_a`` and ``response_1`` ``response_b``;
``preferred[o]`` is ``"a"`` when the label is 0 and ``"b"`` when it is 1 (these datasets have no ties). Scores are
1.0 for the preferred response and 0.0 for the other. A pair conflicts when the better response is not the safer
one. Rows whose two responses are identical are skipped (logged).

Licence: PKU-SafeRLHF is CC-BY-NC-4.0 (non-commercial use only).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sipo.config import PipelineConfig
from sipo.data import bad_rows
from sipo.data.bad_rows import BadRow
from sipo.data.pairs import (
    get_column,
    get_text,
    json_type,
    label_scores,
    make_pair,
)
from sipo.data.readers import read_rows, source_args
from sipo.errors import ConfigError, DataError
from sipo.records import Pair

logger = logging.getLogger(__name__)

LABEL_COLUMNS = {"better": "better_response_id", "safer": "safer_response_id"}
"""Objective name -> the column holding the id (0 or 1) of the response it prefers."""
RESPONSE_COLUMNS = ("response_0", "response_1")


def check_objectives(objectives: Sequence[str]) -> None:
    """Every objective must have a label column; raises ConfigError naming ``objectives``."""
    for objective in objectives:
        if objective not in LABEL_COLUMNS:
            available = ", ".join(f"{o} ({c})" for o, c in LABEL_COLUMNS.items())
            close = difflib.get_close_matches(objective, list(LABEL_COLUMNS), n=1, cutoff=0.6)
            guess = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"config key 'objectives': '{objective}' is not a PKU-SafeRLHF objective (available: {available})"
                f"{guess}"
            )


def pku_pairs(rows: Iterable[tuple[Any, int, dict[str, Any]]], objectives: Sequence[str],
              where: str | Path | None = None) -> list[Pair]:
    """One pair per row, labelled by ``better_response_id`` / ``safer_response_id`` (see the module docstring)."""
    check_objectives(objectives)
    pairs = []
    num_rows = skipped = 0
    for file, line, row in rows:
        num_rows += 1
        try:
            prompt = get_text(row, "prompt", file, line)
            response_a, response_b = (get_text(row, column, file, line) for column in RESPONSE_COLUMNS)
        except BadRow as exc:
            bad_rows.skip(exc)
            skipped += 1
            continue
        preferred: dict[str, str | None] = {}
        for objective in objectives:
            column = LABEL_COLUMNS[objective]
            value = get_column(row, column, file, line)
            if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
                raise DataError(f"column '{column}' must be 0 or 1, got {json_type(value)}", path=str(file), line=line)
            preferred[objective] = "a" if value == 0 else "b"
        if response_a == response_b:
            bad_rows.skip(BadRow("two identical responses", path=str(file), line=line))
            skipped += 1
            continue
        scores_a, scores_b = label_scores(preferred)
        pairs.append(make_pair(prompt, response_a, response_b, preferred, scores_a, scores_b))
    if num_rows == 0:
        raise DataError("no rows found (data.path)", path=str(where))
    logger.info("%d rows -> %d pairs (%d unusable rows skipped)", num_rows, len(pairs), skipped)
    return pairs


def load_pku_saferlhf(path: str | Path | None, objectives: Sequence[str], *, split: str = "train",
                      revision: str | None = None, data_dir: str | None = None) -> list[Pair]:
    """The pairs of a PKU-SafeRLHF file, folder, saved dataset or Hub id (see :mod:`sipo.data.readers`)."""
    check_objectives(objectives)
    return pku_pairs(read_rows(path, split=split, revision=revision, data_dir=data_dir), objectives, path)


def load(cfg: PipelineConfig) -> list[Pair]:
    """The ``pku_saferlhf`` source: ``data.path`` read for ``objectives``."""
    return load_pku_saferlhf(cfg.data.path, list(cfg.objectives), **source_args(cfg))
