"""The word vocabulary of a random model counts each prompt as the model sees it."""

from sipo.conversation import encode
from sipo.stages.sft import _vocabulary_text


def test_a_one_turn_prompt_counts_as_its_own_text():
    # Counting a template around it would reorder the vocabulary, and so change every random model built
    # from data without conversations (the benchmark's and the smoke runs').
    assert _vocabulary_text("What is the capital of France?") == "What is the capital of France?"


def test_a_conversation_counts_as_its_turns_not_its_encoding():
    prompt = encode([{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "Name a colour."}])
    text = _vocabulary_text(prompt)
    assert "Hi there" in text and "Hello!" in text and "Name a colour." in text
    assert "<sipo:messages>" not in text and '"role"' not in text
