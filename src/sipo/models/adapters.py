"""LoRA adapters over one shared base model, and LoRA soups.

A *soup* at weights ``w`` is an adapter whose weight update is ``sum_o w_o * dW_o`` with
``dW_o = scaling_o * B_o @ A_o`` (docs/method.md §1). :func:`interpolate_lora` computes it exactly (``delta``:
the factors are concatenated along the rank dimension) or as the reference code does (``factors``: A and B are
interpolated separately, which is not the interpolation of the updates). :class:`AdapterBank` holds every adapter
of a run (objectives' adapters and soups) in one ``PeftModel``, so they share one copy of the base model, and runs a
batch whose rows use different adapters in one forward (peft mixed-adapter batches; ``"__base__"`` is the base
model).

Example::

    bank = AdapterBank.load(model, {"correctness": run / "dpo/correctness", "verbosity": run / "dpo/verbosity"})
    bank.add_soup("soup-0.2", {"correctness": 0.2, "verbosity": 0.8})
    out = bank.forward(["correctness", "soup-0.2", "__base__"], input_ids=ids, attention_mask=mask)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

BASE = "__base__"
"""The adapter name meaning "no adapter" (peft's convention for mixed-adapter batches)."""

SoupMode = Literal["delta", "factors"]
StateDict = dict[str, Tensor]

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_adapter_name(name: str) -> str:
    """Adapter names become module keys: letters, digits, ``_`` and ``-`` only, not ``__base__``, and not a part
    of peft's parameter prefix ``lora_`` (peft may then re-initialise the adapter's weights when loading)."""
    if name == BASE or not _SAFE_NAME.match(name) or name in "lora_":
        raise ValueError(
            f"invalid adapter name '{name}' (letters, digits, '_' or '-'; not '{BASE}' nor a part of 'lora_')"
        )
    return name


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
    mode: SoupMode = "delta",
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
    if mode not in ("delta", "factors"):
        raise ValueError(f"soup mode must be 'delta' or 'factors', got '{mode}'")

    modules = {name: split_lora_state_dict(state_dicts[name]) for name, _ in active}
    ranks = {name: _adapter_rank(name, modules[name]) for name, _ in active}
    if mode == "factors" and len(set(ranks.values())) > 1:
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
        if mode == "delta":
            new_a, new_b = torch.cat(a_parts, dim=0), torch.cat(b_parts, dim=1)
        else:
            weight_of = dict(active)
            new_a = sum(a * weight_of[name] for (name, _), a in zip(active, a_parts))
            new_b = sum(b_parts)
        soup[f"{module}.lora_A.weight"] = new_a.contiguous()
        soup[f"{module}.lora_B.weight"] = new_b.contiguous()
    rank = sum(ranks.values()) if mode == "delta" else next(iter(ranks.values()))
    return LoraSoup(soup, rank, scaling)


class AdapterBank:
    """Named LoRA adapters over ONE copy of a base model, run together in mixed-adapter batches.

    ``bank.model`` is a ``PeftModel`` (or the plain base model when the bank has no adapters). The name
    ``"__base__"`` means the base model without any adapter. The bank keeps the model in eval mode.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.model.eval()
        self._sources: dict[str, tuple[str, int]] = {}
        """Loaded adapter -> (folder, weights file mtime): loading the same files again is a no-op."""
        self._soups: dict[str, tuple[Any, ...]] = {}
        """Soup -> its recipe (weights, mode, ingredients' sources): adding the same soup again is a no-op."""
        self._lora_layers: tuple[Any, list[torch.nn.Module] | None] | None = None
        """(model id, adapter names) -> the model's LoRA linear layers (None: a layer type the grouped forward does
        not handle); see :meth:`forward`."""
        self._stacks: dict[tuple[str, ...], dict[int, Any]] = {}
        """Adapter names -> layer id -> (the factors, their versions, stacked A, stacked B, scalings), for the most
        recently used name tuples; see :meth:`_stacked_factors`."""

    @classmethod
    def load(cls, base_model: PreTrainedModel, adapters: Mapping[str, str | Path]) -> AdapterBank:
        """A bank over ``base_model`` (modified in place) with saved LoRA adapters ``{name: adapter folder}``.

        Raises:
            ConfigError: an adapter folder does not exist or has no ``adapter_config.json``.
        """
        bank = cls(base_model)
        for name, path in adapters.items():
            bank.load_adapter(name, path)
        return bank

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a saved LoRA adapter as ``name``. Loading the same unchanged folder again does nothing; another
        folder (or changed files) under a loaded name replaces that adapter.

        Raises:
            ConfigError: the folder does not exist, or has no ``adapter_config.json`` or no
                ``adapter_model.safetensors`` (pickle adapters are refused).
        """
        from peft import PeftModel

        from sipo.models.loading import check_adapter_weights

        check_adapter_name(name)
        path = check_adapter_weights(path, f"adapter '{name}'")
        weights = sorted(path.glob("adapter_model.*"))
        source = (str(path.resolve()), max((w.stat().st_mtime_ns for w in weights), default=0))
        if self._sources.get(name) == source and name in self.names:
            return
        if name in self.names:
            self.remove(name)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        self.model.eval()
        self._forget_layers()
        self._sources[name] = source
        logger.info("loaded adapter '%s' from %s", name, path)

    @property
    def is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    @property
    def names(self) -> list[str]:
        """Adapter names in load order (soups included, ``__base__`` not)."""
        return list(self.model.peft_config) if self.is_peft else []

    def __contains__(self, name: object) -> bool:
        return name == BASE or name in self.names

    @property
    def base_model(self) -> PreTrainedModel:
        return self.model.get_base_model() if self.is_peft else self.model  # type: ignore[return-value]

    @property
    def config(self) -> Any:
        return self.base_model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_names(self, names: Sequence[str]) -> None:
        missing = sorted({n for n in names if n not in self})
        if missing:
            raise ValueError(f"unknown adapter '{missing[0]}' (have {[BASE, *self.names]})")

    def adapter_state_dict(self, name: str) -> StateDict:
        """The adapter's LoRA factors as a peft state dict (keys without the adapter name)."""
        from peft import get_peft_model_state_dict

        self.check_names([name])
        if name == BASE:
            raise ValueError(f"'{BASE}' has no adapter weights")
        return {k: v.detach() for k, v in get_peft_model_state_dict(self.model, adapter_name=name).items()}

    def adapter_scaling(self, name: str) -> float:
        """The adapter's LoRA scaling as its layers apply it (``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA)."""
        from peft.tuners.lora import LoraLayer

        values = {
            float(module.scaling[name])
            for module in self.model.modules()
            if isinstance(module, LoraLayer) and name in module.scaling
        }
        if len(values) != 1:
            raise ValueError(f"adapter '{name}' has {len(values)} different scalings; soups need one per adapter")
        return values.pop()

    def add_soup(self, name: str, weights: Mapping[str, float], mode: SoupMode = "delta") -> None:
        """Materialise the soup ``sum_o w_o * dW_o`` of loaded adapters as a new adapter ``name`` (see
        :func:`interpolate_lora`). It is computed once and then used like any other adapter."""
        from peft import LoraConfig, set_peft_model_state_dict

        check_adapter_name(name)
        if not self.is_peft:
            raise ValueError("the bank holds no adapters to make a soup of")
        self.check_names(list(weights))
        if BASE in weights:
            raise ValueError(f"'{BASE}' cannot be part of a soup (it has no update; give the others less weight)")
        active = [n for n, w in weights.items() if w != 0]
        recipe = (tuple((n, float(weights[n])) for n in active), mode, tuple(self._soup_source(n) for n in active))
        if name in self.names:
            if self._soups.get(name) == recipe:
                return
            if name not in self._soups:
                raise ValueError(f"adapter '{name}' already exists and is not a soup")
            self.remove(name)
        soup = interpolate_lora(
            {n: self.adapter_state_dict(n) for n in active},
            {n: self.adapter_scaling(n) for n in active},
            weights={n: weights[n] for n in active},
            mode=mode,
        )
        prefix = "base_model.model."
        targets = sorted({key[: -len(".lora_A.weight")] for key in soup.state_dict if key.endswith(".lora_A.weight")})
        targets = [t[len(prefix):] if t.startswith(prefix) else t for t in targets]
        first = self.model.peft_config[active[0]]
        config = LoraConfig(
            r=soup.rank,
            lora_alpha=soup.scaling * soup.rank,
            target_modules=targets,
            lora_dropout=0.0,
            bias="none",
            task_type=first.task_type,
            inference_mode=True,
        )
        self.model.add_adapter(name, config)
        result = set_peft_model_state_dict(self.model, soup.state_dict, adapter_name=name)
        missing = [k for k in result.missing_keys if f".{name}." in k or k.endswith(f".{name}")]
        if result.unexpected_keys or missing:
            self.model.delete_adapter(name)
            raise RuntimeError(
                f"soup '{name}' did not load cleanly (unexpected {result.unexpected_keys[:3]}, missing {missing[:3]})"
            )
        self.model.eval()
        self._forget_layers()
        self._soups[name] = recipe
        logger.info("soup '%s' = %s (%s, rank %d)", name, dict(weights), mode, soup.rank)

    def _soup_source(self, name: str) -> Any:
        return self._sources.get(name) or self._soups.get(name) or name

    def remove(self, name: str) -> None:
        """Delete an adapter (e.g. a soup that is no longer needed) and free its weights."""
        check_adapter_name(name)
        self.check_names([name])
        self.model.delete_adapter(name)
        self._forget_layers()
        self._sources.pop(name, None)
        self._soups.pop(name, None)

    def forward(self, adapter_names: Sequence[str], **kwargs: Any) -> Any:
        """One forward pass whose row ``i`` uses adapter ``adapter_names[i]`` (``"__base__"``: none).

        The result is that of peft's mixed-adapter batches (``model(..., adapter_names=...)``), computed faster for
        plain LoRA on linear layers: every LoRA layer runs its base layer on all rows, then adds each adapter's
        update ``scaling * B(A(x))`` to that adapter's rows, a slice when the rows are contiguous (callers group
        rows by adapter). When the adapters' rows are slices of equal size one after the other and autograd is off
        (scoring; MOD), the updates of all of them are two batched matrix products per layer, over the factors
        stacked once and kept (rebuilt when a factor changes in place). Other cases (DoRA and other variants, LoRA
        on embeddings, merged adapters, training mode) go through peft. ``logits_to_keep`` is dropped for models whose forward does not take it (they return all
        logits).
        """
        names = list(adapter_names)
        self.check_names(names)
        if "logits_to_keep" in kwargs and not self._takes("logits_to_keep"):
            kwargs.pop("logits_to_keep")
        if not self.is_peft:
            return self.model(**kwargs)
        groups = _row_groups(names, self.device)
        layers = self._grouped_layers([name for name, _ in groups])
        if layers is None:
            return self.model(**kwargs, adapter_names=names)
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
            return self.model(**kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def _forget_layers(self) -> None:
        """Adapters were added or removed: find the LoRA layers again and restack their factors."""
        self._lora_layers = None
        self._stacks.clear()

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

    def _grouped_layers(self, names: Sequence[str]) -> list[torch.nn.Module] | None:
        """The LoRA layers :meth:`forward` hooks for adapters ``names``, or None when peft must run the batch."""
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.lora.layer import LoraLayer
        from peft.utils import AuxiliaryTrainingWrapper

        if self.model.training:
            return None
        key = (id(self.model), tuple(self.names))
        if self._lora_layers is None or self._lora_layers[0] != key:
            layers: list[torch.nn.Module] | None = []
            for module in self.model.modules():
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

    def _takes(self, argument: str) -> bool:
        params = inspect.signature(self.base_model.forward).parameters
        return argument in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    @property
    def cache_argument(self) -> str:
        """The forward argument that takes a KV cache (``cache`` in recent transformers, else
        ``past_key_values``)."""
        params = inspect.signature(self.base_model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    @contextlib.contextmanager
    def only(self, name: str) -> Iterator[torch.nn.Module]:
        """Context in which a plain ``model(...)`` call runs adapter ``name`` alone (``__base__``: adapters off).

        The slow one-adapter-at-a-time path of the reference implementations; batched code uses :meth:`forward`.
        """
        self.check_names([name])
        if not self.is_peft:
            yield self.model
            return
        if name == BASE:
            with self.model.disable_adapter():
                yield self.model
            return
        previous = self.model.active_adapter
        self.model.set_adapter(name, inference_mode=True)
        try:
            yield self.model
        finally:
            self.model.set_adapter(previous, inference_mode=True)


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


def as_bank(bank_or_model: AdapterBank | torch.nn.Module) -> AdapterBank:
    """An :class:`AdapterBank` view of a bank, a ``PeftModel`` or a plain causal LM."""
    if isinstance(bank_or_model, AdapterBank):
        return bank_or_model
    return AdapterBank(bank_or_model)
