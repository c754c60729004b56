"""Parsing ``--weights`` (sipo generate / export, sipo.load(...).generate)."""

from __future__ import annotations

import pytest

from sipo.api import parse_weights
from sipo.errors import ConfigError

OBJS = ["correctness", "verbosity"]


@pytest.mark.parametrize("given", ["correctness=0.3,verbosity=0.7", "verbosity=0.7, correctness=0.3", "0.3,0.7",
                                   {"verbosity": 0.7, "correctness": 0.3}, [0.3, 0.7]])
def test_accepted_forms(given):
    weights = parse_weights(given, OBJS)
    assert weights == {"correctness": 0.3, "verbosity": 0.7} and list(weights) == OBJS


@pytest.mark.parametrize("given, words", [
    ("correctness=0.3", "no weight for objective 'verbosity'"),
    ("correctness=0.3,helpfulness=0.7", "'helpfulness' is not an objective"),
    ("0.3,0.6", "sum to 1"),
    ("0.3,0.3,0.4", "3 weights for 2 objectives"),
    ("correctness=-0.5,verbosity=1.5", "finite number >= 0"),
    ("correctness=x,verbosity=1", "not a number"),
    ("correctness=1,0", "not of the form"),
    (None, "give one weight per objective"),
])
def test_refused_forms_name_the_option(given, words):
    with pytest.raises(ConfigError) as info:
        parse_weights(given, OBJS)
    assert str(info.value).startswith("--weights: ") and words in str(info.value)
