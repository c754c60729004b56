"""The ``helpsteer`` source: nvidia/HelpSteer and HelpSteer2 rows (the same columns).

Each row is one response with five Likert scores (0-4)::

    {"prompt": "...", "response": "...", "helpfulness": 3, "correctness": 4, "coherence": 4,
     "complexity": 2, "verbosity": 2}

A prompt has several rows (up to four in HelpSteer). Rows are grouped by prompt text, every two distinct responses
of a prompt form a pair (all combinations, in order of first appearance), and under each objective the higher
score wins; equal scores are a tie (``preferred[o] = None``), which the split drops from that objective's DPO
data. Identical responses of one prompt are merged with their scores averaged (HelpSteer holds a few short answers,
such as "Poetry", rated several times). The paper's HelpSteer objectives are ``[correctness, verbosity]``.

``objectives`` must be score columns; the others are not read. ``data.path`` is a JSONL, parquet or arrow file, a
folder of them, a ``save_to_disk`` folder or a Hub id such as ``nvidia/HelpSteer2`` (see :mod:`sipo.data.readers`).
HelpSteer2's preference file (``response_1``, ``response_2``, ``preference_strength``) is read by the ``jsonl``
source (:mod:`sipo.data.formats`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sipo.config import PipelineConfig
from sipo.data import bad_rows
from sipo.data.bad_rows import BadRow
from sipo.data.pairs import (
    ScoredResponse,
    get_score,
    get_text,
    pairs_from_scored_responses,
)
from sipo.data.readers import read_rows, source_args
from sipo.errors import ConfigError, DataError
from sipo.records import Pair

SCORE_COLUMNS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
"""The HelpSteer / HelpSteer2 attributes, each a Likert score."""
SCORE_RANGE = (0.0, 4.0)


def check_objectives(objectives: Sequence[str]) -> None:
    """Every objective must be a HelpSteer score column; raises ConfigError naming ``objectives``."""
    for objective in objectives:
        if objective not in SCORE_COLUMNS:
            close = difflib.get_close_matches(objective, SCORE_COLUMNS, n=1, cutoff=0.6)
            guess = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"config key 'objectives': '{objective}' is not a HelpSteer score column "
                f"(available: {', '.join(SCORE_COLUMNS)}){guess}"
            )


def scored_rows(rows: Iterable[tuple[Any, int, dict[str, Any]]], objectives: Sequence[str]
                ) -> Iterator[ScoredResponse]:
    """(prompt, response, scores) of HelpSteer rows, each score checked to be in the Likert range."""
    low, high = SCORE_RANGE
    for file, line, row in rows:
        try:
            prompt = get_text(row, "prompt", file, line)
            response = get_text(row, "response", file, line)
        except BadRow as exc:
            bad_rows.skip(exc)
            continue
        scores = {o: get_score(row, o, file, line, low=low, high=high) for o in objectives}
        yield prompt, response, scores


def load_helpsteer(path: str | Path | None, objectives: Sequence[str], *, split: str = "train",
                   revision: str | None = None, data_dir: str | None = None) -> list[Pair]:
    """Pairs of HelpSteer responses labelled per objective by their scores (see the module docstring)."""
    check_objectives(objectives)
    raw = list(read_rows(path, split=split, revision=revision, data_dir=data_dir))
    if not raw:
        raise DataError("no rows found (data.path)", path=str(path))
    rows = list(scored_rows(raw, objectives))
    if not rows:
        raise DataError(f"none of its {len(raw)} rows is usable (data.path)", path=str(path))
    return pairs_from_scored_responses(rows, objectives)


def load(cfg: PipelineConfig) -> list[Pair]:
    """The ``helpsteer`` source: ``data.path`` read for ``objectives``."""
    return load_helpsteer(cfg.data.path, list(cfg.objectives), **source_args(cfg))
