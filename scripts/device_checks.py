"""Device self-checks: sipo's batched fast paths, its LoRA soups and one training step, each against a simple
reference, on any device (``cpu`` or ``cuda``) and dtype.

Test tooling, not part of the installed package: ``scripts/gpu_check.py`` imports it from its own folder, and
``tests/gpu`` and ``benchmarks/speed.py`` put ``scripts/`` on ``sys.path``. Why a module of its own: the same checks
run in three places -- ``tests/gpu`` (on CUDA, ``pytest -m gpu``), their
CPU twins in the normal test suite, and ``scripts/gpu_check.py`` (one command for a GPU machine that also times the
fast paths) -- so the check CI passes on the CPU is exactly the check a GPU run confirms. Every check returns a
plain, JSON-ready dict with an ``ok`` flag and the figures it compared instead of raising, so that in a one-shot GPU
run one failed check does not hide the others. ``ok`` is ``None`` where a check only reports (bfloat16 decoding:
rounding may legitimately flip a near-tie, so token agreement is measured, not required).

The models are random Llamas built in-process from a config (nothing is downloaded): ``tiny`` for the CPU and
``1b``, the shape of TinyLlama-1.1B (hidden 2048, 22 layers, 32 heads with 4 key/value heads, MLP 5632, a vocabulary
of 32,000 made-up words), about 1.1 billion parameters, for a GPU; ``7b``, the shape of Llama-2-7B (hidden 4096, 32
layers, 32 heads, no grouped key/values, MLP 11008), about 6.7 billion parameters, for scripts/decode_bench.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sipo.config import LoraSettings, TrainSettings

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocabulary": 400},
    "1b": {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
           "intermediate_size": 5632, "vocabulary": 32000},
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
           "intermediate_size": 11008, "vocabulary": 32000},
}
"""Random Llama shapes; ``vocabulary`` is the number of made-up words of the word-level tokenizer."""

OBJECTIVES = ("obj0", "obj1", "obj2")
MIX2 = {"obj0": 0.3, "obj1": 0.7}
MIX3 = {"obj0": 0.2, "obj1": 0.3, "obj2": 0.5}
SOUPS = {f"soup{int(w * 10)}": {"obj0": w, "obj1": 1.0 - w} for w in (0.2, 0.4, 0.6, 0.8)}
"""The judges of scoring: the two objectives' adapters and the four soups between them, as in the filter stage."""
JUDGES = ("obj0", "obj1", *SOUPS)
BETA = 0.1


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """A :class:`~sipo.config.Dtype` name -> the torch dtype; a torch dtype is returned as is (the checks' float64
    truth is no ``model.dtype`` a run may choose)."""
    from sipo.training import resolve_dtype

    return name if isinstance(name, torch.dtype) else resolve_dtype(name)


def dtype_name(dtype: str | torch.dtype) -> str:
    return str(dtype_of(dtype)).removeprefix("torch.")


# --------------------------------------------------------------------------------------------- random models


def lexicon(size: int, seed: int) -> list[str]:
    """``size`` made-up words of two or three syllables: a word-level vocabulary of any size whose texts have the
    token counts a subword tokenizer gives real text (a byte-level vocabulary would make them ~5x longer)."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    generator = torch.Generator().manual_seed(seed)
    words: dict[str, None] = {}
    while len(words) < size:
        count = 2 + int(torch.randint(0, 2, (1,), generator=generator))
        picks = torch.randint(0, len(syllables), (count,), generator=generator).tolist()
        words.setdefault("".join(syllables[i] for i in picks))
    return list(words)


def texts(words: Sequence[str], count: int, low: int, high: int, seed: int) -> list[str]:
    """``count`` sentences of ``low`` to ``high`` words drawn from ``words``."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        length = int(torch.randint(low, high + 1, (1,), generator=generator))
        picks = torch.randint(0, len(words), (length,), generator=generator).tolist()
        out.append(" ".join(words[i] for i in picks) + ".")
    return out


def random_llama(tokenizer: Any, seed: int, *, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 num_key_value_heads: int, intermediate_size: int, max_position_embeddings: int = 2048,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32) -> Any:
    """A random ``LlamaForCausalLM`` over ``tokenizer``, built on ``device`` in ``dtype`` (float32 by default: a
    7B-shape model built in bfloat16 never holds a float32 copy), in eval mode.

    Weights are drawn with std 0.1 (peaked next-token distributions: no near-ties for greedy decoding to break) and
    the EOS row of the output layer is zeroed, so EOS gets logit 0 while the other tokens' logits spread around 0
    with a standard deviation above 1: greedy decoding never stops early, and every decoder compared decodes exactly
    the same number of tokens."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        initializer_range=0.1,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype_of(dtype))
    try:
        with torch.device(device):  # initialise on the device: a 1B model's init takes seconds there, a minute on a CPU
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    return model.eval()


def random_lora_adapters(model: Any, names: Sequence[str], out_root: str | Path, seed: int, *,
                         lora: LoraSettings | None = None, std: float = 0.1) -> dict[str, Path]:
    """Random LoRA adapters on ``model`` (left unchanged), saved as peft folders ``out_root/<name>``.

    The package's LoRA settings (r 8, alpha 16, q/k/v/o) by default, with A and B both non-zero, so that every
    adapter changes the model's outputs. The values come from one CPU generator seeded ``seed``, adapter after
    adapter, so they do not depend on the device."""
    from peft import LoraConfig, get_peft_model

    lora = lora or LoraSettings()
    generator = torch.Generator().manual_seed(seed)
    paths = {}
    for name in names:
        peft_model = get_peft_model(
            copy.deepcopy(model),
            LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.target_modules), lora_dropout=0.0,
                       task_type="CAUSAL_LM"),
        )
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * std)
        paths[name] = Path(out_root) / name
        peft_model.save_pretrained(paths[name])
        del peft_model
    return paths


def random_setup(size: str, root: str | Path, *, device: str | torch.device, seed: int = 0,
                 adapters: Sequence[str] = OBJECTIVES,
                 dtype: str | torch.dtype = torch.float32) -> tuple[Any, Any, list[str], dict[str, Path]]:
    """The word tokenizer, a random Llama of shape ``SIZES[size]`` on ``device`` in ``dtype`` (float32 by
    default), the words its texts are made of, and random adapters saved under ``root``: ``(model, tokenizer, words,
    adapter folders)``."""
    from sipo.models.loading import build_tokenizer

    shape = dict(SIZES[size])
    words = lexicon(shape.pop("vocabulary"), seed)
    tokenizer = build_tokenizer("word", [" ".join(words) + "."])
    model = random_llama(tokenizer, seed, device=device, dtype=dtype, **shape)
    return model, tokenizer, words, random_lora_adapters(model, adapters, root, seed + 1)


def make_bank(model: Any, adapters: Mapping[str, Path], dtype: str | torch.dtype, soups: bool = True) -> Any:
    """An :class:`~sipo.models.adapters.AdapterBank` over a copy of ``model`` cast to ``dtype`` (the pipeline's
    order: the base model in its dtype, then the saved adapters on top), with the four soups as extra judges."""
    from sipo.models.adapters import AdapterBank

    bank = AdapterBank.load(copy.deepcopy(model).to(dtype_of(dtype)), adapters)
    if soups:
        for name, weights in SOUPS.items():
            bank.add_soup(name, weights)
    return bank


def prompts_for(tokenizer: Any, words: Sequence[str], count: int, seed: int, low: int = 8,
                high: int = 40) -> list[str]:
    """``count`` formatted prompts of ``low`` to ``high`` words (the plain template: the tokenizer has no chat
    template)."""
    from sipo.models.loading import format_prompt

    return [format_prompt(tokenizer, text, "plain") for text in texts(words, count, low, high, seed)]


# ------------------------------------------------------------------------------------------------------ checks


def _where(bank: Any) -> dict[str, str]:
    param = next(bank.model.parameters())
    return {"device": str(param.device), "dtype": dtype_name(param.dtype)}


def check_mod(bank: Any, tokenizer: Any, prompts: Sequence[str], *, new_tokens: int, batch_size: int,
              require_exact: bool = True) -> dict[str, Any]:
    """Batched MOD (all adapters' rows in one forward per step, KV cache) against the naive loop (one prompt at a
    time, one forward per adapter per token), with a different mix for neighbouring prompts: 2 and 3 adapters,
    one adapter alone, a soup mixed with an adapter.

    ``ok``: every prompt's tokens are identical (``require_exact``), else ``None`` (agreement reported only)."""
    from sipo.decoding.mod import mod_generate_reference_token_ids, mod_generate_token_ids

    cycle = [MIX2, MIX3, {"obj1": 1.0}, {"soup4": 0.6, "obj2": 0.4}]
    mixes = [cycle[i % len(cycle)] for i in range(len(prompts))]
    batched = mod_generate_token_ids(bank, tokenizer, prompts, mixes, max_new_tokens=new_tokens,
                                     batch_size=batch_size, progress=False)
    reference = mod_generate_reference_token_ids(bank, tokenizer, prompts, mixes, max_new_tokens=new_tokens)
    first_divergence = []
    for a, b in zip(batched, reference):
        first_divergence.append(next((k for k, (x, y) in enumerate(zip(a, b)) if x != y),
                                     None if len(a) == len(b) else min(len(a), len(b))))
    identical = sum(d is None for d in first_divergence)
    agreeing = sum(len(a) if d is None else d for a, d in zip(reference, first_divergence))
    return {
        **_where(bank),
        "prompts": len(prompts),
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "identical_prompts": identical,
        "reference_tokens": sum(map(len, reference)),
        "tokens_before_first_divergence": agreeing,
        "first_divergence": first_divergence,
        "distinct_outputs": len({tuple(ids) for ids in batched}),
        "ok": identical == len(prompts) if require_exact else None,
    }


SCORING_FLOAT32_RATIO = 4.0
"""float32 scoring: the batched path's largest reward error against the float64 truth may be at most this many times
the one-at-a-time path's (see :func:`check_scoring`)."""
SCORING_MIN_MARGIN = 10.0
"""... and that allowance must lie this many times below the smallest shift a real bug makes (``bug_scale``)."""
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24


@torch.no_grad()
def scoring_truth(model: Any, adapters: Mapping[str, Path], tokenizer: Any, prompts: Sequence[str],
                  responses: Sequence[str]) -> dict[str, Any]:
    """The summed response log-probs (``__base__`` and every judge of :data:`JUDGES`) and the implicit rewards of
    ``(prompt, response)`` pairs in float64: a bank over ``model`` cast to float64 (adapters and soups included) on
    ``model``'s device, one response at a time, each adapter alone (peft's plain forward, not sipo's grouped one),
    log-softmax and sums in float64.

    The truth the float32 and bfloat16 paths are measured against. It is not exact: the Llama code rounds a few
    things through float32 itself (RMSNorm normalises in float32, the rotary angles are float32), single roundings
    of relative size 2**-24 per layer, against the thousands of float32 roundings a float32 forward accumulates.

    Returns ``{"logps": {name: [float]}, "rewards": {judge: [float]}, "response_tokens": [int], "device", "seconds"}``.
    """
    import time

    from sipo.models.adapters import BASE
    from sipo.models.loading import encode_prompt_response
    from sipo.scoring.implicit import single_logprob

    start = time.perf_counter()
    bank = make_bank(model, adapters, torch.float64)
    dtypes = {p.dtype for p in bank.model.parameters()}
    if dtypes != {torch.float64}:
        raise RuntimeError(f"the float64 truth's bank holds parameters of {sorted(map(str, dtypes))}")
    encoded = [encode_prompt_response(tokenizer, p, r, None, None) for p, r in zip(prompts, responses)]
    logps: dict[str, list[float]] = {}
    for name in (BASE, *JUDGES):
        with bank.only(name) as plain:
            logps[name] = [single_logprob(plain, prompt_ids, response_ids, bank.device)
                           for prompt_ids, response_ids in encoded]
    device = str(bank.device)
    del bank
    return {
        "logps": logps,
        "rewards": {j: [BETA * (a - b) for a, b in zip(logps[j], logps[BASE])] for j in JUDGES},
        "response_tokens": [len(response_ids) for _, response_ids in encoded],
        "device": device,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _reward_errors(rewards: Mapping[str, torch.Tensor], truth: Mapping[str, Sequence[float]]) -> float:
    """The largest ``|reward - truth|`` over judges and responses (``inf`` when a reward is not finite)."""
    worst = 0.0
    for judge in JUDGES:
        got = rewards[judge].double().cpu()
        if not bool(torch.isfinite(got).all()):
            return math.inf
        worst = max(worst, float((got - torch.tensor(truth[judge], dtype=torch.float64)).abs().max()))
    return worst


def check_scoring(bank: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
                  batch_size: int, truth: Mapping[str, Any]) -> dict[str, Any]:
    """Batched implicit rewards (2 adapters + 4 soups, reference log-probs once, shared prompts run once) and
    one-response-at-a-time scoring (the reference recomputed per judge), each against the float64 truth of
    :func:`scoring_truth` for the same pairs.

    The error model. Both paths compute the same sums of the same log-probs in ``bank``'s dtype; they differ only
    in reduction order (batch shapes, padding, a KV cache, chunked log-softmax), so in float32 they must be about
    equally far from the truth. A fixed absolute tolerance cannot say that: the rounding of a summed log-prob
    grows with the model (depth, width, vocabulary) and with the sum's size (a reward is ``beta`` times the
    difference of two sums of tens of log-probs, which reach -762 nats on the random 1B model), so 1e-4 held for
    the tiny model and not for the 1B one, on CUDA and on the CPU alike. A real bug -- a misaligned token, the wrong
    adapter on a row, a wrong mask -- moves a reward by about ``beta`` times one token's log-prob (or one token's
    reward), orders of magnitude above rounding.

    float32 ``ok`` requires three things. Every reward is finite. The batched path's largest error (over all
    judges and responses) is at most ``allowed_error``: :data:`SCORING_FLOAT32_RATIO` times the one-at-a-time
    path's largest error (two samples of one rounding process; measured ratios were 0.8-1.2), or, if larger, the
    textbook bound of float32 summation alone, ``2 (n - 1) u beta S`` (two sums of ``n`` negative log-probs, ``n``
    the longest response, ``S`` the largest |summed log-prob|, unit roundoff ``u = 2**-24``), which covers a small
    model on which both errors are near zero. And ``allowed_error`` lies at least :data:`SCORING_MIN_MARGIN` times
    below ``bug_scale``, the smaller of ``beta`` times the mean per-token |log-prob| and the mean per-token
    |reward| of the truth: a check that would pass a one-token bug is no check. bfloat16 (or float16): both paths'
    errors are reported, so a reader can tell whether batching makes them worse or the dtype itself is that
    coarse; only finiteness is required (``ok`` None, or False when a reward is not finite).

    Errors are absolute (reward units) and relative to ``beta * |largest summed log-prob|`` (``*_rel``).
    """
    from sipo.scoring.implicit import implicit_rewards, implicit_rewards_reference

    batched = implicit_rewards(bank, tokenizer, prompts, responses, JUDGES, beta=BETA, batch_size=batch_size)
    single = implicit_rewards_reference(bank, tokenizer, prompts, responses, JUDGES, beta=BETA)
    true_rewards = truth["rewards"]
    batched_error, single_error = _reward_errors(batched, true_rewards), _reward_errors(single, true_rewards)
    finite = math.isfinite(batched_error) and math.isfinite(single_error)
    logp_scale = BETA * max(abs(v) for values in truth["logps"].values() for v in values)
    tokens = truth["response_tokens"]
    per_token_logp = BETA * sum(abs(v) / n for values in truth["logps"].values() for v, n in zip(values, tokens)) \
        / sum(len(values) for values in truth["logps"].values())
    per_token_reward = sum(abs(v) / n for values in true_rewards.values() for v, n in zip(values, tokens)) \
        / sum(len(values) for values in true_rewards.values())
    bug_scale = min(per_token_logp, per_token_reward)
    dtype = _where(bank)["dtype"]
    result: dict[str, Any] = {
        **_where(bank),
        "responses": len(responses),
        "distinct_prompts": len(set(prompts)),
        "judges": len(JUDGES),
        "batch_size": batch_size,
        "truth": f"float64, one at a time, on {truth['device']}",
        "max_abs_reward": max(abs(v) for values in true_rewards.values() for v in values),
        "max_abs_summed_logprob": logp_scale / BETA,
        "batched_error": batched_error,
        "one_at_a_time_error": single_error,
        "batched_error_rel": batched_error / logp_scale,
        "one_at_a_time_error_rel": single_error / logp_scale,
        "batched_vs_one_at_a_time": batched_error / single_error if single_error else None,
        "max_abs_diff": _reward_errors(batched, {j: single[j].tolist() for j in JUDGES}),
        "bug_scale": bug_scale,
        "bug_scale_note": "min(beta * mean per-token |log-prob|, mean per-token |reward|) of the truth",
        "finite": finite,
    }
    if dtype == "float32":
        summation_bound = 2 * (max(tokens) - 1) * FLOAT32_UNIT_ROUNDOFF * logp_scale
        allowed = max(SCORING_FLOAT32_RATIO * single_error, summation_bound)
        result.update(
            summation_bound=summation_bound,
            allowed_error=allowed,
            rule=f"batched_error <= allowed_error = max({SCORING_FLOAT32_RATIO:g} x one_at_a_time_error, "
                 f"summation_bound = 2 (n - 1) 2**-24 beta max|summed log-prob|), and allowed_error <= "
                 f"bug_scale / {SCORING_MIN_MARGIN:g}",
            margin=bug_scale / allowed if allowed else None,
            ok=bool(finite and batched_error <= allowed and allowed * SCORING_MIN_MARGIN <= bug_scale),
        )
    else:
        result["ok"] = None if finite else False
    return result


def check_soup_maths(device: str | torch.device, seed: int = 0, root: str | Path | None = None) -> dict[str, Any]:
    """The soup ``sum_o w_o dW_o`` computed on ``device`` in float32 against float64 on the CPU: the factors'
    interpolation alone (two adapters of ranks 4 and 2 with different scalings and target modules), and an
    :class:`AdapterBank` soup's logits against the base model with the hand-merged update ``W + sum_o w_o dW_o``.
    ``ok``: relative errors below 1e-5 (weights) and 1e-4 (logits). The bank's adapters are saved in a temporary
    folder (under ``root`` when given)."""
    from sipo.models.adapters import BASE, interpolate_lora, lora_delta_weights
    from sipo.models.loading import build_tokenizer

    generator = torch.Generator().manual_seed(seed)

    def adapter(rank: int, modules: Sequence[str]) -> dict[str, torch.Tensor]:
        state = {}
        for module in modules:
            state[f"{module}.lora_A.weight"] = torch.randn(rank, 12, generator=generator)
            state[f"{module}.lora_B.weight"] = torch.randn(10, rank, generator=generator)
        return state

    a, c = adapter(4, ["l0.q_proj", "l0.v_proj"]), adapter(2, ["l0.q_proj", "l1.o_proj"])
    scalings, weights = {"a": 2.0, "c": 0.5}, {"a": 0.4, "c": 0.6}
    soup = interpolate_lora({"a": {k: v.to(device) for k, v in a.items()},
                             "c": {k: v.to(device) for k, v in c.items()}}, scalings, weights)
    got = lora_delta_weights(soup.state_dict, soup.scaling)
    expected: dict[str, torch.Tensor] = {}
    for name, state in (("a", a), ("c", c)):
        for module, delta in lora_delta_weights({k: v.double() for k, v in state.items()}, scalings[name]).items():
            expected[module] = expected.get(module, 0) + weights[name] * delta
    delta_error = max(float((got[m].double().cpu() - expected[m]).abs().max() / expected[m].abs().max())
                      for m in expected)
    on_device = all(t.device.type == torch.device(device).type for t in soup.state_dict.values())

    # A soup in an AdapterBank on the device: its logits are those of the base model with the merged update.
    import tempfile

    tokenizer = build_tokenizer("byte")
    model = random_llama(tokenizer, seed, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, device=device)
    with tempfile.TemporaryDirectory(prefix="sipo-soup-", dir=root) as tmp:
        folders = random_lora_adapters(model, ["x", "y"], tmp, seed + 1)
        bank = make_bank(model, folders, "float32", soups=False)
        bank.add_soup("xy", {"x": 0.3, "y": 0.7})
        ids = torch.tensor([tokenizer("A soup of two adapters.")["input_ids"]], device=device)
        with torch.no_grad():
            soup_logits = bank.forward(["xy"], input_ids=ids).logits.double().cpu()
            base_logits = bank.forward([BASE], input_ids=ids).logits.double().cpu()
            merged = copy.deepcopy(model).double()
            for name, w in (("x", 0.3), ("y", 0.7)):
                state = {k.removeprefix("base_model.model."): v.double()
                         for k, v in bank.adapter_state_dict(name).items()}
                for module, delta in lora_delta_weights(state, bank.adapter_scaling(name)).items():
                    merged.get_submodule(module).weight.add_(w * delta.to(merged.device))
            merged_logits = merged(input_ids=ids).logits.cpu()
    logit_error = float((soup_logits - merged_logits).abs().max() / merged_logits.abs().max())
    soup_effect = float((soup_logits - base_logits).abs().max() / merged_logits.abs().max())
    return {
        "device": str(torch.device(device)),
        "delta_rel_error": delta_error,
        "soup_rank": soup.rank,
        "soup_on_device": on_device,
        "logits_rel_error": logit_error,
        "soup_changes_logits_rel": soup_effect,
        "ok": delta_error < 1e-5 and logit_error < 1e-4 and on_device and soup_effect > 1e-3,
    }


TRAIN_WORDS = "user assistant : tell me about ava bo cy . likes red blue green cats dogs and is tall short".split()
TRAIN_EXAMPLES = [
    {"prompt": "user : tell me about ava . assistant :", "chosen": "ava likes red .",
     "rejected": "ava likes blue cats and dogs ."},
    {"prompt": "user : tell me about bo . assistant :", "chosen": "bo is tall .",
     "rejected": "bo is short and likes green ."},
    {"prompt": "user : tell me about cy . assistant :", "chosen": "cy likes cats .",
     "rejected": "cy likes dogs and is tall ."},
    {"prompt": "user : tell me about ava . assistant :", "chosen": "ava is short .",
     "rejected": "ava is tall and likes red ."},
]


def tiny_model_folder(out: str | Path, seed: int = 0) -> tuple[Path, Any]:
    """A 2-layer, 32-wide random Llama and a word tokenizer over :data:`TRAIN_WORDS`, saved together (float32)."""
    from sipo.models.loading import build_tokenizer

    out = Path(out)
    tokenizer = build_tokenizer("word", [" ".join(TRAIN_WORDS)])
    model = random_llama(tokenizer, seed, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, tokenizer


def check_training_step(root: str | Path, device: str, dtype: str, *, nll_alpha: float = 0.0) -> dict[str, Any]:
    """One optimizer step of LoRA DPO (``nll_alpha`` 0) or of re-alignment (DPO + ``nll_alpha`` NLL from, and
    referenced to, a saved adapter) through sipo's trl trainer, on ``device`` in ``dtype``.

    ``ok``: one step ran with a finite loss, the trained LoRA factors changed and the base weights did not, the
    model sat on ``device`` with base weights in ``dtype``; for re-alignment the step-0 implicit rewards are 0 (policy
    == reference) and the step-0 loss is log 2 + alpha * NLL, both within bfloat16 rounding (1e-2) or 1e-5."""
    from sipo.training.dpo import build_dpo_trainer, save_adapter
    from sipo.training.settings import AdapterTraining, LossSpec, ModelSettings

    root = Path(root)
    base, tokenizer = tiny_model_folder(root / "base")
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    settings = AdapterTraining(model=ModelSettings(str(base), device=device, dtype=dtype), beta=BETA, lora=lora,
                               train=TrainSettings(learning_rate=5e-2, max_steps=1, batch_size=2, epochs=1.0),
                               seed=0, logging_steps=1)
    data = dict(tokenizer=tokenizer, examples=TRAIN_EXAMPLES)
    if nll_alpha:
        first = build_dpo_trainer(settings, output_dir=root / "scratch0", **data)
        first.train()
        save_adapter(first, root / "round1")
        del first
        realign = dataclasses.replace(settings, lora=None, init_adapter=str(root / "round1"), reference="init",
                                      loss=LossSpec("dpo_nll", nll_alpha=nll_alpha))
        trainer = build_dpo_trainer(realign, output_dir=root / "scratch1", **data)
    else:
        trainer = build_dpo_trainer(settings, output_dir=root / "scratch1", **data)
    before = {n: p.detach().float().cpu().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().float().cpu() for n, p in trainer.model.named_parameters()}
    trained = [n for n in before if "lora_B" in n and ".ref." not in n]
    frozen = [n for n in before if "lora_" not in n]
    base_param = trainer.model.get_input_embeddings().weight
    record = trainer.step_records[0] if trainer.step_records else {}
    loss = float(record.get("loss", math.nan))
    tolerance = 1e-2 if dtype_of(dtype) != torch.float32 else 1e-5
    result: dict[str, Any] = {
        "device": str(base_param.device),
        "base_dtype": dtype_name(base_param.dtype),
        "lora_dtype": dtype_name(trainer.model.get_parameter(trained[0]).dtype) if trained else None,
        "loss": "dpo_nll" if nll_alpha else "dpo",
        "steps": trainer.state.global_step,
        "step0_loss": loss,
        "lora_changed": any(not torch.equal(before[n], after[n]) for n in trained),
        "base_unchanged": all(torch.equal(before[n], after[n]) for n in frozen),
    }
    ok = (result["steps"] == 1 and math.isfinite(loss) and result["lora_changed"] and result["base_unchanged"]
          and base_param.device.type == torch.device(device).type and result["base_dtype"] == dtype_name(dtype))
    if nll_alpha:
        nll = float(record.get("nll", math.nan))
        rewards = [float(record.get(k, math.nan)) for k in ("rewards/chosen", "rewards/rejected")]
        result.update(step0_nll=nll, step0_rewards=rewards, expected_step0_loss=math.log(2) + nll_alpha * nll)
        ok = ok and all(abs(r) <= tolerance for r in rewards) and \
            abs(loss - result["expected_step0_loss"]) <= tolerance * max(1.0, abs(loss))
    result["ok"] = bool(ok)
    return result
