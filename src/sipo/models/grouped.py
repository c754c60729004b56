"""The fast forward of a batch whose rows use different LoRA adapters (the adapter bank's hot path).

peft runs mixed-adapter batches (``model(..., adapter_names=...)``) by looping over the adapters inside every LoRA
layer. :class:`GroupedLoraForward` gives the same result faster for plain LoRA on linear layers: every LoRA layer
runs its base layer on all rows, then adds each adapter's update ``scaling * B(A(x))`` to that adapter's rows, a
slice when the rows are contiguous (callers group rows by adapter). When the adapters' rows are slices of equal
size one after the other and autograd is off (scoring; MOD), the updates of all of them are two batched matrix
products per layer, over the factors stacked once and kept (rebuilt when a factor changes in place). Other cases
(DoRA and other variants, LoRA on embeddings, merged adapters, training mode) go through peft. The equivalence
with peft is tested in ``tests/component/test_fast_paths.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

BASE = "__base__"
"""The adapter name meaning "no adapter" (peft's convention for mixed-adapter batches)."""


class GroupedLoraForward:
    """One per adapter bank: the forward itself and what it keeps between calls (the model's LoRA layers, the
    stacked factors of the most recently used adapter-name tuples)."""

    def __init__(self) -> None:
        self._lora_layers: tuple[Any, list[torch.nn.Module] | None] | None = None
        """(model id, adapter names) -> the model's LoRA linear layers (None: a layer type this forward does not
        handle)."""
        self._stacks: dict[tuple[str, ...], dict[int, Any]] = {}
        """Adapter names -> layer id -> (the factors, their versions, stacked A, stacked B, scalings), for the most
        recently used name tuples; see :meth:`_stacked_factors`."""

    def forget(self) -> None:
        """Adapters were added or removed: find the LoRA layers again and restack their factors."""
        self._lora_layers = None
        self._stacks.clear()

    def __call__(self, model: Any, names: list[str], bank_names: Sequence[str], device: torch.device,
                 kwargs: dict[str, Any]) -> Any:
        """``model(**kwargs)`` with row ``i`` using adapter ``names[i]`` (``bank_names``: every adapter of the
        model, which keys the cached layer list)."""
        groups = _row_groups(names, device)
        layers = self._grouped_layers(model, bank_names, [name for name, _ in groups])
        if layers is None:
            return model(**kwargs, adapter_names=names)
        base_rows = [BASE] * len(names)
        # Without autograd (the stacked factors are copies), equal groups of rows one after the other take the
        # stacked path: two batched matrix products per layer for all the adapters.
        stacked = None if torch.is_grad_enabled() else _stacked_rows(groups)
        stacked_names = tuple(name for name, _ in groups)
        stacks = self._stacks_of(stacked_names) if stacked is not None else {}

        def base_only(module: torch.nn.Module, args: Any, kw: dict[str, Any]) -> Any:
            # peft's own mixed-batch argument: "__base__" rows get the base layer alone.
            return args, {**kw, "adapter_names": base_rows}

        def add_updates(module: Any, args: Any, kw: dict[str, Any], output: Tensor) -> Tensor:
            x = args[0] if args else kw["x"]
            if stacked is not None:
                factors = self._stacked_factors(stacks, module, stacked_names)
                if factors is None:
                    return output
                lora_a, lora_b, scaling = factors
                sub = x[stacked]
                if sub.dtype != lora_a.dtype:
                    sub = sub.to(lora_a.dtype)
                update = torch.bmm(torch.bmm(sub.reshape(len(stacked_names), -1, sub.shape[-1]), lora_a), lora_b)
                rows_out = output[stacked]
                update = (update * scaling).reshape(rows_out.shape)
                rows_out.add_(update if update.dtype == output.dtype else update.to(output.dtype))
                return output
            for name, rows in groups:
                if name not in module.lora_A:
                    continue
                lora_a = module.lora_A[name]
                sub = x[rows] if isinstance(rows, slice) else x.index_select(0, rows)
                update = module.lora_B[name](lora_a(module.lora_dropout[name](sub.to(lora_a.weight.dtype))))
                update = (update * module.scaling[name]).to(output.dtype)
                if isinstance(rows, slice):
                    output[rows].add_(update)
                else:
                    output.index_add_(0, rows, update)
            return output

        handles = []
        try:
            for layer in layers:
                handles.append(layer.register_forward_pre_hook(base_only, with_kwargs=True))
                handles.append(layer.register_forward_hook(add_updates, with_kwargs=True))
            return model(**kwargs)
        finally:
            for handle in handles:
                handle.remove()

    _MAX_STACKED_NAME_TUPLES = 4
    """Adapter-name tuples whose stacked factors are kept; the least recently used are dropped beyond."""

    def _stacks_of(self, names: tuple[str, ...]) -> dict[int, Any]:
        """The stacked factors kept for adapter names ``names`` (layer id -> entry), marked most recently used."""
        stacks = self._stacks.pop(names, {})
        self._stacks[names] = stacks
        while len(self._stacks) > self._MAX_STACKED_NAME_TUPLES:
            self._stacks.pop(next(iter(self._stacks)))
        return stacks

    @staticmethod
    def _stacked_factors(stacks: dict[int, Any], layer: Any, names: tuple[str, ...]) -> tuple[Tensor, ...] | None:
        """The LoRA factors of ``names`` on ``layer`` stacked for batched matrix products: A transposed, shape
        (len(names), in, r), B transposed, shape (len(names), r, out), the scalings, shape (len(names), 1, 1); ranks
        padded with zeros to the largest and a name the layer does not adapt all zeros (both add exactly nothing).
        None when the layer adapts none of the names. Kept in ``stacks``, and rebuilt when a factor changed in
        place (its version counter moved)."""
        entry = stacks.get(id(layer))
        if entry is not None and all(w._version == v for w, v in zip(entry[0], entry[1])):
            return entry[2]
        present = [name for name in names if name in layer.lora_A]
        if not present:
            return None
        weights = tuple(w for name in present for w in (layer.lora_A[name].weight, layer.lora_B[name].weight))
        rank = max(layer.lora_A[name].weight.shape[0] for name in present)
        stack_a = weights[0].new_zeros(len(names), layer.in_features, rank)
        stack_b = weights[0].new_zeros(len(names), rank, layer.out_features)
        scaling = weights[0].new_zeros(len(names), 1, 1)
        with torch.no_grad():
            for g, name in enumerate(names):
                if name in present:
                    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
                    stack_a[g, :, : a.shape[0]] = a.T
                    stack_b[g, : b.shape[1], :] = b.T
                    scaling[g] = layer.scaling[name]
        stacks[id(layer)] = (weights, tuple(w._version for w in weights), (stack_a, stack_b, scaling))
        return stack_a, stack_b, scaling

    def _grouped_layers(self, model: Any, bank_names: Sequence[str], names: Sequence[str]
                        ) -> list[torch.nn.Module] | None:
        """The LoRA layers the forward hooks for adapters ``names``, or None when peft must run the batch."""
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.lora.layer import LoraLayer
        from peft.utils import AuxiliaryTrainingWrapper

        if model.training:
            return None
        key = (id(model), tuple(bank_names))
        if self._lora_layers is None or self._lora_layers[0] != key:
            layers: list[torch.nn.Module] | None = []
            for module in model.modules():
                if isinstance(module, LoraLayer):
                    if type(module) is not LoraLinear:
                        layers = None
                        break
                    layers.append(module)
                elif isinstance(module, AuxiliaryTrainingWrapper):
                    layers = None  # modules_to_save / trainable tokens: peft routes adapter names into them too
                    break
            self._lora_layers = (key, layers)
        layers = self._lora_layers[1]
        if layers is None:
            return None
        for layer in layers:
            if layer.merged or any(name in layer.lora_variant or layer.use_dora.get(name, False) for name in names):
                return None
        return layers


def _stacked_rows(groups: Sequence[tuple[str, slice | Tensor]]) -> slice | None:
    """The rows of all the adapters when their updates can be computed by batched matrix products: at least two
    adapters, each on a slice of the same number of rows, the slices one after the other. None otherwise."""
    if len(groups) < 2 or not all(isinstance(rows, slice) for _, rows in groups):
        return None
    slices: list[slice] = [rows for _, rows in groups]  # type: ignore[misc]
    size = slices[0].stop - slices[0].start
    for previous, current in zip(slices, slices[1:]):
        if current.start != previous.stop or current.stop - current.start != size:
            return None
    return slice(slices[0].start, slices[-1].stop)


def _row_groups(names: Sequence[str], device: torch.device) -> list[tuple[str, slice | Tensor]]:
    """The rows of each adapter other than ``"__base__"``, in first-appearance order: a slice when they are
    contiguous, else an index tensor."""
    rows: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        rows.setdefault(name, []).append(index)
    groups: list[tuple[str, slice | Tensor]] = []
    for name, indices in rows.items():
        if name == BASE:
            continue
        if indices[-1] - indices[0] + 1 == len(indices):
            groups.append((name, slice(indices[0], indices[-1] + 1)))
        else:
            groups.append((name, torch.tensor(indices, device=device)))
    return groups
