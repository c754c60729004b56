"""LoRA adapters over one shared base model: :class:`AdapterBank`.

The bank holds every adapter of a run (objectives' adapters and soups) in one ``PeftModel``, so they share one copy
of the base model, and runs a batch whose rows use different adapters in one forward (peft mixed-adapter batches;
``"__base__"`` is the base model). The soup maths (:func:`~sipo.models.soups.interpolate_lora`, docs/method.md §1)
live in :mod:`sipo.models.soups`, the fast mixed-adapter forward in :mod:`sipo.models.grouped`.

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
from typing import TYPE_CHECKING, Any

import torch

from sipo.errors import RunDirError
from sipo.models.grouped import BASE, GroupedLoraForward
from sipo.models.soups import (  # noqa: F401 (re-exported: the soup maths lived here)
    LoraSoup,
    SoupMode,
    StateDict,
    interpolate_lora,
    lora_delta_weights,
    split_lora_state_dict,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_adapter_name(name: str) -> str:
    """Adapter names become module keys: letters, digits, ``_`` and ``-`` only, not ``__base__``, and not a part
    of peft's parameter prefix ``lora_`` (peft may then re-initialise the adapter's weights when loading)."""
    if name == BASE or not _SAFE_NAME.match(name) or name in "lora_":
        raise ValueError(
            f"invalid adapter name '{name}' (letters, digits, '_' or '-'; not '{BASE}' nor a part of 'lora_')"
        )
    return name


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
        self._grouped = GroupedLoraForward()
        """The fast mixed-adapter forward and its caches (LoRA layers, stacked factors); see :meth:`forward`."""
        self._takes_cache: dict[tuple[Any, str], bool] = {}
        """(forward function, argument) -> whether it takes the argument; see :meth:`_takes`."""

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
            RunDirError: the adapter's files cannot be loaded (damaged), naming its folder.
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
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name,
                                                       is_trainable=False)
        except OSError:
            raise
        except Exception as exc:  # a damaged adapter: broken JSON, truncated or emptied safetensors, wrong shapes
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise RunDirError(f"{path}: cannot load this LoRA adapter ({type(exc).__name__}: {reason}); re-run the "
                              "stage that wrote it (sipo run CONFIG --force STAGE)") from None
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

    def add_soup(self, name: str, weights: Mapping[str, float], mode: SoupMode | str = SoupMode.delta) -> None:
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
        plain LoRA on linear layers by :class:`~sipo.models.grouped.GroupedLoraForward` (see there).
        ``logits_to_keep`` is dropped for models whose forward does not take it (they return all logits).
        """
        names = list(adapter_names)
        self.check_names(names)
        if "logits_to_keep" in kwargs and not self._takes("logits_to_keep"):
            kwargs.pop("logits_to_keep")
        if not self.is_peft:
            return self.model(**kwargs)
        return self._grouped(self.model, names, self.names, self.device, kwargs)

    def _forget_layers(self) -> None:
        """Adapters were added or removed: find the LoRA layers again and restack their factors."""
        self._grouped.forget()

    def _takes(self, argument: str) -> bool:
        """Whether the base model's forward takes ``argument``; kept per forward function (:meth:`forward` asks at
        every decoding step, and ``inspect.signature`` of a transformers forward takes a fraction of a millisecond)."""
        forward = self.base_model.forward
        key = (getattr(forward, "__func__", forward), argument)
        if key not in self._takes_cache:
            params = inspect.signature(forward).parameters
            self._takes_cache[key] = argument in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        return self._takes_cache[key]

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


def as_bank(bank_or_model: AdapterBank | torch.nn.Module) -> AdapterBank:
    """An :class:`AdapterBank` view of a bank, a ``PeftModel`` or a plain causal LM."""
    if isinstance(bank_or_model, AdapterBank):
        return bank_or_model
    return AdapterBank(bank_or_model)
