"""What a pipeline stage is: its declaration (:class:`StageDef`), its place in a run's plan (:class:`StageSpec`)
and what its function receives (:class:`StageContext`).

Every stage module (``sipo/stages/<name>.py``) ends with a ``SPEC = StageDef(...)`` next to its ``run`` function:
its help text, what it reads and writes, whether it loads the base model or runs on every process, and the config
keys that fingerprint it, the stages upstream of it and the files outside the run that it reads.
:mod:`sipo.stages.registry` lists the modules in pipeline order; the plan, the fingerprints, the command-line help,
the input checks and the README's stage table are all derived from those declarations, so a new stage is one
module plus one line in the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipo.layout import needs_label_stage, needs_sft_stage  # noqa: F401 (re-exported)
from sipo.stages import model_calls
from sipo.tracking import Tracking

if TYPE_CHECKING:
    from sipo.artifacts import RunDir
    from sipo.config import PipelineConfig


Planned = Sequence[tuple[str, "StageDef"]]
"""The stages planned before a stage, as (stage id, definition), in plan order."""


def base_stages(cfg: PipelineConfig) -> tuple[str, ...]:
    """The stage that builds the run's base model, when the run builds it (every adapter reads it)."""
    return ("sft",) if needs_sft_stage(cfg) else ()


def reads_round_one(cfg: PipelineConfig, before: Planned) -> tuple[str, ...]:
    """The default upstream: the pairs (``prepare``), the round-1 DPO adapters and the base model."""
    return ("prepare", "dpo", *base_stages(cfg))


@dataclass(frozen=True)
class StageDef:
    """The declaration of one stage, written next to its code."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    """The stage function: does the work under ``ctx.out_dir`` and returns the counts for its manifest."""
    help: str
    """What it does, one line (logs, ``sipo --help``, the README's stage table)."""
    reads: str
    writes: str
    config_keys: tuple[str, ...] = ()
    """Dotted config keys (whole sections where possible) whose values fingerprint the stage."""
    exclude: tuple[str, ...] = ()
    """Keys inside ``config_keys`` sections that do not affect the stage (e.g. ``eval.reference_point``, which only
    the report reads)."""
    extra_keys: Callable[[PipelineConfig], tuple[str, ...]] | None = None
    """More fingerprinting keys that depend on the config (e.g. the templates, when the synthetic data renders
    them)."""
    loads_model: bool = False
    """Loads the base model (the input checks then look for it before the run starts)."""
    distributed: bool = False
    """Runs on every process of a multi-process job (training under DDP, sharded generation or scoring); the
    other stages run on rank 0 while the other processes wait."""
    per_round: bool = False
    """Part of a self-improvement round (``r<k>/<name>``)."""
    optional: bool = False
    """Planned only when a configured method's ``trains`` names it (the rounds for ``sipo``, a baseline's stage)."""
    when: Callable[[PipelineConfig], bool] | None = None
    """A further condition on the config for the stage to be planned (e.g. ``sft``: the run builds its model)."""
    makes_adapters: bool = False
    """Writes adapters that ``evaluate`` decodes with (so evaluate runs after it)."""
    renders_templates: bool = False
    """Renders the review / rewrite templates (the input checks then load them before the run starts)."""
    note: str = ""
    """A short condition shown in ``sipo --help``, e.g. ``only if in methods``."""
    upstream: Callable[[PipelineConfig, Planned], tuple[str, ...]] = reads_round_one
    """``(config, the stages planned before it) -> ids of the stages whose outputs it reads`` (a per-round stage
    is wired by the plan instead: round 1 reads what the stages before it wrote, round k round k-1)."""
    inputs: Callable[[PipelineConfig], dict[str, Path]] | None = None
    """``config -> {label: path}`` of the files outside the run directory that it reads, besides the base model
    (``loads_model``) and the templates (``renders_templates``); their content fingerprints the stage."""
    check_inputs: Callable[[PipelineConfig], None] | None = None
    """Checks those inputs before the run writes anything (raises ConfigError or DataError)."""
    precheck: Callable[[PipelineConfig], Any] | None = None
    """The part of its work that can refuse the run and writes nothing (``prepare``: loading and splitting the
    data), done before the run writes anything; its result waits in ``ctx.cache[<stage name>]``."""
    builds_base_model: bool = False
    """Builds the run's base model (``sft``): when it runs, it is the only stage that reads ``model.name_or_path``."""

    def keys(self, cfg: PipelineConfig) -> tuple[str, ...]:
        extra = self.extra_keys(cfg) if self.extra_keys is not None else ()
        return (*self.config_keys, *extra)


@dataclass(frozen=True)
class StageSpec:
    """One stage of a run's plan: a registered stage, in a round or not, with its upstream stage ids."""

    name: str
    round: int | None = None
    config_keys: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    distributed: bool = False
    """The definition's ``distributed``: the stage runs on every process of a multi-process job."""

    @property
    def id(self) -> str:
        return f"r{self.round}/{self.name}" if self.round is not None else self.name


@dataclass
class StageContext:
    """What a stage function gets: the config, its output folder, and paths of upstream outputs."""

    cfg: PipelineConfig
    run_dir: RunDir
    stage: StageSpec
    device: str
    cache: dict[str, Any] = field(default_factory=dict)
    """Objects shared between stages of one ``sipo run`` (e.g. a loaded base model)."""
    models: Models = field(default_factory=lambda: Models())
    """The model calls the stage makes (loading, generation, implicit rewards, training)."""

    @property
    def out_dir(self) -> Path:
        return self.run_dir.stage_dir(self.stage.id)

    @property
    def round(self) -> int:
        return self.stage.round or 1

    @property
    def tracking(self) -> Tracking:
        """Where the stage's Trainers report (``train.report_to``), named after the run and the stage."""
        return Tracking.for_stage(self.cfg, self.run_dir.root, self.stage.id)


def _load_bank(ctx: StageContext, adapters: Any) -> tuple[Any, Any]:
    return model_calls.load_bank(ctx, adapters)


def _load_tokenizer(ctx: StageContext) -> Any:
    return model_calls.load_tokenizer_only(ctx)


def _generate(*args: Any, **kwargs: Any) -> list[str]:
    from sipo.decoding.mod import mod_generate  # torch: imported on first use

    return mod_generate(*args, **kwargs)


def _implicit_rewards(*args: Any, **kwargs: Any) -> dict[str, dict[str, float]]:
    return model_calls.judge_rewards(*args, **kwargs)


def _train_adapter(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from sipo.training.dpo import train_dpo_adapter  # torch and trl: imported on first use

    return train_dpo_adapter(*args, **kwargs)


@dataclass(frozen=True)
class Models:
    """Every call from a stage into a model, in one place: the stage context carries one, so component tests hand
    a stage fakes (``dataclasses.replace(Models(), generate=fake)``) instead of patching module attributes.

    The defaults load the real implementations lazily (torch, peft and trl are imported on first use).
    """

    load_bank: Callable[..., tuple[Any, Any]] = _load_bank
    """``(ctx, {adapter name: folder}) -> (bank, tokenizer)``: the base model with those adapters loaded."""
    load_tokenizer: Callable[..., Any] = _load_tokenizer
    """``(ctx) -> tokenizer`` of the base model."""
    generate: Callable[..., list[str]] = _generate
    """:func:`sipo.decoding.mod.mod_generate`: ``(bank, tokenizer, prompts, mixes, **decode) -> responses``."""
    implicit_rewards: Callable[..., dict[str, dict[str, float]]] = _implicit_rewards
    """``(ctx, bank, tokenizer, items, judges) -> {item id: {judge: reward}}`` (see
    :func:`sipo.stages.model_calls.judge_rewards`)."""
    train_adapter: Callable[..., dict[str, Any]] = _train_adapter
    """:func:`sipo.training.dpo.train_dpo_adapter`: ``(settings, tokenizer=, examples=, out_dir=) -> metrics``."""
