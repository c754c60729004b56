"""The length judge (``eval.judge: length``): response length as a score, for real-model runs without a reward model.

It measures one thing only, how long a response is, so it can judge only length-like objectives: an objective
whose name contains ``verbos``, ``length`` or ``complex`` (e.g. ``verbosity``, ``length``, ``complexity``) scores

    min(word_count(response) / WORD_CAP, 1.0),   WORD_CAP = 200

where :func:`word_count` is the number of whitespace-separated words. 200 words is a long chat answer (the 60
HelpSteer rows in ``tests/fixtures/helpsteer_sample.jsonl`` have a median of 107.5 words and a maximum of 297), so
the score is in [0, 1] and stays sensitive over the range the pipeline's models produce. Any other objective
(``correctness``, ``helpfulness``, ...) raises :class:`~sipo.errors.ConfigError`: use the ``implicit`` or
``reward_model`` judge for those.

Example::

    length_scores(tokenizer, ["One two three.", ""], ["verbosity"])
    # {"verbosity": [0.015, 0.0]}    3 words / 200, 0 words / 200
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sipo.errors import ConfigError

WORD_CAP = 200
"""Words at which the length score saturates at 1.0."""

LENGTH_OBJECTIVE_MARKERS = ("verbos", "length", "complex")
"""An objective whose lower-cased name contains one of these is measured by length."""


def word_count(text: str) -> int:
    """Number of whitespace-separated words of ``text`` (``str.split()``: runs of spaces, tabs, newlines)."""
    return len(str(text).split())


def length_score(text: str, cap: int = WORD_CAP) -> float:
    """``min(word_count(text) / cap, 1.0)``, in [0, 1]."""
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    return min(word_count(text) / cap, 1.0)


def is_length_objective(name: str) -> bool:
    """True when the length judge can score objective ``name`` (see :data:`LENGTH_OBJECTIVE_MARKERS`)."""
    lowered = name.lower()
    return any(marker in lowered for marker in LENGTH_OBJECTIVE_MARKERS)


def check_length_objectives(objectives: Sequence[str]) -> None:
    """Raise :class:`ConfigError` (naming ``eval.judge``) if an objective is not length-like."""
    for name in objectives:
        if not is_length_objective(name):
            raise ConfigError(
                f"config key 'eval.judge': the length judge only measures response length and cannot score "
                f"objective '{name}' (objective names must contain one of {', '.join(LENGTH_OBJECTIVE_MARKERS)}); "
                "use eval.judge=implicit or eval.judge=reward_model"
            )


def length_scores(tokenizer: Any, responses: Sequence[str], objectives: Sequence[str]) -> dict[str, list[float]]:
    """Length scores of ``responses`` for each objective (all length-like objectives get the same score).

    Args:
        tokenizer: accepted for the judge interface of ``evaluate`` and unused: words, not tokens, are counted, so
            scores do not depend on the policy's tokenizer and compare across models.
        responses: the response texts, without the prompt.
        objectives: objective names; each must be length-like (:func:`is_length_objective`).

    Returns:
        ``{objective: [score per response]}``, each score ``min(words / WORD_CAP, 1)``.

    Raises:
        ConfigError: an objective is not length-like.
    """
    check_length_objectives(objectives)
    scores = [length_score(r) for r in responses]
    return {name: list(scores) for name in objectives}
