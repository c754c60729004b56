"""The length judge: word counts and min(words / 200, 1), by hand."""

from __future__ import annotations

import pytest

from sipo.errors import ConfigError
from sipo.scoring.length import (
    WORD_CAP,
    check_length_objectives,
    is_length_objective,
    length_score,
    length_scores,
    word_count,
)


def test_word_count_splits_on_any_whitespace():
    """"a  b\\tc\\nd" -> 4 words; "" and "   " -> 0; punctuation stays attached ("Hi, you." -> 2)."""
    assert word_count("a  b\tc\nd") == 4
    assert word_count("") == 0
    assert word_count("   ") == 0
    assert word_count("Hi, you.") == 2


def test_length_score_hand_values():
    """WORD_CAP = 200: 3 words -> 0.015, 100 -> 0.5, 200 -> 1.0, 450 -> capped at 1.0; cap 4: 3 words -> 0.75."""
    assert WORD_CAP == 200
    assert length_score("one two three") == pytest.approx(0.015)
    assert length_score("w " * 100) == pytest.approx(0.5)
    assert length_score("w " * 200) == 1.0
    assert length_score("w " * 450) == 1.0
    assert length_score("one two three", cap=4) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        length_score("x", cap=0)


def test_length_scores_for_length_like_objectives():
    """Every length-like objective gets the same per-response scores; the tokenizer is not used."""
    scores = length_scores(None, ["One two three.", "", "w " * 300], ["verbosity", "complexity"])
    assert scores == {"verbosity": [0.015, 0.0, 1.0], "complexity": [0.015, 0.0, 1.0]}
    assert length_scores(None, [], ["length"]) == {"length": []}


def test_other_objectives_are_refused():
    assert is_length_objective("Verbosity") and is_length_objective("response_length")
    assert not is_length_objective("correctness")
    check_length_objectives(["verbosity", "length"])
    with pytest.raises(ConfigError, match="eval.judge.*'correctness'"):
        length_scores(None, ["x"], ["verbosity", "correctness"])
