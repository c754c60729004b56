"""Multi-objective decoding (MOD; Shi et al. 2024, "Decoding-Time Language Model Alignment with Multiple
Objectives"), reverse-KL form, as SIPO uses it.

At each step the next-token scores are ``f(v) = sum_o w_o * log_softmax(logits_o)(v)`` over the objectives'
adapters; greedy decoding takes ``argmax f``, sampling draws from ``softmax(f / T)`` restricted to the top-p
nucleus. With a one-hot ``w`` this is plain decoding of that adapter.

:func:`mod_generate` is the fast path: a batch of prompts is expanded to one row per (prompt, adapter with non-zero
weight), all rows run in ONE forward per step (peft mixed-adapter batches) with a KV cache, and finished prompts
leave the batch. :func:`mod_generate_reference` is the reference code's approach (batch 1, one forward per adapter
per step plus an unused base forward), kept for tests and benchmarks.

Example::

    texts = mod_generate(bank, tokenizer, [format_prompt(tokenizer, p, "chat") for p in prompts],
                         [{"correctness": 0.2, "verbosity": 0.8}] * len(prompts), max_new_tokens=128)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sipo.logging_utils import progress_bar
from sipo.models.adapters import BASE, AdapterBank, as_bank
from sipo.models.loading import decode_response, encode_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


logger = logging.getLogger(__name__)


def combine_logprobs(logps: Tensor, weights: Tensor) -> Tensor:
    """MOD next-token scores ``f = sum_a w_a * log_softmax(logps_a)`` (Shi et al. 2024, reverse-KL form).

    Args:
        logps: next-token logits or log-probs of each adapter (normalised here; log_softmax of log-probs is a
            no-op). Shape: (num_adapters, batch_size, vocab_size).
        weights: one weight per adapter, shared by the batch (shape: (num_adapters,)) or per row (shape:
            (batch_size, num_adapters)). A zero weight contributes exactly 0, even where the log-prob is ``-inf``,
            so unused slots of a ragged batch may hold anything finite or not.

    Returns:
        Scores ``f``, float32. Shape: (batch_size, vocab_size). They are not normalised; greedy decoding takes
        their argmax and sampling their softmax.
    """
    if logps.dim() != 3:
        raise ValueError(f"logps must have shape (adapters, batch, vocab), got {tuple(logps.shape)}")
    num_adapters, batch_size, _ = logps.shape
    logp = torch.log_softmax(logps.float(), dim=-1)
    weights = weights.to(device=logp.device, dtype=torch.float32)
    if weights.dim() == 1:
        if weights.shape[0] != num_adapters:
            raise ValueError(f"{weights.shape[0]} weights for {num_adapters} adapters")
        per_row = weights[:, None].expand(num_adapters, batch_size)
    elif weights.dim() == 2:
        if tuple(weights.shape) != (batch_size, num_adapters):
            raise ValueError(f"per-row weights must have shape ({batch_size}, {num_adapters}), got {tuple(weights.shape)}")
        per_row = weights.T
    else:
        raise ValueError("weights must have shape (adapters,) or (batch, adapters)")
    terms = per_row[:, :, None] * logp
    terms = torch.where(per_row[:, :, None] == 0, torch.zeros_like(terms), terms)
    return terms.sum(dim=0)


def select_next_tokens(
    scores: Tensor, *, temperature: float, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """Greedy (``temperature == 0``: argmax) or nucleus sampling from ``softmax(scores / temperature)``.

    Top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one).
    Shape: scores (batch_size, vocab_size) -> (batch_size,).
    """
    if temperature <= 0:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = torch.where(mass_before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _active_mix(mix: Mapping[str, float]) -> list[tuple[str, float]]:
    active = [(name, float(w)) for name, w in mix.items() if w != 0]
    if not active:
        raise ValueError(f"a decoding mix needs a non-zero weight, got {dict(mix)}")
    if any(w < 0 for _, w in active):
        raise ValueError(f"decoding weights must be non-negative, got {dict(mix)}")
    return active


def stop_token_ids(bank: AdapterBank, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Token ids that end a response: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    generation_config = getattr(bank.base_model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(i) for i in eos)
    if not ids:
        raise ValueError("neither the tokenizer nor the model defines an EOS token")
    return ids


@torch.no_grad()
def _decode_batch(
    bank: AdapterBank,
    prompt_ids: Sequence[list[int]],
    mixes: Sequence[list[tuple[str, float]]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    stop_ids: set[int],
    pad_id: int,
) -> list[list[int]]:
    device = bank.device
    num_prompts = len(prompt_ids)
    max_adapters = max(len(mix) for mix in mixes)
    row_prompt, row_slot, row_adapter, row_ids = [], [], [], []
    weights = torch.zeros(num_prompts, max_adapters)
    entries = []
    for p, mix in enumerate(mixes):
        for slot, (name, w) in enumerate(mix):
            entries.append((p, slot, name))
            weights[p, slot] = w
    # Rows are grouped by adapter, so each adapter's rows are one contiguous slice of the batch (AdapterBank.forward
    # then adds each LoRA update to a slice); dropping finished prompts keeps the groups contiguous.
    adapter_order = {name: k for k, name in enumerate(dict.fromkeys(name for _, _, name in entries))}
    for p, slot, name in sorted(entries, key=lambda e: (adapter_order[e[2]], e[0])):
        row_prompt.append(p)
        row_slot.append(slot)
        row_adapter.append(name)
        row_ids.append(prompt_ids[p])
    num_rows = len(row_ids)
    width = max(len(ids) for ids in row_ids)
    input_ids = torch.full((num_rows, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((num_rows, width), dtype=torch.long)
    for r, ids in enumerate(row_ids):
        input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[r, width - len(ids):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    row_prompt_t = torch.tensor(row_prompt, device=device)
    row_slot_t = torch.tensor(row_slot, device=device)
    weights = weights.to(device)

    cache = bank.new_cache()
    cache_arg = bank.cache_argument
    alive = list(range(num_prompts))  # original index of each prompt still decoding
    generated: list[list[int]] = [[] for _ in range(num_prompts)]
    for _ in range(max_new_tokens):
        out = bank.forward(
            row_adapter,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{cache_arg: cache},
        )
        logits = out.logits[:, -1, :].float()
        dense = logits.new_zeros((max_adapters, len(alive), logits.shape[-1]))
        dense[row_slot_t, row_prompt_t] = logits
        scores = combine_logprobs(dense, weights)
        next_tokens = select_next_tokens(scores, temperature=temperature, top_p=top_p, generator=generator)
        tokens = next_tokens.tolist()  # the step's one device-to-host copy; the stop test runs on the host
        finished_list = [token in stop_ids for token in tokens]
        for p, token, done in zip(alive, tokens, finished_list):
            if not done:
                generated[p].append(token)
        if all(finished_list):
            break
        if any(finished_list):
            # Finished prompts leave the batch: their rows are dropped from the inputs and the KV cache.
            finished = torch.tensor(finished_list, device=device)
            keep_prompt = (~finished).nonzero().squeeze(-1)
            new_index = torch.full((len(alive),), -1, dtype=torch.long, device=device)
            new_index[keep_prompt] = torch.arange(len(keep_prompt), device=device)
            keep_rows = (~finished[row_prompt_t]).nonzero().squeeze(-1)
            cache.batch_select_indices(keep_rows)
            attention_mask = attention_mask[keep_rows]
            position_ids = position_ids[keep_rows]
            row_slot_t = row_slot_t[keep_rows]
            row_prompt_t = new_index[row_prompt_t[keep_rows]]
            row_adapter = [row_adapter[r] for r in keep_rows.tolist()]
            weights = weights[keep_prompt]
            next_tokens = next_tokens[keep_prompt]
            alive = [alive[i] for i in keep_prompt.tolist()]
        input_ids = next_tokens[row_prompt_t][:, None]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return generated


def mod_generate_token_ids(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    mixes: Sequence[Mapping[str, float]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    progress: bool = True,
) -> list[list[int]]:
    """:func:`mod_generate` returning the generated token ids of each prompt (stop token excluded)."""
    if len(prompts) != len(mixes):
        raise ValueError(f"{len(prompts)} prompts but {len(mixes)} mixes")
    if batch_size < 1 or max_new_tokens < 0:
        raise ValueError("batch_size must be >= 1 and max_new_tokens >= 0")
    bank = as_bank(bank_or_model)
    active = [_active_mix(mix) for mix in mixes]
    bank.check_names(sorted({name for mix in active for name, _ in mix}))
    stop_ids = stop_token_ids(bank, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    encoded = [encode_prompt(tokenizer, text, None) for text in prompts]
    if max_prompt_tokens is not None:
        too_long = sum(len(ids) > max_prompt_tokens for ids in encoded)
        if too_long:
            logger.warning("%d of %d prompts are longer than %d tokens; their start is cut off",
                           too_long, len(prompts), max_prompt_tokens)
            encoded = [ids[-max_prompt_tokens:] for ids in encoded]
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=bank.device)
        generator.manual_seed(seed)
    responses: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0:
        return responses
    # Prompts of similar length share a batch, so that little of it is padding.
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    starts = range(0, len(prompts), batch_size)
    for start in progress_bar(starts, len(starts), progress, "MOD decoding"):
        idx = order[start:start + batch_size]
        batch_ids = _decode_batch(
            bank,
            [encoded[i] for i in idx],
            [active[i] for i in idx],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            stop_ids=stop_ids,
            pad_id=pad_id,
        )
        for i, ids in zip(idx, batch_ids):
            responses[i] = ids
    return responses


def mod_generate(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    mixes: Sequence[Mapping[str, float]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Decode each prompt with MOD over the adapters of its mix, batched.

    Args:
        bank_or_model: an :class:`AdapterBank`, a ``PeftModel`` or a plain causal LM (mix ``{"__base__": 1}``).
        tokenizer: the model's tokenizer (see :func:`sipo.models.loading.encode_prompt`).
        prompts: formatted prompts (:func:`sipo.models.loading.format_prompt` already applied).
        mixes: one ``{adapter name: weight}`` per prompt. Zero weights are dropped; a one-hot mix is plain decoding
            of that adapter; ``"__base__"`` is the base model. Weights are used as given (MOD does not need them to
            sum to 1, the config checks that they do).
        max_new_tokens: the most tokens generated per prompt (the stop token not counted).
        temperature: 0 for greedy decoding (the paper's setting), else the sampling temperature.
        top_p: nucleus mass for sampling.
        batch_size: prompts per batch; each batch runs ``sum(active adapters of its prompts)`` rows per forward.
        seed: seeds the sampling generator (one per call, consumed batch after batch; prompts are batched longest
            first): the same call with the same seed and batch size gives the same texts.
        max_prompt_tokens: longer prompts keep their last tokens (callers that drop long prompts check first).
        progress: show a progress bar over batches (only when stderr is a terminal).

    Returns:
        The decoded responses, in prompt order, without the stop token or special tokens
        (:func:`mod_generate_token_ids` gives the token ids).
    """
    ids = mod_generate_token_ids(
        bank_or_model,
        tokenizer,
        prompts,
        mixes,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        max_prompt_tokens=max_prompt_tokens,
        progress=progress,
    )
    return [decode_response(tokenizer, seq) for seq in ids]


@torch.no_grad()
def mod_generate_reference_token_ids(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    mixes: Sequence[Mapping[str, float]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    base_forward: bool = True,
) -> list[list[int]]:
    """MOD as the reference code runs it: one prompt at a time, one forward (with its own KV cache) per adapter
    per step, plus a base-model forward whose output is not used (``base_forward``). Slow; for tests and
    benchmarks. Arguments and result as in :func:`mod_generate_token_ids`.
    """
    if len(prompts) != len(mixes):
        raise ValueError(f"{len(prompts)} prompts but {len(mixes)} mixes")
    bank = as_bank(bank_or_model)
    device = bank.device
    stop_ids = stop_token_ids(bank, tokenizer)
    cache_arg = bank.cache_argument
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    responses: list[list[int]] = []
    for text, mix in zip(prompts, mixes):
        active = _active_mix(mix)
        names = [name for name, _ in active]
        if base_forward and BASE not in names:
            names.append(BASE)
        bank.check_names(names)
        weights = torch.tensor([w for _, w in active], device=device)
        caches = {name: bank.new_cache() for name in names}
        tokens = torch.tensor([encode_prompt(tokenizer, text, max_prompt_tokens)], device=device)
        generated: list[int] = []
        for _ in range(max_new_tokens):
            logits = {}
            for name in names:
                with bank.only(name) as model:
                    out = model(input_ids=tokens, use_cache=True, **{cache_arg: caches[name]})
                logits[name] = out.logits[:, -1, :]
            stacked = torch.stack([logits[name] for name, _ in active])
            scores = combine_logprobs(stacked, weights)
            token = int(select_next_tokens(scores, temperature=temperature, top_p=top_p, generator=generator)[0])
            if token in stop_ids:
                break
            generated.append(token)
            tokens = torch.tensor([[token]], device=device)
        responses.append(generated)
    return responses


def mod_generate_reference(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    mixes: Sequence[Mapping[str, float]],
    **kwargs: Any,
) -> list[str]:
    """Text of :func:`mod_generate_reference_token_ids` (same arguments)."""
    ids = mod_generate_reference_token_ids(bank_or_model, tokenizer, prompts, mixes, **kwargs)
    return [decode_response(tokenizer, seq) for seq in ids]
