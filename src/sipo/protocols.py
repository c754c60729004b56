"""The model calls that stages depend on, as small protocols, so that stages can be tested with fakes.

The real implementations are :class:`sipo.decoding.mod.ModGenerator` and
:class:`sipo.scoring.implicit.ImplicitRewardScorer`; a test passes, say, a ``FakeGenerator`` returning canned
reviews, and checks prompt rendering, parsing, id propagation and file output without a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Generator(Protocol):
    def generate(self, prompts: Sequence[str], mixes: Sequence[Mapping[str, float]]) -> list[str]:
        """One response per raw prompt (no template applied yet), decoded with that prompt's weight mix
        (``{objective or adapter name: weight}``; a one-hot mix is one adapter)."""
        ...


@runtime_checkable
class Scorer(Protocol):
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, Tensor]:
        """``{score name: scores}`` of each (raw prompt, response) pair. Shape: (num_responses,) each."""
        ...
