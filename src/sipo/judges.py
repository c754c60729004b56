"""The judges of ``evaluate`` (``eval.judge``), behind one scorer protocol: items with ids in, scores by id out.

A judge is a :class:`JudgeDef` in :data:`JUDGES`: ``build`` makes its :class:`Scorer` for a stage (it may use the
stage's adapter bank and tokenizer, or load models of its own), and ``check`` validates its settings when the
config is loaded (so ``--dry-run`` catches them). Scores come back keyed by the item's id and then by objective,
never by position, so a judge may batch, sort or deduplicate as it likes.

Example::

    JUDGES.register(JudgeDef(name="chars", help="response length in characters",
                             build=lambda ctx, bank, tokenizer: lambda items: {
                                 i.id: {o: float(len(i.response)) for o in ctx.cfg.objectives} for i in items}))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sipo.errors import ConfigError
from sipo.layout import adapter_name
from sipo.registry import Registry

if TYPE_CHECKING:
    from sipo.config import PipelineConfig
    from sipo.stage import StageContext


@dataclass(frozen=True)
class ScoreItem:
    """One response to score: ``id`` is the caller's key (unique within a call), ``prompt`` the raw user turn."""

    id: str
    prompt: str
    response: str


Scores = dict[str, dict[str, float]]
"""Item id -> objective -> score."""


class Scorer(Protocol):
    def __call__(self, items: Sequence[ScoreItem]) -> Scores: ...


@dataclass(frozen=True)
class JudgeDef:
    name: str
    help: str
    build: Callable[[StageContext, Any, Any], Scorer]
    """``build(ctx, bank, tokenizer)``: the scorer for this stage (bank: the adapter bank holding the round-1
    adapters ``r0_<objective>``; tokenizer: the policy's tokenizer)."""
    check: Callable[[PipelineConfig], None] | None = None
    """Validates the judge's settings at config load; raises ConfigError naming the key."""
    config_keys: tuple[str, ...] = ()
    """Config keys of its own settings, which fingerprint a stage that scores with it."""
    inputs: Callable[[PipelineConfig], dict[str, Path]] | None = None
    """``config -> {label: path}`` of the local files it reads (its models), which fingerprint a stage that scores
    with it."""
    check_inputs: Callable[[PipelineConfig], None] | None = None
    """Checks those files before the run writes anything (raises ConfigError)."""
    ground_truth: bool = False
    """Its scores are the data source's own ground truth (the synthetic benchmark's oracle): with a source that
    can judge reviews (:attr:`sipo.data.SourceDef.review_skill`), the report states the benchmark's validity
    conditions."""
    shared_scale: bool = True
    """Its scores are on one scale in every run (a fixed rule or model); False: each run's own adapters score it,
    and ``sipo compare`` says that such runs' scores are not on one scale."""


JUDGES: Registry[JudgeDef] = Registry("judge")


def judge_keys(name: str) -> tuple[str, ...]:
    """The config keys of judge ``name``'s own settings."""
    return JUDGES[name].config_keys


def judge_inputs(name: str, cfg: PipelineConfig) -> dict[str, Path]:
    """The local files judge ``name`` reads, by label (none for most judges)."""
    hook = JUDGES[name].inputs
    return hook(cfg) if hook is not None else {}


def check_judge_inputs(name: str, cfg: PipelineConfig) -> None:
    hook = JUDGES[name].check_inputs
    if hook is not None:
        hook(cfg)


def by_id(items: Sequence[ScoreItem], columns: Mapping[str, Sequence[float]]) -> Scores:
    """Scores keyed by item id from per-objective columns in item order (what the built-in scorers compute)."""
    return {item.id: {o: float(values[i]) for o, values in columns.items()} for i, item in enumerate(items)}


def _implicit(ctx: StageContext, bank: Any, tokenizer: Any) -> Scorer:
    names = {o: adapter_name(o, 0) for o in ctx.cfg.objectives}

    def score(items: Sequence[ScoreItem]) -> Scores:
        rewards = ctx.models.implicit_rewards(ctx, bank, tokenizer, items, list(names.values()))
        return {i.id: {o: rewards[i.id][name] for o, name in names.items()} for i in items}

    return score


def _oracle(ctx: StageContext, bank: Any, tokenizer: Any) -> Scorer:
    from sipo.synthetic.oracle import OracleJudge

    judge = OracleJudge(ctx.cfg)
    return lambda items: by_id(items, judge.score([i.prompt for i in items], [i.response for i in items]))


def _length(ctx: StageContext, bank: Any, tokenizer: Any) -> Scorer:
    from sipo.scoring.length import length_scores

    objectives = list(ctx.cfg.objectives)
    return lambda items: by_id(items, length_scores(tokenizer, [i.response for i in items], objectives))


def _check_length(cfg: PipelineConfig) -> None:
    from sipo.scoring.length import check_length_objectives

    check_length_objectives(list(cfg.objectives))


def _reward_model(ctx: StageContext, bank: Any, tokenizer: Any) -> Scorer:
    from sipo.scoring.reward_model import RewardModelJudge

    judge = RewardModelJudge(ctx.cfg, ctx.device)
    return lambda items: by_id(items, judge.score([i.prompt for i in items], [i.response for i in items]))


def _check_reward_model(cfg: PipelineConfig) -> None:
    from sipo.scoring.reward_model import check_prompt_format

    settings = cfg.eval.reward_model
    scored = [o for spec in settings.models for o in spec.heads]
    missing = [o for o in cfg.objectives if o not in scored]
    if missing:
        raise ConfigError(f"config key 'eval.reward_model.models': no reward model head scores objective "
                          f"'{missing[0]}'")
    if settings.scale == 0:
        raise ConfigError("config key 'eval.reward_model.scale': must not be 0")
    check_prompt_format(settings.prompt_format)
    for i, spec in enumerate(settings.models):
        if spec.prompt_format is not None:
            check_prompt_format(spec.prompt_format, f"eval.reward_model.models[{i}].prompt_format")


def _reward_model_inputs(cfg: PipelineConfig) -> dict[str, Path]:
    models = enumerate(cfg.eval.reward_model.models)
    return {f"eval.reward_model.models[{i}]": Path(spec.name_or_path).expanduser() for i, spec in models
            if Path(spec.name_or_path).expanduser().is_dir()}


def _check_reward_model_inputs(cfg: PipelineConfig) -> None:
    from sipo.scoring.reward_model import resolve_source

    for i, spec in enumerate(cfg.eval.reward_model.models):
        resolve_source(spec.name_or_path, cfg.model, f"eval.reward_model.models[{i}].name_or_path")


for _judge in (
    JudgeDef("implicit", "the round-1 adapters' implicit rewards", _implicit, shared_scale=False),
    JudgeDef("oracle", "the synthetic benchmark's exact scores", _oracle, ground_truth=True),
    JudgeDef("reward_model", "Hugging Face sequence-classification reward models", _reward_model,
             check=_check_reward_model, config_keys=("eval.reward_model",), inputs=_reward_model_inputs,
             check_inputs=_check_reward_model_inputs),
    JudgeDef("length", "response length in words", _length, check=_check_length),
):
    JUDGES.register(_judge)
