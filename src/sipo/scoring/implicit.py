"""Implicit rewards of DPO-trained adapters: ``r_o(x, y) = beta * (log pi_o(y|x) - log pi_ref(y|x))``.

Log-probs are summed over the response tokens, EOS included, with the prompt masked (docs/method.md §1; Rafailov
et al. 2023, eq. 5). :func:`implicit_rewards` computes the reference log-probs once and scores every judge adapter in
the same batched forward passes (one row per (response, adapter), peft mixed-adapter batches); responses that share
a prompt share that prompt's forward pass (a KV cache). :func:`implicit_rewards_reference` is the reference code's
approach (one response at a time, the reference model recomputed for each judge), kept for tests and benchmarks.

Example::

    rewards = implicit_rewards(bank, tokenizer, formatted_prompts, responses, ["correctness", "verbosity"],
                               beta=0.1, batch_size=8, max_prompt_tokens=256, max_response_tokens=256)
    rewards["correctness"]  # Shape: (num_responses,)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sipo.logging_utils import progress_bar
from sipo.models.adapters import BASE, AdapterBank, as_bank
from sipo.models.loading import encode_prompt_response

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def implicit_reward(policy_logps: Tensor, reference_logps: Tensor, beta: float) -> Tensor:
    """DPO implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))``. Shape: (n,), (n,) -> (n,)."""
    return beta * (policy_logps - reference_logps)


def _encode_all(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_prompt_tokens: int | None,
    max_response_tokens: int | None,
) -> list[tuple[list[int], list[int]]]:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = []
    for prompt, response in zip(prompts, responses):
        prompt_ids, response_ids = encode_prompt_response(
            tokenizer, prompt, response, max_prompt_tokens, max_response_tokens
        )
        if not response_ids:
            raise ValueError("max_response_tokens must be at least 1")
        encoded.append((prompt_ids, response_ids))
    return encoded


_ROWS_PER_CHUNK = 8
"""Rows whose log-softmax is computed at once (float32), so a batch's logits are not copied whole."""


def _masked_logprob_sums(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """sum_j mask[:, j] * log_softmax(logits)[:, j, targets[:, j]] in float32. Shapes: (n, T, V), (n, T), (n, T)."""
    logits = logits.float()
    token_logps = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
    return torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(dim=-1)


def _pad(seqs: Sequence[list[int]], pad_id: int, left: bool) -> tuple[Tensor, Tensor]:
    """(ids, attention mask) of ``seqs`` padded to one width, on the left or the right. Shape: (len(seqs), width)."""
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[r, cols] = torch.tensor(seq, dtype=torch.long)
        mask[r, cols] = 1
    return ids, mask


def _chunked_sums(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """:func:`_masked_logprob_sums` a few rows at a time (on the CPU). Shapes: (n, T, V), (n, T), (n, T) -> (n,)."""
    rows = torch.arange(logits.shape[0], device=logits.device).split(_ROWS_PER_CHUNK)
    return torch.cat([_masked_logprob_sums(logits[r], targets[r], mask[r]) for r in rows]).cpu()


def _batch_logprobs(
    bank: AdapterBank, names: list[str], pairs: list[tuple[list[int], list[int]]], pad_id: int
) -> Tensor:
    """Summed response log-probs of ``pairs`` under each name, one forward of ``len(names) * len(pairs)`` rows
    (name-major). Pairs are left-padded, so every response ends in the last column and only the logits of the last
    ``max response length + 1`` positions are computed. Shape: (len(names) * len(pairs),)."""
    device = bank.device
    input_ids, attention_mask = _pad([prompt + response for prompt, response in pairs], pad_id, left=True)
    width = input_ids.shape[1]
    response_lengths = torch.tensor([len(response) for _, response in pairs], device=device)
    max_response = int(response_lengths.max())
    input_ids = input_ids.to(device).repeat(len(names), 1)
    attention_mask = attention_mask.to(device).repeat(len(names), 1)
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    out = bank.forward(
        [name for name in names for _ in pairs],
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=max_response + 1,
    )
    # Logits at column j predict the token at column j + 1: the kept window's first max_response logits predict
    # the last max_response tokens, where every response lies (right-aligned).
    targets = input_ids[:, width - max_response:]
    column = torch.arange(max_response, device=device)[None, :]
    in_response = column >= (max_response - response_lengths.repeat(len(names)))[:, None]
    return _chunked_sums(out.logits[:, -(max_response + 1):-1, :], targets, in_response)


_CHUNK_MIN_SAVING = {"cpu": 0.1}
"""Device type -> the share of a response pass's token positions (rows x width) that one more chunk must save: on
the CPU, time grows with the positions computed and a forward's fixed cost is small; on accelerators a small
batch's forward is latency-bound, so the response pass runs whole there (a device type not listed)."""


def _response_chunks(lengths: Sequence[int], width: int, min_saving: float | None) -> list[tuple[int, int]]:
    """Column ranges ``[a, b)`` covering ``[0, width)`` in which a right-padded response pass runs, each range on
    the rows whose response is longer than ``a`` only: the fewest (rows x columns) positions, each range after the
    first charged ``min_saving`` of the single range's positions (no split without ``min_saving``)."""
    if min_saving is None or width <= 1:
        return [(0, width)]
    cuts = sorted({0, width, *(length for length in lengths if 0 < length < width)})
    longer = {cut: sum(length > cut for length in lengths) for cut in cuts}
    charge = min_saving * len(lengths) * width
    # best[i]: the cost of columns [0, cuts[i]) with a range ending at cuts[i]; back[i]: where that range starts.
    best = [0.0] + [float("inf")] * (len(cuts) - 1)
    back = [0] * len(cuts)
    for i in range(1, len(cuts)):
        for k in range(i):
            cost = best[k] + longer[cuts[k]] * (cuts[i] - cuts[k]) + (charge if k else 0.0)
            if cost < best[i]:
                best[i], back[i] = cost, k
    ranges = []
    i = len(cuts) - 1
    while i:
        ranges.append((cuts[back[i]], cuts[i]))
        i = back[i]
    return ranges[::-1]


def _batch_logprobs_shared_prompts(
    bank: AdapterBank, names: list[str], pairs: list[tuple[list[int], list[int]]], pad_id: int
) -> Tensor:
    """:func:`_batch_logprobs` for a batch in which several responses share a prompt: each distinct prompt runs
    once per name (left-padded, with a KV cache), the cache rows are copied to that prompt's responses, and the
    responses (right-padded) run on top of it. Same result, fewer token positions computed.

    On the CPU the response pass may run in column ranges, each on the rows whose response reaches it only (the
    cache of the earlier columns kept for them), so that short responses do not pay for the longest one's padding
    (:func:`_response_chunks`)."""
    device = bank.device
    prompts = list(dict.fromkeys(tuple(prompt) for prompt, _ in pairs))
    prompt_of = {prompt: u for u, prompt in enumerate(prompts)}
    prompt_ids, prompt_mask = _pad([list(p) for p in prompts], pad_id, left=True)
    prompt_ids = prompt_ids.to(device).repeat(len(names), 1)
    prompt_mask = prompt_mask.to(device).repeat(len(names), 1)
    cache = bank.new_cache()
    cache_arg = bank.cache_argument
    first = bank.forward(
        [name for name in names for _ in prompts],
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(dim=-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
        **{cache_arg: cache},
    ).logits[:, -1, :]  # the last prompt position predicts the first response token
    # Row (name k, pair b) of the response pass continues row (name k, prompt of b) of the prompt pass.
    pair_prompt = torch.tensor([prompt_of[tuple(prompt)] for prompt, _ in pairs], device=device)
    source = (torch.arange(len(names), device=device)[:, None] * len(prompts) + pair_prompt[None, :]).reshape(-1)
    cache.batch_select_indices(source)
    response_ids, response_mask = _pad([response for _, response in pairs], pad_id, left=False)
    response_ids = response_ids.to(device).repeat(len(names), 1)
    response_mask = response_mask.to(device).repeat(len(names), 1)
    prompt_lengths = torch.tensor([len(prompt) for prompt, _ in pairs], device=device).repeat(len(names))
    width = response_ids.shape[1]
    positions = prompt_lengths[:, None] + torch.arange(width, device=device)[None, :]
    attention_mask = torch.cat([prompt_mask[source], response_mask], dim=-1)
    prompt_width = prompt_mask.shape[1]
    mask = response_mask.bool()
    row_names = [name for name in names for _ in pairs]
    sums = _chunked_sums(first[source][:, None, :], response_ids[:, :1], mask[:, :1])
    lengths = [len(response) for _, response in pairs]
    rows = torch.arange(len(row_names), device=device)  # the rows of the cache, in the full batch's numbering
    for start, stop in _response_chunks(lengths, width, _CHUNK_MIN_SAVING.get(device.type)):
        if start:  # only the rows whose response is longer than `start` go on
            keep = [b for b, length in enumerate(lengths) if length > start]
            active = (torch.arange(len(names), device=device)[:, None] * len(pairs)
                      + torch.tensor(keep, device=device)[None, :]).reshape(-1)
            cache.batch_select_indices(torch.searchsorted(rows, active))
            rows = active
        logits = bank.forward(
            [row_names[r] for r in rows.tolist()],
            input_ids=response_ids[rows, start:stop],
            attention_mask=attention_mask[rows, :prompt_width + stop],
            position_ids=positions[rows, start:stop],
            use_cache=True,
            **{cache_arg: cache},
        ).logits
        # Logits at column j predict the token at column j + 1 (the last column predicts nothing).
        end = min(stop, width - 1)
        if end > start:
            sums.index_add_(0, rows.cpu(), _chunked_sums(
                logits[:, :end - start, :], response_ids[rows, start + 1:end + 1], mask[rows, start + 1:end + 1]
            ))
    return sums


@torch.no_grad()
def sequence_logprobs(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    adapter_names: Sequence[str],
    *,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> dict[str, Tensor]:
    """Summed log-probs of each response given its prompt under each named adapter, in batched passes.

    Each batch of ``batch_size`` (prompt, response) pairs becomes ``batch_size * len(adapter_names)`` rows of one
    forward pass (left-padded, so every response ends in the last column and only the logits of the last
    ``max response length + 1`` positions are computed). Pairs are batched longest first to limit padding. When
    prompts repeat (several responses to one prompt), pairs are batched by prompt and each distinct prompt of a
    batch is run once per adapter, its KV cache shared by its responses; on the CPU the responses' pass then skips
    most of the padding after short responses (:func:`_response_chunks`).

    Args:
        bank_or_model: an :class:`AdapterBank`, a ``PeftModel`` or a plain causal LM.
        tokenizer: the model's tokenizer; pairs are tokenized by :func:`sipo.models.loading.encode_prompt_response`.
        prompts: formatted prompts (template applied).
        responses: one response per prompt.
        adapter_names: adapters to score under; ``"__base__"`` is the base (reference) model.
        batch_size: pairs per forward pass.
        desc: what the log lines of a long scoring (:func:`sipo.logging_utils.progress_bar`: batches done and the
            time left) call it.

    Returns:
        ``{adapter name: summed log-probs}``, float32 on the CPU. Shape: (num_responses,) each.
    """
    bank = as_bank(bank_or_model)
    names = list(dict.fromkeys(adapter_names))
    bank.check_names(names)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    encoded = _encode_all(tokenizer, prompts, responses, max_prompt_tokens, max_response_tokens)
    n = len(encoded)
    results = {name: torch.zeros(n, dtype=torch.float32) for name in names}
    if n == 0:
        return results
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if len({tuple(prompt) for prompt, _ in encoded}) < n:
        # Responses of one prompt next to each other (longest prompts first, then longest responses).
        order = sorted(range(n), key=lambda i: (-len(encoded[i][0]), encoded[i][0], -len(encoded[i][1]), i))
    else:
        order = sorted(range(n), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    starts = range(0, n, batch_size)
    for start in progress_bar(starts, len(starts), progress, desc):
        batch = order[start:start + batch_size]
        pairs = [encoded[i] for i in batch]
        if len({tuple(prompt) for prompt, _ in pairs}) < len(pairs):
            sums = _batch_logprobs_shared_prompts(bank, names, pairs, pad_id)
        else:
            sums = _batch_logprobs(bank, names, pairs, pad_id)
        index = torch.tensor(batch)
        for k, name in enumerate(names):
            results[name][index] = sums[k * len(batch):(k + 1) * len(batch)]
    return results


def implicit_rewards(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    judges: Sequence[str],
    *,
    beta: float,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
    reference: str = BASE,
    progress: bool = False,
    desc: str = "scoring",
) -> dict[str, Tensor]:
    """``{judge: beta * (log pi_judge(y|x) - log pi_ref(y|x))}`` for every judge adapter, the reference log-probs
    computed once, all adapters in the same batched passes (:func:`sequence_logprobs`).

    Args:
        judges: adapter names (objectives' adapters or soups).
        beta: the DPO beta the judges were trained with.
        reference: the reference model's adapter name, ``"__base__"`` (the SFT model) by default.
        Others: as in :func:`sequence_logprobs`.

    Returns:
        Shape: (num_responses,) per judge, float32 on the CPU.
    """
    logps = sequence_logprobs(
        bank_or_model,
        tokenizer,
        prompts,
        responses,
        [reference, *judges],
        batch_size=batch_size,
        max_prompt_tokens=max_prompt_tokens,
        max_response_tokens=max_response_tokens,
        progress=progress,
        desc=desc,
    )
    return {judge: implicit_reward(logps[judge], logps[reference], beta) for judge in judges}


@torch.no_grad()
def single_logprob(model: torch.nn.Module, prompt_ids: list[int], response_ids: list[int], device: Any) -> float:
    """``log pi(response | prompt)`` of one pair, from one forward pass over the whole sequence: the slow, plain
    path that batched scoring is checked against. Log-softmax and sum run in float32, or in the logits' own dtype
    when that is wider (a float64 model gives a float64 truth)."""
    ids = torch.tensor([prompt_ids + response_ids], device=device)
    logits = model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    start = len(prompt_ids)
    positions = torch.arange(start - 1, start - 1 + len(response_ids), device=device)
    targets = ids[0, start:]
    return float(logp[positions, targets].sum())


def implicit_rewards_reference(
    bank_or_model: AdapterBank | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    judges: Sequence[str],
    *,
    beta: float,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
    reference: str = BASE,
) -> dict[str, Tensor]:
    """The reference code's scoring: one response at a time, full-sequence logits, the reference model's
    log-probs recomputed for every judge. Slow; for tests and benchmarks. Same result as :func:`implicit_rewards`.
    """
    bank = as_bank(bank_or_model)
    bank.check_names([reference, *judges])
    encoded = _encode_all(tokenizer, prompts, responses, max_prompt_tokens, max_response_tokens)
    device = bank.device
    rewards = {}
    for judge in judges:
        values = []
        for prompt_ids, response_ids in encoded:
            with bank.only(judge) as model:
                policy = single_logprob(model, prompt_ids, response_ids, device)
            with bank.only(reference) as model:
                ref = single_logprob(model, prompt_ids, response_ids, device)
            values.append(beta * (policy - ref))
        rewards[judge] = torch.tensor(values, dtype=torch.float32)
    return rewards
