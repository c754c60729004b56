"""MOD decoding on a tiny random Llama with random LoRA adapters: batched == plain greedy == the reference loop."""

from __future__ import annotations

import pytest
import torch

from sipo.decoding.mod import (
    mod_generate,
    mod_generate_reference_token_ids,
    mod_generate_token_ids,
)
from sipo.models.loading import decode_response, encode_prompt

# Different lengths, so the batch is left-padded.
PROMPTS = ["Hi", "Tell me about Ava, please.", "What is the capital of the moon?"]
NEW_TOKENS = 8


def _greedy_with_generate(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    """transformers' own greedy decoding of one prompt (no padding), cut before the EOS."""
    ids = torch.tensor([encode_prompt(tokenizer, prompt, None)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    generated = out[0, ids.shape[1]:].tolist()
    return generated[: generated.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in generated else generated


@pytest.mark.parametrize("adapter", ["alpha", "gamma"])
def test_one_hot_mix_is_plain_greedy_decoding(bank, tiny_tokenizer, adapter):
    """MOD with w = one-hot on an adapter == greedy decoding of that adapter, token for token, with three prompts of
    different lengths in one left-padded batch (and a zero weight on another adapter, which is dropped)."""
    mixes = [{adapter: 1.0, "beta": 0.0}] * len(PROMPTS)
    got = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mixes, max_new_tokens=NEW_TOKENS, batch_size=3)
    with bank.only(adapter) as model:
        expected = [_greedy_with_generate(model, tiny_tokenizer, p, NEW_TOKENS) for p in PROMPTS]
    assert got == expected
    assert all(len(ids) == NEW_TOKENS for ids in got)  # random bytes: no early EOS here


def test_plain_model_without_adapters(tiny_model, tiny_tokenizer):
    got = mod_generate_token_ids(tiny_model, tiny_tokenizer, PROMPTS, [{"__base__": 1.0}] * 3,
                                 max_new_tokens=NEW_TOKENS)
    expected = [_greedy_with_generate(tiny_model, tiny_tokenizer, p, NEW_TOKENS) for p in PROMPTS]
    assert got == expected
    with pytest.raises(ValueError, match="unknown adapter"):
        mod_generate(tiny_model, tiny_tokenizer, ["x"], [{"alpha": 1.0}], max_new_tokens=2)


def test_batched_mod_equals_reference_loop(bank, tiny_tokenizer):
    """A 0.3/0.7 mix, and different mixes for different prompts of one batch (batch_size 2 over 3 prompts)."""
    same = [{"alpha": 0.3, "beta": 0.7}] * 3
    assert mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, same, max_new_tokens=NEW_TOKENS) == \
        mod_generate_reference_token_ids(bank, tiny_tokenizer, PROMPTS, same, max_new_tokens=NEW_TOKENS)
    mixed = [{"alpha": 0.3, "beta": 0.7}, {"gamma": 1.0}, {"alpha": 0.2, "beta": 0.3, "gamma": 0.5}]
    batched = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mixed, max_new_tokens=NEW_TOKENS, batch_size=2)
    reference = mod_generate_reference_token_ids(bank, tiny_tokenizer, PROMPTS, mixed, max_new_tokens=NEW_TOKENS)
    assert batched == reference
    texts = mod_generate(bank, tiny_tokenizer, PROMPTS, mixed, max_new_tokens=NEW_TOKENS, batch_size=2)
    assert texts == [decode_response(tiny_tokenizer, ids) for ids in reference]


def test_rows_stop_on_eos_independently(bank, tiny_tokenizer):
    """Make the 3rd token that prompt 0 generates a stop token: prompt 0 stops there (and leaves the batch, its
    rows dropped from the KV cache) while the others go on; every prompt's output is its unstopped output cut at
    the first stop token."""
    mix = [{"alpha": 0.5, "beta": 0.5}] * 3
    free = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, max_new_tokens=NEW_TOKENS)
    stop = free[0][2]
    expected = [ids[: ids.index(stop)] if stop in ids else ids for ids in free]
    assert any(len(ids) == NEW_TOKENS for ids in expected)  # someone keeps going after prompt 0 stopped
    bank.base_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, stop]
    assert mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, max_new_tokens=NEW_TOKENS) == expected
    assert mod_generate_reference_token_ids(bank, tiny_tokenizer, PROMPTS, mix, max_new_tokens=NEW_TOKENS) == expected


def test_sampling_is_reproducible_with_a_seed(bank, tiny_tokenizer):
    kwargs = {"max_new_tokens": NEW_TOKENS, "temperature": 1.0, "top_p": 0.9, "batch_size": 2}
    mix = [{"alpha": 0.4, "beta": 0.6}] * 3
    first = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, seed=5, **kwargs)
    assert mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, seed=5, **kwargs) == first
    assert mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, seed=6, **kwargs) != first
    greedy = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, max_new_tokens=NEW_TOKENS)
    nucleus_of_one = mod_generate_token_ids(bank, tiny_tokenizer, PROMPTS, mix, max_new_tokens=NEW_TOKENS,
                                            temperature=1.0, top_p=1e-9)
    assert nucleus_of_one == greedy


def test_bad_arguments(bank, tiny_tokenizer):
    with pytest.raises(ValueError, match="mixes"):
        mod_generate(bank, tiny_tokenizer, PROMPTS, [{"alpha": 1.0}], max_new_tokens=2)
    with pytest.raises(ValueError, match="non-zero"):
        mod_generate(bank, tiny_tokenizer, ["x"], [{"alpha": 0.0}], max_new_tokens=2)
    assert mod_generate(bank, tiny_tokenizer, ["x"], [{"alpha": 1.0}], max_new_tokens=0) == [""]
