"""LoRA soups as pure tensor maths: the interpolation of adapters' weight updates (docs/method.md §1).

A *soup* at weights ``w`` is an adapter whose weight update is ``sum_o w_o * dW_o`` with
``dW_o = scaling_o * B_o @ A_o``. :func:`interpolate_lora` computes it exactly (``delta``: the factors are
concatenated along the rank dimension) or as the reference code does (``factors``: A and B are interpolated
separately, which is not the interpolation of the updates). No model is involved: state dicts in, a state dict out;
:meth:`sipo.models.adapters.AdapterBank.add_soup` loads the result as an adapter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from sipo.config import SoupMode

StateDict = dict[str, Tensor]

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")


class LoraSoup(NamedTuple):
    """The factors of an interpolated adapter: its update on each module is ``scaling * B @ A``."""

    state_dict: StateDict
    """peft state-dict keys (``<module>.lora_A.weight`` of shape (rank, in), ``<module>.lora_B.weight`` of shape
    (out, rank))."""
    rank: int
    scaling: float


def split_lora_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """Group a peft LoRA state dict by module: ``{module: (A, B)}``.

    Raises:
        ValueError: a key is not a plain LoRA factor (embedding LoRA, LoRA bias, modules_to_save, ...) or a module
            lacks one of its factors.
    """
    factors: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise ValueError(f"unsupported adapter weight '{key}': only LoRA factors of linear layers can be mixed")
        factors.setdefault(match["module"], {})[match["factor"]] = value
    out = {}
    for module, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"adapter module '{module}' lacks its lora_{'B' if 'A' in pair else 'A'} factor")
        out[module] = (pair["A"], pair["B"])
    return out


def lora_delta_weights(state_dict: Mapping[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """The weight update of each module, ``scaling * B @ A``. Shape: (out_features, in_features) per module."""
    return {module: scaling * (b @ a) for module, (a, b) in split_lora_state_dict(state_dict).items()}


def _adapter_rank(name: str, modules: Mapping[str, tuple[Tensor, Tensor]]) -> int:
    ranks = {a.shape[0] for a, _ in modules.values()}
    if len(ranks) != 1:
        raise ValueError(f"adapter '{name}' has different ranks on different modules ({sorted(ranks)})")
    return ranks.pop()


def interpolate_lora(
    state_dicts: Mapping[str, Mapping[str, Tensor]],
    scalings: Mapping[str, float],
    weights: Mapping[str, float],
    mode: SoupMode | str = SoupMode.delta,
) -> LoraSoup:
    """Interpolate LoRA adapters (a soup). Pure: the inputs are not modified.

    ``delta`` (exact): the update of each module is ``sum_o w_o * scaling_o * B_o @ A_o``. The factors are stacked
    along the rank dimension, ``A' = cat_o(A_o)`` and ``B' = cat_o(w_o * B_o)``, so the rank is the sum of the
    ranks, and ``B' @ A' = sum_o w_o * B_o @ A_o``.

    ``factors`` (the reference code): ``A' = sum_o w_o * A_o`` and ``B' = sum_o w_o * B_o``; the ranks must be
    equal. Its update ``B' @ A'`` has cross terms ``w_a w_b B_a A_b``, so it is not the interpolation of the updates.

    In both modes, when the adapters with a non-zero weight share one scaling ``s`` it is kept (so weights (1, 0)
    reproduce adapter A bit for bit); otherwise each ``B_o`` is multiplied by ``scaling_o`` and the scaling is 1.
    Adapters with weight 0 are left out; a module that some adapter does not adapt counts as a zero update there.

    Args:
        state_dicts: adapter name -> peft LoRA state dict (``<module>.lora_A.weight``, ``<module>.lora_B.weight``).
        scalings: adapter name -> its LoRA scaling (``lora_alpha / r``).
        weights: adapter name -> interpolation weight (usually on the simplex; any real numbers are allowed).
        mode: ``delta`` or ``factors``.

    Returns:
        The soup's state dict (same key format), rank and scaling.
    """
    unknown = [name for name in weights if name not in state_dicts]
    if unknown:
        raise ValueError(f"no adapter named '{unknown[0]}' (have {sorted(state_dicts)})")
    active = [(name, float(w)) for name, w in weights.items() if w != 0]
    if not active:
        raise ValueError("a soup needs at least one adapter with a non-zero weight")
    if mode not in SoupMode.values():
        raise ValueError(f"soup mode must be {' or '.join(map(repr, SoupMode.values()))}, got '{mode}'")

    modules = {name: split_lora_state_dict(state_dicts[name]) for name, _ in active}
    ranks = {name: _adapter_rank(name, modules[name]) for name, _ in active}
    if mode == SoupMode.factors and len(set(ranks.values())) > 1:
        raise ValueError(f"soup_mode 'factors' needs adapters of equal rank, got {ranks}")
    shared_scaling = {float(scalings[name]) for name, _ in active}
    if len(shared_scaling) == 1:
        scaling = shared_scaling.pop()
        b_factor = {name: w for name, w in active}
    else:
        scaling = 1.0
        b_factor = {name: w * float(scalings[name]) for name, w in active}

    all_modules = sorted({m for name, _ in active for m in modules[name]})
    soup: StateDict = {}
    for module in all_modules:
        present = [(name, modules[name][module]) for name, _ in active if module in modules[name]]
        _, (a_ref, b_ref) = present[0]
        dtype, device = a_ref.dtype, a_ref.device
        in_features, out_features = a_ref.shape[1], b_ref.shape[0]
        a_parts, b_parts = [], []
        for name, _ in active:
            if module in modules[name]:
                a, b = modules[name][module]
                a_parts.append(a.to(dtype))
                b_parts.append(b.to(dtype) * b_factor[name])
            else:
                a_parts.append(torch.zeros(ranks[name], in_features, dtype=dtype, device=device))
                b_parts.append(torch.zeros(out_features, ranks[name], dtype=dtype, device=device))
        if mode == SoupMode.delta:
            new_a, new_b = torch.cat(a_parts, dim=0), torch.cat(b_parts, dim=1)
        else:
            weight_of = dict(active)
            new_a = sum(a * weight_of[name] for (name, _), a in zip(active, a_parts))
            new_b = sum(b_parts)
        soup[f"{module}.lora_A.weight"] = new_a.contiguous()
        soup[f"{module}.lora_B.weight"] = new_b.contiguous()
    rank = sum(ranks.values()) if mode == SoupMode.delta else next(iter(ranks.values()))
    return LoraSoup(soup, rank, scaling)
