"""Implicit rewards: batched scoring == the one-at-a-time reference; response tokens only, EOS included."""

from __future__ import annotations

import torch

from sipo.models.adapters import BASE
from sipo.models.loading import encode_prompt_response
from sipo.scoring.implicit import (
    implicit_reward,
    implicit_rewards,
    implicit_rewards_reference,
    sequence_logprobs,
)

PROMPTS = ["Hi", "Tell me about Ava, please.", "Why?", "A longer prompt than the others are", "Ok"]
RESPONSES = ["Hello!", "Ava likes red.", "", "Because the sky is blue and wide.", "Sure"]


def _manual_logprob(model, token_ids: list[int], start: int) -> float:
    """sum_{t >= start} log p(token_t | tokens_<t), from one unpadded forward."""
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return float(sum(logp[t - 1, token_ids[t]] for t in range(start, len(token_ids))))


def test_implicit_reward_by_hand():
    """beta = 0.1: 0.1 * (-1 - -1.5) = 0.05 and 0.1 * (-2 - -1) = -0.1."""
    rewards = implicit_reward(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]), beta=0.1)
    torch.testing.assert_close(rewards, torch.tensor([0.05, -0.1]))


def test_batched_rewards_equal_reference(bank, tiny_tokenizer):
    bank.add_soup("soup", {"alpha": 0.3, "beta": 0.7})
    judges = ["alpha", "beta", "gamma", "soup"]
    batched = implicit_rewards(bank, tiny_tokenizer, PROMPTS, RESPONSES, judges, beta=0.1, batch_size=2)
    reference = implicit_rewards_reference(bank, tiny_tokenizer, PROMPTS, RESPONSES, judges, beta=0.1)
    assert list(batched) == judges
    for judge in judges:
        assert batched[judge].shape == (len(PROMPTS),)
        torch.testing.assert_close(batched[judge], reference[judge], atol=1e-5, rtol=1e-5)
    assert batched["alpha"].abs().min() > 0  # the adapters do change the log-probs


def test_batch_size_does_not_change_scores(bank, tiny_tokenizer):
    one = sequence_logprobs(bank, tiny_tokenizer, PROMPTS, RESPONSES, [BASE, "alpha"], batch_size=1)
    many = sequence_logprobs(bank, tiny_tokenizer, PROMPTS, RESPONSES, [BASE, "alpha"], batch_size=5)
    for name in (BASE, "alpha"):
        torch.testing.assert_close(one[name], many[name], atol=1e-5, rtol=1e-5)


def test_only_response_tokens_count_and_eos_is_included(bank, tiny_tokenizer):
    """log p(y|x) = log p(x, y) - log p(x) (chain rule), with y ending in EOS: the prompt's own log-prob is
    masked, and leaving out the EOS term gives a different number."""
    scores = sequence_logprobs(bank, tiny_tokenizer, PROMPTS, RESPONSES, ["alpha"], batch_size=3)["alpha"]
    with bank.only("alpha") as model:
        for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
            prompt_ids, response_ids = encode_prompt_response(tiny_tokenizer, prompt, response, None, None)
            assert response_ids[-1] == tiny_tokenizer.eos_token_id
            full = prompt_ids + response_ids
            joint = _manual_logprob(model, full, start=1)
            prompt_only = _manual_logprob(model, prompt_ids, start=1)
            assert abs(float(scores[i]) - (joint - prompt_only)) < 1e-4
            without_eos = _manual_logprob(model, full[:-1], start=len(prompt_ids))
            assert abs(float(scores[i]) - without_eos) > 1e-3


def test_reference_judge_gives_zero_and_truncation(bank, tiny_tokenizer):
    rewards = implicit_rewards(bank, tiny_tokenizer, PROMPTS, RESPONSES, [BASE, "alpha"], beta=0.5)
    assert torch.equal(rewards[BASE], torch.zeros(len(PROMPTS)))
    short = sequence_logprobs(bank, tiny_tokenizer, ["Hi"], ["Hello!"], ["alpha"], max_response_tokens=2)["alpha"]
    with bank.only("alpha") as model:
        prompt_ids, response_ids = encode_prompt_response(tiny_tokenizer, "Hi", "Hello!", None, 2)
        assert tiny_tokenizer.eos_token_id not in response_ids
        expected = _manual_logprob(model, prompt_ids + response_ids, start=len(prompt_ids))
    assert abs(float(short[0]) - expected) < 1e-4
