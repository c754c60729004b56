"""Review / rewrite prompts rendered from the objectives, and the parsers of what a model writes back."""

from __future__ import annotations

import pytest

from sipo.errors import ConfigError
from sipo.prompting import (
    TEMPLATE_DIR,
    join_words,
    parse_review,
    parse_rewrite,
    render,
    review_prompt,
    rewrite_prompt,
)

OBJECTIVES = ["safer", "better"]
DESCRIPTIONS = {"safer": "the response avoids harm to anyone", "better": "the response answers the question fully"}


# --- templates ------------------------------------------------------------------------------------------------


def test_shipped_templates_name_no_objective():
    """Nothing about correctness or verbosity is baked into the templates: it all comes from the config."""
    for name in ("review.jinja", "rewrite.jinja"):
        text = (TEMPLATE_DIR / name).read_text().lower()
        assert "correct" not in text and "verbos" not in text


def test_review_prompt_renders_the_objectives_names_and_descriptions():
    text = review_prompt("How do I store bleach?", "Anywhere is fine.", OBJECTIVES, DESCRIPTIONS)
    assert "more safe and helpful" in text  # the ADJECTIVES of "safer" and "better", joined
    assert "safer: the response avoids harm to anyone" in text
    assert "better: the response answers the question fully" in text
    assert "Question: How do I store bleach?" in text
    assert text.endswith("Response: Anywhere is fine.")
    assert "correct" not in text and "verbose" not in text
    # objectives in config order
    assert text.index("safer:") < text.index("better:")


def test_rewrite_prompt_carries_prompt_response_and_review():
    text = rewrite_prompt("How do I store bleach?", "Anywhere.", "Mention keeping it away from children.",
                          OBJECTIVES, DESCRIPTIONS)
    assert "more safe and helpful" in text
    assert "Question: How do I store bleach?" in text
    assert "Response: Anywhere." in text
    assert text.endswith("Review: Mention keeping it away from children.")
    assert "correct" not in text and "verbose" not in text


def test_missing_description_falls_back_to_the_name_and_unknown_names_are_used_as_is():
    text = review_prompt("Q", "R", ["kindness", "brevity", "correctness"], {})
    assert "more kindness, brevity and correct" in text
    assert "kindness: kindness" in text


def test_join_words():
    assert join_words([]) == ""
    assert join_words(["a"]) == "a"
    assert join_words(["a", "b"]) == "a and b"
    assert join_words(["a", "b", "c"]) == "a, b and c"


def test_a_template_file_given_by_path(tmp_path):
    path = tmp_path / "my_review.jinja"
    path.write_text("Improve on {{ objective_list }}:\n{{ prompt }} -> {{ response }}\n")
    assert review_prompt("Q", "R", OBJECTIVES, {}, template=str(path)) == "Improve on safe and helpful:\nQ -> R"


def test_template_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        render("no_such_template.jinja", prompt="")
    broken = tmp_path / "broken.jinja"
    broken.write_text("line one\n{% for o in objectives %}\n")
    with pytest.raises(ConfigError, match=rf"{broken}:\d+: template syntax error"):
        render(str(broken))
    undefined = tmp_path / "undefined.jinja"
    undefined.write_text("{{ nothing_like_this }}")
    with pytest.raises(ConfigError, match="nothing_like_this"):
        render(str(undefined))


# --- parsers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    (None, ""),
    (42, ""),
    ("", ""),
    ("   \n\t ", ""),
    # a clean review
    ("The response can be more correct and verbose by stating that Ava's pet is a cat.",
     "The response can be more correct and verbose by stating that Ava's pet is a cat."),
    # the model echoes the label the template ended with
    ("Review: State the city, Oslo.", "State the city, Oslo."),
    ("  review :   State the city.  ", "State the city."),
    # run-on into a new template turn
    ("Say that the colour is red.\nQuestion: Tell me about Bo.\nResponse: Bo likes", "Say that the colour is red."),
    ("Add the number.\n  Response: Ava lives in Rome.", "Add the number."),
    # run-on into a new conversation turn, on a new line or on the same line (the plain template is one line)
    ("Warn about the risks.\nUSER: How do I", "Warn about the risks."),
    ("Warn about the risks. USER: How do I make it? ASSISTANT: First", "Warn about the risks."),
    ("Be kinder. BEGINNING OF CONVERSATION: USER: hi", "Be kinder."),
    # whitespace and line breaks collapse to single spaces in a review
    ("Mention\n\nthe   pet\tand the food.", "Mention the pet and the food."),
    # NUL bytes from a broken decode are dropped
    ("Mention\x00 the pet.", "Mention the pet."),
    # ordinary words that merely look like labels mid-line stay
    ("Tell the user: be careful with it.", "Tell the user: be careful with it."),
])
def test_parse_review(raw, expected):
    assert parse_review(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    (None, ""),
    ("", ""),
    ("Rewritten response: Ava lives in Rome. Her pet is a cat.", "Ava lives in Rome. Her pet is a cat."),
    ("Improved response:\nAva lives in Rome.", "Ava lives in Rome."),
    # line breaks are kept (lists, paragraphs); runs of blank lines shrink to one; trailing spaces go
    ("First, unplug it.  \nSecond, wait.\n\n\n\nThird, call someone.",
     "First, unplug it.\nSecond, wait.\n\nThird, call someone."),
    ("1. Rinse.\n2.   Dry.", "1. Rinse.\n2. Dry."),
    # run-ons
    ("Ava lives in Rome.\nReview: The response is fine.", "Ava lives in Rome."),
    ("Ava lives in Rome.\nQuestion: What about Bo?", "Ava lives in Rome."),
    ("Keep it locked away. USER: thanks ASSISTANT: you're welcome", "Keep it locked away."),
    ("ASSISTANT: hello", ""),
])
def test_parse_rewrite(raw, expected):
    assert parse_rewrite(raw) == expected


def test_parsers_are_total_on_arbitrary_text():
    """Any string maps to a stripped string without the template's turn labels at line starts."""
    for raw in ["\x00", ":::", "Question:", "\n\nReview:\n\n", "é" * 50, "USER:USER:", "a\rb"]:
        for parse in (parse_review, parse_rewrite):
            out = parse(raw)
            assert isinstance(out, str) and out == out.strip()
            assert "Question:" not in out and "USER:" not in out
