"""The fast paths against the slow reference paths, in the cases tests/component/test_mod.py and test_scoring.py
leave out: many prompts over several batches (the batch size not dividing their number), early stops in later
batches, soups as MOD adapters and as judges, shared prompts in scoring, and AdapterBank's grouped mixed-adapter
forward against peft's own mixed-adapter batches."""

from __future__ import annotations

import pytest
import torch

from sipo.decoding.mod import mod_generate_reference_token_ids, mod_generate_token_ids
from sipo.models.adapters import BASE
from sipo.scoring import implicit
from sipo.scoring.implicit import (
    _response_chunks,
    implicit_rewards,
    implicit_rewards_reference,
    sequence_logprobs,
)

# Seven prompts of different lengths (left-padded batches), some repeated for scoring.
PROMPTS = [
    "Hi",
    "Tell me about Ava, please.",
    "What is the capital of the moon?",
    "Ok",
    "A much longer prompt than all of the others, so that padding matters here.",
    "Why is the sky blue?",
    "List three colours",
]
NEW_TOKENS = 6
SOUPS = {"soup2": {"alpha": 0.2, "beta": 0.8}, "soup4": {"alpha": 0.4, "beta": 0.6},
         "soup6": {"alpha": 0.6, "beta": 0.4}, "soup8": {"alpha": 0.8, "beta": 0.2}}


def _add_soups(bank) -> None:
    for name, weights in SOUPS.items():
        bank.add_soup(name, weights)


def test_many_prompts_over_batches_that_do_not_divide_them(bank, tiny_tokenizer):
    """7 prompts in batches of 3 (3 + 3 + 1), a different mix per prompt: two adapters at 0.3/0.7 listed in either
    order, three adapters, a soup mixed with an adapter, one-hot mixes with a zero weight, an adapter with another
    rank and target modules (gamma) and the base model. Same tokens as the one-prompt-at-a-time reference."""
    bank.add_soup("soup", {"alpha": 0.5, "beta": 0.5})
    mixes = [
        {"alpha": 0.3, "beta": 0.7},
        {"beta": 0.7, "alpha": 0.3},
        {"alpha": 0.2, "beta": 0.3, "gamma": 0.5},
        {"soup": 0.6, "gamma": 0.4},
        {"beta": 1.0, "alpha": 0.0},
        {"__base__": 0.5, "alpha": 0.5},
        {"gamma": 1.0},
    ]
    batched = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mixes, max_new_tokens=NEW_TOKENS, batch_size=3)
    reference = mod_generate_reference_token_ids(bank, tiny_tokenizer, PROMPTS, mixes, max_new_tokens=NEW_TOKENS)
    assert batched == reference
    reordered = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS[:1], [mixes[1]], max_new_tokens=NEW_TOKENS)
    assert reordered == batched[:1]  # the order in which a mix lists its adapters does not matter
    assert len({tuple(ids) for ids in batched}) > 3  # the mixes do decode different things


def test_early_stops_in_every_batch(bank, tiny_tokenizer):
    """Declare as stop tokens the 2nd token prompt 0 generates and the 4th token prompt 5 generates (in another
    batch with batch_size 2): those prompts leave their batches early while the others go on, and both decoders
    give every prompt's unstopped output cut at its first stop token."""
    mixes = [{"alpha": 0.3, "beta": 0.7}, {"gamma": 1.0}] * 3 + [{"alpha": 0.5, "gamma": 0.5}]
    kwargs = {"max_new_tokens": NEW_TOKENS}
    free = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mixes, batch_size=2, **kwargs)
    stops = {free[0][1], free[5][3]}

    def cut(ids: list[int]) -> list[int]:
        first = min((k for k, t in enumerate(ids) if t in stops), default=len(ids))
        return ids[:first]

    expected = [cut(ids) for ids in free]
    assert sum(len(ids) < NEW_TOKENS for ids in expected) >= 2
    assert sum(len(ids) == NEW_TOKENS for ids in expected) >= 1  # someone keeps going
    bank.base_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, *sorted(stops)]
    assert mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mixes, batch_size=2, **kwargs) == expected
    assert mod_generate_reference_token_ids(bank, tiny_tokenizer, PROMPTS, mixes, **kwargs) == expected


def _scoring_pairs() -> tuple[list[str], list[str]]:
    """13 pairs: prompts 0 and 4 with four responses each (one of them empty: just EOS), the others once."""
    prompts, responses = [], []
    for text in ["Hello!", "", "Hi there, friend.", "Yes"]:
        prompts += [PROMPTS[0], PROMPTS[4]]
        responses += [text, text[::-1] + " ok"]
    for k in (1, 2, 3, 5, 6):
        prompts.append(PROMPTS[k])
        responses.append(f"Answer number {k}.")
    return prompts, responses


def test_two_adapters_and_four_soups_as_judges(bank, tiny_tokenizer):
    """Implicit rewards of 2 adapters + 4 soups over 13 pairs (batch sizes 3 and 5, not dividing 13; batches with
    shared prompts, distinct prompts and both; an empty response) equal the one-response-at-a-time reference within
    1e-5."""
    _add_soups(bank)
    judges = ["alpha", "beta", *SOUPS]
    prompts, responses = _scoring_pairs()
    reference = implicit_rewards_reference(bank, tiny_tokenizer, prompts, responses, judges, beta=0.1)
    for batch_size in (3, 5):
        batched = implicit_rewards(bank, tiny_tokenizer, prompts, responses, judges, beta=0.1, batch_size=batch_size)
        for judge in judges:
            torch.testing.assert_close(batched[judge], reference[judge], atol=1e-5, rtol=1e-5)
    # The soups are not their ingredients: each judge scores differently.
    assert len({tuple(torch.round(batched[j], decimals=4).tolist()) for j in judges}) == len(judges)


def test_shared_prompts_give_the_unshared_log_probs(bank, tiny_tokenizer):
    """Batches whose pairs share prompts run each prompt once with a KV cache; batch_size 1 runs every pair whole.
    Same log-probs; and a batch whose responses are all empty (only the EOS token) is scored too."""
    _add_soups(bank)
    names = [BASE, "alpha", "gamma", "soup4"]
    prompts, responses = _scoring_pairs()
    shared = sequence_logprobs(bank, tiny_tokenizer, prompts, responses, names, batch_size=8)
    whole = sequence_logprobs(bank, tiny_tokenizer, prompts, responses, names, batch_size=1)
    for name in names:
        torch.testing.assert_close(shared[name], whole[name], atol=1e-5, rtol=1e-5)
    empty = sequence_logprobs(bank, tiny_tokenizer, ["Hi", "Hi"], ["", ""], names, batch_size=2)
    alone = sequence_logprobs(bank, tiny_tokenizer, ["Hi"], [""], names, batch_size=1)
    for name in names:
        torch.testing.assert_close(empty[name], alone[name].repeat(2), atol=1e-5, rtol=1e-5)


def test_response_chunks_plan():
    """The response pass's column ranges: one range without a saving threshold or when splitting saves too little;
    split where short responses end when that saves more than the threshold; ranges always tile [0, width)."""
    assert _response_chunks([10, 3], 10, None) == [(0, 10)]
    assert _response_chunks([10, 10, 9], 10, 0.1) == [(0, 10)]  # 1 position of 30 saved: not worth a forward
    assert _response_chunks([40, 5, 5, 5], 40, 0.1) == [(0, 5), (5, 40)]  # 160 positions -> 20 + 35
    assert _response_chunks([40, 30, 20, 10], 40, 0.0) == [(0, 10), (10, 20), (20, 30), (30, 40)]
    for lengths in ([7, 1, 1, 3, 7], [2], [1, 1], [12, 11, 2, 2, 9]):
        for saving in (0.0, 0.05, 0.3):
            ranges = _response_chunks(lengths, max(lengths), saving)
            assert ranges[0][0] == 0 and ranges[-1][1] == max(lengths)
            assert all(a < b == c for (a, b), (c, _) in zip(ranges, ranges[1:] + [(ranges[-1][1], None)]))


@pytest.mark.parametrize("min_saving", [0.0, None])
def test_chunked_response_pass_gives_the_whole_pass_log_probs(bank, tiny_tokenizer, monkeypatch, min_saving):
    """A response pass split at every response's end (rows leaving the pass as their responses end, their cache
    rows dropped) or not split at all gives the log-probs of scoring each pair whole, with soups, the base model and
    an empty response among them."""
    _add_soups(bank)
    names = [BASE, "alpha", "gamma", "soup4"]
    prompts, responses = _scoring_pairs()
    whole = sequence_logprobs(bank, tiny_tokenizer, prompts, responses, names, batch_size=1)
    monkeypatch.setitem(implicit._CHUNK_MIN_SAVING, "cpu", min_saving)
    split = sequence_logprobs(bank, tiny_tokenizer, prompts, responses, names, batch_size=8)
    for name in names:
        torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=1e-5)


def _inputs(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    mask = encoded["attention_mask"]
    return {"input_ids": encoded["input_ids"], "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


@torch.no_grad()
def test_grouped_forward_equals_peft_mixed_batches(bank, tiny_tokenizer):
    """AdapterBank.forward adds each adapter's LoRA update to its rows itself; with rows grouped (slices) or
    interleaved (index tensors), soups and the base model among them, its logits are peft's mixed-adapter batch
    logits, and each row's logits are those of its adapter alone; no hook is left on the model afterwards."""
    _add_soups(bank)
    texts = ["Hi", "Tell me about Ava", "Why?", "Ok then", "A longer one here", "Blue", "Colours"]
    kwargs = _inputs(tiny_tokenizer, texts)
    for names, tolerance in (
        (["alpha", "alpha", "beta", "beta", "soup4", BASE, BASE], 1e-6),  # peft's operations, on slices
        (["alpha", "beta", BASE, "gamma", "alpha", "soup8", "beta"], 1e-6),  # ... on index tensors
        # Stacked (equal slices one after the other; gamma has another rank and other target modules): batched
        # matrix products over rank-padded factors sum in another order; with these large random factors peft's own
        # float32 logits are 2e-5 from float64 ones (in float64 both paths agree exactly).
        ([BASE, "alpha", "alpha", "gamma", "gamma", "soup4", "soup4"], 5e-5),
        (["alpha", "gamma", "soup4", "beta", "soup8", "soup2", "soup6"], 5e-5),
    ):
        fast = bank.forward(names, **kwargs).logits
        peft = bank.model(**kwargs, adapter_names=names).logits
        torch.testing.assert_close(fast, peft, atol=tolerance, rtol=tolerance)
        for row, name in enumerate(names):
            with bank.only(name) as model:
                alone = model(**{k: v[row:row + 1] for k, v in kwargs.items()}).logits[0]
            torch.testing.assert_close(fast[row], alone, atol=max(tolerance, 1e-5), rtol=max(tolerance, 1e-5))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in bank.model.modules())


def test_stacked_updates_follow_changed_weights_and_autograd(bank, tiny_tokenizer):
    """The stacked path (equal row groups one after the other) equals peft's mixed batches, again after an adapter's
    factors change in place (they are restacked), after a soup is added, and with autograd on (where the per-adapter
    path runs, so gradients reach the factors)."""
    texts = ["Hi", "Tell me about Ava", "Why?", "Ok then", "A longer one here", "Blue"]
    kwargs = _inputs(tiny_tokenizer, texts)
    names = ["alpha", "alpha", "gamma", "gamma", "beta", "beta"]

    def check(names: list[str]) -> None:
        with torch.no_grad():
            fast = bank.forward(names, **kwargs).logits
            peft = bank.model(**kwargs, adapter_names=names).logits
        torch.testing.assert_close(fast, peft, atol=5e-5, rtol=5e-5)

    check(names)
    with torch.no_grad():
        for module in bank.model.modules():
            if hasattr(module, "lora_B") and "gamma" in module.lora_B:
                module.lora_B["gamma"].weight.mul_(-2.0)
    check(names)
    bank.add_soup("soup", {"alpha": 0.5, "gamma": 0.5})
    check(["soup", "soup", "alpha", "alpha", BASE, BASE])
    lora_b = next(m.lora_B["alpha"].weight for m in bank.model.modules() if hasattr(m, "lora_B"))
    lora_b.requires_grad_(True)
    bank.forward(names, **kwargs).logits.sum().backward()
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0
    lora_b.requires_grad_(False)


@torch.no_grad()
def test_grouped_forward_falls_back_to_peft_in_training_mode(bank, tiny_tokenizer):
    """In training mode (where peft refuses mixed batches) the grouped path is not taken: peft's error comes back."""
    kwargs = _inputs(tiny_tokenizer, ["Hi", "Ok"])
    bank.model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            bank.forward(["alpha", "beta"], **kwargs)
    finally:
        bank.model.eval()
    assert bank.forward(["alpha", "beta"], **kwargs).logits.shape[0] == 2
