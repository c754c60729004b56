"""sipo's fast paths, soups and training steps on a device: the checks of ``scripts/device_checks.py``, each run
on the CPU (here, in CI) and on CUDA (``pytest -m gpu``). scripts/gpu_check.py runs the same checks on a
~1B-parameter model and times the fast paths."""

from __future__ import annotations

import device_checks as dc
import pytest


@pytest.fixture(scope="module")
def setup(device, tmp_path_factory):
    """A tiny random Llama on the device, its word tokenizer and words, three random adapters."""
    return dc.random_setup("tiny", tmp_path_factory.mktemp("adapters"), device=device)


@pytest.fixture(scope="module")
def prompts(setup):
    _, tokenizer, words, _ = setup
    return dc.prompts_for(tokenizer, words, 4, seed=1)


def _pairs(setup, prompts) -> tuple[list[str], list[str]]:
    """Two prompts with three responses each (shared-prompt batches) and two prompts with one."""
    words = setup[2]
    chosen = [prompts[0]] * 3 + [prompts[1]] * 3 + prompts[2:]
    return chosen, dc.texts(words, len(chosen), 3, 30, seed=2)


def test_batched_mod_gives_the_naive_loops_tokens_float32(setup, prompts, device):
    """Batched MOD (2 and 3 adapters, one adapter alone, a soup with an adapter, in one left-padded batch of 3
    and 1) decodes the tokens of the one-prompt, one-adapter-at-a-time loop, on the device."""
    model, tokenizer, _, adapters = setup
    bank = dc.make_bank(model, adapters, "float32")
    result = dc.check_mod(bank, tokenizer, prompts, new_tokens=6, batch_size=3)
    assert result["device"].startswith(device) and result["dtype"] == "float32"
    assert result["ok"], result
    assert result["reference_tokens"] == 4 * 6  # EOS can never win: every prompt decodes all its tokens
    assert result["distinct_outputs"] == 4  # the four mixes decode different things


@pytest.fixture(scope="module")
def truth(setup, prompts):
    """The float64 truth of the pairs' rewards, one response at a time, on the device."""
    model, tokenizer, _, adapters = setup
    return dc.scoring_truth(model, adapters, tokenizer, *_pairs(setup, prompts))


def test_batched_rewards_are_as_accurate_as_one_at_a_time_float32(setup, prompts, truth, device):
    """Implicit rewards of 2 adapters + 4 soups in batches of 4 (prompts shared or not) and one-response-at-a-time
    scoring (the reference recomputed per judge) are both within float32 rounding of the float64 truth, the batched
    path no worse than 4x the one-at-a-time one, with a margin of at least 10 below a one-token bug's shift."""
    model, tokenizer, _, adapters = setup
    assert truth["device"].startswith(device)
    bank = dc.make_bank(model, adapters, "float32")
    result = dc.check_scoring(bank, tokenizer, *_pairs(setup, prompts), batch_size=4, truth=truth)
    assert result["device"].startswith(device) and result["dtype"] == "float32"
    assert result["ok"], result
    assert result["max_abs_reward"] > 1e-2  # the adapters do move the rewards away from 0
    assert 0 < result["one_at_a_time_error_rel"] < 1e-5 and result["batched_error_rel"] < 1e-5  # float32 rounding
    assert result["margin"] >= dc.SCORING_MIN_MARGIN


def test_the_scoring_check_fails_a_one_token_mask_bug(setup, prompts, truth, monkeypatch):
    """A batched scorer that drops each response's last token (a wrong mask) shifts rewards by about one token's
    reward: far above the float32 allowance, so the check fails."""
    from sipo.scoring import implicit

    model, tokenizer, _, adapters = setup
    real = implicit.implicit_rewards

    def drop_last_word(bank, tokenizer, prompts, responses, judges, **kwargs):
        return real(bank, tokenizer, prompts, [r.rsplit(" ", 1)[0] for r in responses], judges, **kwargs)

    monkeypatch.setattr(implicit, "implicit_rewards", drop_last_word)
    bank = dc.make_bank(model, adapters, "float32")
    result = dc.check_scoring(bank, tokenizer, *_pairs(setup, prompts), batch_size=4, truth=truth)
    assert result["ok"] is False and result["finite"]
    assert result["batched_error"] > 10 * result["allowed_error"]
    assert result["one_at_a_time_error"] < result["allowed_error"]  # the one-at-a-time path is still right


def test_bfloat16_decoding_and_scoring_run_on_the_device(setup, prompts, truth, device):
    """In bfloat16 (the GPU presets' dtype) both fast paths run on the device and give finite rewards and full
    -length outputs; their agreement with the slow paths is reported by scripts/gpu_check.py, not required here
    (bfloat16 rounding differs with batch shape, so a near-tie may flip a token)."""
    model, tokenizer, _, adapters = setup
    bank = dc.make_bank(model, adapters, "bfloat16")
    mod = dc.check_mod(bank, tokenizer, prompts, new_tokens=4, batch_size=4, require_exact=False)
    assert mod["dtype"] == "bfloat16" and mod["device"].startswith(device)
    assert mod["ok"] is None and mod["reference_tokens"] == 4 * 4
    scoring = dc.check_scoring(bank, tokenizer, *_pairs(setup, prompts), batch_size=4, truth=truth)
    assert scoring["finite"] and scoring["ok"] is None
    assert scoring["batched_error"] > 0 and scoring["one_at_a_time_error"] > 0  # both reported, vs the truth


def test_soup_maths_on_the_device(device, tmp_path):
    """sum_o w_o dW_o on the device equals float64 on the CPU; a soup adapter's logits equal the base model's with
    the hand-merged update."""
    result = dc.check_soup_maths(device, root=tmp_path)
    assert result["ok"], result


@pytest.mark.parametrize("nll_alpha", [0.0, 0.1], ids=["dpo", "dpo_nll"])
def test_one_bfloat16_training_step(device, tmp_path, nll_alpha):
    """One optimizer step of LoRA DPO, and of re-alignment (DPO + 0.1 NLL from a saved adapter, referenced to it),
    in bfloat16 on the device: finite loss, the adapter moves and the base does not; re-alignment starts with zero
    rewards and loss log 2 + alpha * NLL."""
    result = dc.check_training_step(tmp_path, device, "bfloat16", nll_alpha=nll_alpha)
    assert result["device"].startswith(device) and result["base_dtype"] == "bfloat16"
    assert result["ok"], result


def test_the_1b_shape_has_about_a_billion_parameters():
    """The timed model (``--size 1b``), built on the meta device (shapes only, no memory) over a vocabulary of the
    size its tokenizer has (32,000 words plus special tokens and the template's pieces): ~1.1B parameters."""

    class Vocabulary:  # what random_llama reads of a tokenizer
        pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

        def __len__(self) -> int:
            return dc.SIZES["1b"]["vocabulary"] + 12

    shape = {k: v for k, v in dc.SIZES["1b"].items() if k != "vocabulary"}
    model = dc.random_llama(Vocabulary(), 0, device="meta", **shape)
    parameters = sum(p.numel() for p in model.parameters())
    assert 1.0e9 < parameters < 1.2e9, parameters
