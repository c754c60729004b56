"""What training one adapter needs besides its data, as plain values: one :class:`AdapterTraining` (base model
settings + loss + optimisation) instead of twenty keywords forwarded through every training stage.

Plain dataclasses (no trl), so stages and tests build them without building a trainer; the losses they name are
the definitions of :data:`sipo.losses.LOSSES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sipo.config import LoraSettings, TrainSettings
from sipo.losses import LOSSES, MARGIN, PREFERENCE_SIGNS, LossDef  # noqa: F401 (the example columns, re-exported)
from sipo.tracking import Tracking

if TYPE_CHECKING:
    from sipo.config import PipelineConfig

LossName = str
"""A name registered in :data:`sipo.losses.LOSSES` (``dpo``, ``dpo_nll``, ``dpo_lw``, ``modpo`` built in)."""


@dataclass(frozen=True)
class LossSpec:
    """Which loss of :data:`sipo.losses.LOSSES` the trainer calls, with its parameters."""

    name: LossName = "dpo"
    nll_alpha: float = 0.0
    """Weight of NLL(chosen) for a loss that uses it (``dpo_nll``)."""
    objective_weights: tuple[float, ...] | None = None
    """``w`` for a loss over several objectives (``dpo_lw``, ``modpo``: ``w[0]`` is MODPO's target objective)."""

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss '{self.name}' (choose from {', '.join(LOSSES)})")
        definition = LOSSES[self.name]
        if not definition.uses_nll_alpha and self.nll_alpha != 0.0:
            users = " or ".join(f"loss='{d.name}'" for d in LOSSES.values() if d.uses_nll_alpha)
            raise ValueError(f"nll_alpha is only used by {users} (got loss='{self.name}')")
        if definition.min_weights and not self.objective_weights:
            raise ValueError(f"loss='{self.name}' needs objective_weights")
        if not definition.min_weights and self.objective_weights is not None:
            users = " and ".join(d.name for d in LOSSES.values() if d.min_weights)
            raise ValueError(f"objective_weights is only used by {users} (got loss='{self.name}')")
        if len(self.objective_weights or ()) < definition.min_weights:
            raise ValueError(f"loss='{self.name}' needs at least {_COUNT.get(definition.min_weights, definition.min_weights)} "
                             "objective weights")

    @property
    def definition(self) -> LossDef:
        return LOSSES[self.name]

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Per-example columns, beyond prompt/chosen/rejected, that this loss reads from the batch."""
        return tuple(self.extra_widths)

    @property
    def extra_widths(self) -> dict[str, int]:
        return self.definition.columns(len(self.objective_weights or ()))


_COUNT = {2: "two", 3: "three"}


@dataclass(frozen=True)
class ModelSettings:
    """The base model a trainer loads, and how sequences are cut."""

    path: str
    device: str = "cpu"
    """``cpu`` or a CUDA device string; under ``accelerate launch`` the Trainer places each process."""
    dtype: str = "float32"
    """``float32``, ``bfloat16`` or ``float16`` (see :func:`sipo.training.training_arguments_kwargs`)."""
    max_prompt_tokens: int | None = None
    """Keep this many prompt tokens (the end of the prompt); None keeps all."""
    max_response_tokens: int | None = None
    """Keep this many response tokens, EOS included (the start); None keeps all."""
    trust_remote_code: bool = False
    allow_pickle: bool = False
    """Load pickle (``.bin``) base weights when there are no safetensors."""

    @classmethod
    def of(cls, cfg: PipelineConfig, path: str, device: str) -> ModelSettings:
        """The settings of a run's base model at ``path`` (``model.*`` of the config)."""
        model = cfg.model
        return cls(path=str(path), device=device, dtype=model.dtype, max_prompt_tokens=model.max_prompt_tokens,
                   max_response_tokens=model.max_response_tokens, trust_remote_code=model.trust_remote_code,
                   allow_pickle=model.allow_pickle)


@dataclass(frozen=True)
class AdapterTraining:
    """One adapter's training: base model, starting point, loss and optimisation.

    The policy is ``base + adapter``: a fresh LoRA adapter with the shape of ``lora``, or, with ``init_adapter``,
    that saved adapter made trainable (its shape is read from it). The reference is the base model
    (``reference="base"``) or the initial policy (``"init"``: base + a frozen copy of ``init_adapter``, the
    re-alignment setting).
    """

    model: ModelSettings
    train: TrainSettings
    beta: float
    """DPO's KL strength."""
    seed: int = 0
    """Seeds the LoRA initialisation and the data order."""
    loss: LossSpec = field(default_factory=LossSpec)
    lora: LoraSettings | None = None
    init_adapter: str | None = None
    reference: Literal["base", "init"] = "base"
    logging_steps: int = 10
    tracking: Tracking | None = None
    """Where the Trainer reports (a pipeline stage's ``train.report_to``; None: nowhere). Changes no result."""

    def __post_init__(self) -> None:
        if self.reference not in ("base", "init"):
            raise ValueError(f"reference must be 'base' or 'init', got '{self.reference}'")
        if self.init_adapter is None and self.lora is None:
            raise ValueError("lora settings are required when training a new adapter (init_adapter is None)")
