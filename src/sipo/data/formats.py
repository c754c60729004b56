"""Readers of the single-label preference formats: TRL's preference rows and HelpSteer2's preference pairs.

Both label **one** objective per row (which response is better overall), so a dataset in these formats labels the
objective it is given for: the only objective of the config, or the key of ``data.path`` when it maps objectives
to datasets (see docs/data.md). The rows become :class:`~sipo.records.Pair` records whose ``preferred`` holds that
one objective.

**TRL preference** (the first row has ``chosen`` and ``rejected``), in its four shapes:

- explicit prompt, standard: ``{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}``;
- explicit prompt, conversational: ``prompt`` a list of messages (ending with a user turn), ``chosen`` and
  ``rejected`` each a list holding one assistant message;
- implicit prompt, conversational: ``chosen`` and ``rejected`` whole conversations; the messages they share are
  the prompt, and each must end with one assistant message after it;
- implicit prompt, standard: ``chosen`` and ``rejected`` whole texts. An Anthropic HH-RLHF transcript
  (``"\\n\\nHuman: ... \\n\\nAssistant: ..."``) is split into turns: everything before the last ``Assistant:`` turn
  is the prompt, that turn is the response. Any other text: the longest common prefix, cut back to a whitespace,
  is the prompt and the rest of each is its response.

``chosen`` becomes ``response_a`` and ``preferred[objective] = "a"``; scores are 1.0 and 0.0. Multi-turn prompts
keep their turns (:mod:`sipo.conversation`). Rows that cannot form a pair although well typed (a response that is
empty once the prompt is removed, two identical responses, or implicit-prompt rows whose two sides do not share
a prompt) are skipped and counted in a warning; rows that are malformed (a missing column, a value of the wrong
type, a message without role or content) raise :class:`~sipo.errors.DataError` naming the file and line.

**HelpSteer2 preference** (the first row has ``response_1``, ``response_2`` and ``preference_strength``):
``preference_strength`` is an integer in [-3, 3]; negative means ``response_1`` is better, positive
``response_2``, 0 a tie. ``response_1`` becomes ``response_a``. (Taken from the HelpSteer2 dataset card's
description; no real HelpSteer2 preference rows were available to check it against.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sipo import conversation
from sipo.data import bad_rows
from sipo.data.bad_rows import BadRow
from sipo.data.pairs import get_column, get_score, get_text, json_type, label_scores, make_pair
from sipo.errors import ConfigError, DataError
from sipo.records import Pair, PromptRecord

logger = logging.getLogger(__name__)

Rows = Iterable[tuple[Any, int, dict[str, Any]]]


def is_trl(row: dict[str, Any]) -> bool:
    return "chosen" in row and "rejected" in row


def is_helpsteer2_preference(row: dict[str, Any]) -> bool:
    return "response_1" in row and "response_2" in row and "preference_strength" in row


class _Skip(Exception):
    """A well-typed row that gives no pair (counted, not an error)."""


def hh_messages(text: str) -> list[dict[str, str]] | None:
    """The turns of an HH-RLHF transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``); None if ``text`` is not one."""
    return conversation.transcript_messages(text)


def _messages(value: Any, column: str, where: Any, line: int) -> list[dict[str, str]]:
    try:
        return conversation.check_messages(value, f"column '{column}'")
    except ValueError as exc:
        raise DataError(str(exc), path=str(where), line=line) from None


def _text_or_messages(row: dict[str, Any], column: str, where: Any, line: int) -> str | list[dict[str, str]]:
    value = get_column(row, column, where, line)
    if value is None or isinstance(value, str):
        return get_text(row, column, where, line)
    if isinstance(value, list):
        return _messages(value, column, where, line)
    raise DataError(f"column '{column}' must be a string or a list of messages, got {json_type(value)}",
                    path=str(where), line=line)


def _response_of(messages: list[dict[str, str]], column: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise _Skip(f"'{column}' is not one assistant message after the prompt")
    return messages[0]["content"]


def _split_common_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of two texts that share a prompt."""
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    if n < limit or len(chosen) != len(rejected):
        while n > 0 and not chosen[n - 1].isspace():  # never cut a word in two
            n -= 1
    return chosen[:n].strip(), chosen[n:].strip(), rejected[n:].strip()


def trl_example(row: dict[str, Any], where: Any, line: int) -> tuple[str, str, str]:
    """(prompt string, chosen, rejected) of one TRL preference row; raises DataError (malformed) or _Skip."""
    chosen = _text_or_messages(row, "chosen", where, line)
    rejected = _text_or_messages(row, "rejected", where, line)
    if type(chosen) is not type(rejected):
        raise DataError("columns 'chosen' and 'rejected' must both be strings or both be message lists",
                        path=str(where), line=line)
    if "prompt" in row:
        prompt = _text_or_messages(row, "prompt", where, line)
        if isinstance(prompt, str):
            prompt = conversation.prompt_from_text(prompt)  # an HH transcript prompt keeps its turns
            if not isinstance(chosen, str):
                return prompt, _response_of(chosen, "chosen"), _response_of(rejected, "rejected")
            return prompt, chosen, rejected
        if isinstance(chosen, str):
            raise DataError("a conversational 'prompt' needs 'chosen' and 'rejected' as message lists",
                            path=str(where), line=line)
        return _encode(prompt, where, line), _response_of(chosen, "chosen"), _response_of(rejected, "rejected")
    if isinstance(chosen, str):
        turns_c, turns_r = hh_messages(chosen), hh_messages(rejected)
        if turns_c is None or turns_r is None:
            prompt, response_c, response_r = _split_common_prefix(chosen, rejected)
            if not prompt:
                raise _Skip("'chosen' and 'rejected' share no prompt")
            return prompt, response_c, response_r
        chosen, rejected = turns_c, turns_r
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    # The prompt ends with the last user turn the two sides share; each side must add one assistant message.
    while shared > 0 and chosen[shared - 1]["role"] != "user":
        shared -= 1
    if shared == 0:
        raise _Skip("'chosen' and 'rejected' share no prompt")
    return (_encode(chosen[:shared], where, line), _response_of(chosen[shared:], "chosen"),
            _response_of(rejected[shared:], "rejected"))


def _encode(messages: list[dict[str, str]], where: Any, line: int) -> str:
    try:
        return conversation.encode(messages)
    except ValueError as exc:
        raise DataError(f"prompt: {exc}", path=str(where), line=line) from None


def _pair(prompt: str, response_a: str, response_b: str, objective: str, winner: str | None) -> Pair:
    if not prompt.strip():
        raise _Skip("empty prompt")
    if not response_a.strip() or not response_b.strip():
        raise _Skip("an empty response")
    if response_a == response_b:
        raise _Skip("two identical responses")
    preferred = {objective: winner}
    scores_a, scores_b = label_scores(preferred)
    return make_pair(prompt, response_a, response_b, preferred, scores_a, scores_b)


def skip_unusable(exc: Exception, where: Any, line: int) -> None:
    """Hand a row that gives no pair (``_Skip`` or :class:`BadRow`) to ``data.on_bad_row``
    (:mod:`sipo.data.bad_rows`)."""
    bad_rows.skip(exc if isinstance(exc, BadRow) else BadRow(str(exc), path=str(where), line=line))


def _collect(rows: Rows, build, what: str) -> list[Pair]:
    pairs: list[Pair] = []
    total = skipped = 0
    for where, line, row in rows:
        total += 1
        try:
            pairs.append(build(row, where, line))
        except (_Skip, BadRow) as exc:
            skip_unusable(exc, where, line)
            skipped += 1
    logger.info("%s: %d rows -> %d pairs (%d unusable rows skipped)", what, total, len(pairs), skipped)
    return pairs


def trl_pairs(rows: Rows, objective: str) -> list[Pair]:
    """Pairs of TRL preference rows, labelled for ``objective`` (chosen = ``response_a``)."""
    def build(row, where, line):
        prompt, chosen, rejected = trl_example(row, where, line)
        return _pair(prompt, chosen, rejected, objective, "a")

    return _collect(rows, build, "TRL preference rows")


def helpsteer2_preference_pairs(rows: Rows, objective: str) -> list[Pair]:
    """Pairs of HelpSteer2 preference rows, labelled for ``objective`` by the sign of ``preference_strength``."""
    def build(row, where, line):
        prompt = get_text(row, "prompt", where, line)
        response_a = get_text(row, "response_1", where, line)
        response_b = get_text(row, "response_2", where, line)
        strength = get_score(row, "preference_strength", where, line, low=-3, high=3)
        return _pair(prompt, response_a, response_b, objective, "a" if strength < 0 else "b" if strength > 0 else None)

    return _collect(rows, build, "HelpSteer2 preference rows")


def single_label_objective(objectives: Sequence[str], fmt: str) -> str:
    """The objective a one-label format labels: the config's only objective; ConfigError otherwise."""
    if len(objectives) != 1:
        raise ConfigError(
            f"config key 'data.path': {fmt} rows label one objective, but there are {len(objectives)} "
            f"({', '.join(objectives)}); give one dataset per objective, e.g. data.path={{{objectives[0]}: FILE, ...}}"
            " (see docs/data.md)")
    return objectives[0]


def load_test_prompts(path, *, split: str = "train", revision: str | None = None) -> list:
    """The prompts of ``data.test_path``, once each, in file order: rows with a ``prompt`` (a string or a list of
    messages) or TRL preference rows (their prompt, implicit or explicit), in any storage of
    :mod:`sipo.data.readers`."""
    from sipo.data.pairs import prompt_id_for
    from sipo.data.readers import read_rows

    records: dict[str, PromptRecord] = {}
    rows = skipped = 0
    for where, line, row in read_rows(path, split=split, revision=revision):
        rows += 1
        try:
            if is_trl(row):
                prompt = trl_example(row, where, line)[0]
            else:
                value = _text_or_messages(row, "prompt", where, line)
                prompt = conversation.prompt_from_text(value) if isinstance(value, str) else _encode(value, where, line)
        except (_Skip, BadRow) as exc:
            reason = exc.reason if isinstance(exc, BadRow) else str(exc)
            skip_unusable(BadRow(f"no test prompt in this row ({reason})", path=str(where), line=line), where, line)
            skipped += 1
            continue
        records.setdefault(prompt_id_for(prompt), PromptRecord(prompt_id=prompt_id_for(prompt), prompt=prompt))
    if not records:
        what = f"none of its {rows} rows holds a usable prompt" if rows else "no rows found"
        raise DataError(f"{what} (data.test_path)", path=str(path))
    logger.info("data.test_path: %d rows, %d distinct test prompts (%d unusable rows skipped)", rows, len(records),
                skipped)
    return list(records.values())
