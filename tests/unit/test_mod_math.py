"""MOD's combination rule and next-token selection (pure tensors, no model)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipo.decoding.mod import combine_logprobs, select_next_tokens

LN_QUARTER = math.log(0.25)
LN_THREE_QUARTERS = math.log(0.75)


def test_combine_logprobs_hand_values():
    """Adapter 1 logits [0, ln 3] -> probs [1/4, 3/4]; adapter 2 logits [ln 3, 0] -> probs [3/4, 1/4].

    w = (0.25, 0.75): f0 = 0.25 ln(1/4) + 0.75 ln(3/4) = -0.3465736 - 0.2157616 = -0.5623351
                      f1 = 0.25 ln(3/4) + 0.75 ln(1/4) = -0.0719205 - 1.0397208 = -1.1116413
    """
    logits = torch.tensor([[[0.0, math.log(3.0)]], [[math.log(3.0), 0.0]]])  # (2 adapters, 1 row, 2 tokens)
    scores = combine_logprobs(logits, torch.tensor([0.25, 0.75]))
    expected = torch.tensor([[0.25 * LN_QUARTER + 0.75 * LN_THREE_QUARTERS, 0.25 * LN_THREE_QUARTERS + 0.75 * LN_QUARTER]])
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scores, torch.tensor([[-0.5623351, -1.1116413]]), atol=1e-6, rtol=1e-6)


def test_combine_logprobs_per_row_weights():
    """Row 0 takes adapter 1 only (w = (1, 0)) -> [ln 1/4, ln 3/4]; row 1 takes adapter 2 only -> [ln 3/4, ln 1/4]."""
    row = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    logits = torch.stack([row[0].expand(2, 2), row[1].expand(2, 2)])  # same logits for both rows
    scores = combine_logprobs(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    expected = torch.tensor([[LN_QUARTER, LN_THREE_QUARTERS], [LN_THREE_QUARTERS, LN_QUARTER]])
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-6)


def test_zero_weight_ignores_minus_infinity():
    """A zero-weight slot contributes 0 even if its log-probs are -inf (0 * -inf would be NaN)."""
    logits = torch.tensor([[[0.0, 0.0]], [[0.0, float("-inf")]]])
    scores = combine_logprobs(logits, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(scores, torch.tensor([[math.log(0.5), math.log(0.5)]]))


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=3), st.integers(0, 2**31 - 1))
def test_one_hot_weight_is_that_adapters_log_probs(num_adapters, which, seed):
    which = which % num_adapters
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_adapters, 3, 11, generator=generator) * 5
    weights = torch.zeros(num_adapters)
    weights[which] = 1.0
    scores = combine_logprobs(logits, weights)
    torch.testing.assert_close(scores, torch.log_softmax(logits[which], dim=-1))
    assert torch.equal(scores.argmax(-1), logits[which].argmax(-1))


def test_combine_is_invariant_to_logit_shifts():
    """log_softmax removes a per-row constant, so shifting one adapter's logits changes nothing."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=generator)
    shifted = logits.clone()
    shifted[1] += 100.0
    weights = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(combine_logprobs(logits, weights), combine_logprobs(shifted, weights))


def test_combine_rejects_bad_shapes():
    with pytest.raises(ValueError):
        combine_logprobs(torch.zeros(2, 3), torch.ones(2))
    with pytest.raises(ValueError):
        combine_logprobs(torch.zeros(2, 3, 4), torch.ones(3))
    with pytest.raises(ValueError):
        combine_logprobs(torch.zeros(2, 3, 4), torch.ones(2, 3))


def test_greedy_is_argmax():
    scores = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert select_next_tokens(scores, temperature=0.0, top_p=1.0, generator=None).tolist() == [1, 0]


def test_sampling_is_reproducible_with_a_seed():
    scores = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    draws = [
        select_next_tokens(scores, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(draws[0], draws[1])


def test_top_p_keeps_only_the_nucleus():
    """probs [0.5, 0.3, 0.2] (scores = their logs), top_p = 0.6: mass before each token is [0, 0.5, 0.8], so
    tokens 0 and 1 are kept and token 2 is never drawn."""
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(2000, 3)
    drawn = select_next_tokens(scores, temperature=1.0, top_p=0.6, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1}


def test_tiny_top_p_is_greedy():
    scores = torch.randn(8, 30, generator=torch.Generator().manual_seed(3))
    drawn = select_next_tokens(scores, temperature=1.0, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn, scores.argmax(-1))
