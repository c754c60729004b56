"""The world of the synthetic conflict benchmark (docs/method.md §3): fictional entities, their attributes, the
sentences that state them, and the prompts that ask about them.

Everything here is a pure function of ``cfg.seed`` and ``cfg.data.synthetic``:

* each entity has one value per attribute (``truth``); for ``unknown_per_entity`` of its attributes the writer
  "does not know" the value and confabulates one fixed wrong value (``confabulated``);
* a fact has exactly one surface form, ``"Ava's colour is red."`` (:func:`fact_sentence`), which
  :func:`parse_sentence` reads back (tolerant of the spaces a word-level tokenizer puts around ``'``);
* a prompt is ``[greeting] core [closing]``, e.g. ``"Hi! What do you know about Ava? Thanks!"``. Each entity has
  one held-out core phrasing: its test prompts use that core and no training prompt of that entity does, while
  every core (and every entity) still appears in training.
* benchmark v2 (``heldout_entities`` > 0): the last ``heldout_entities`` entities (the entity order is seeded) are
  *held out*: no preference pair, validation pair or self-improvement prompt is about them (their facts, writer
  answers and review/rewrite demonstrations stay in the SFT data, so the model knows them). Their test prompts
  form the *transfer* test set; the other entities' test prompts the *in-distribution* one (docs/benchmark.md).

``prompt_id`` is a hash of the prompt text, the same scheme as every data source (:mod:`sipo.data.jsonl`).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sipo.errors import ConfigError
from sipo.records import PromptRecord

OBJECTIVES = ("correctness", "verbosity")
"""The objectives the oracle can judge."""

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "yellow", "purple"),
    "city": ("Paris", "Rome", "Tokyo", "Cairo", "Lima"),
    "pet": ("cat", "dog", "fish", "bird", "rabbit"),
    "food": ("rice", "bread", "soup", "pasta", "cheese"),
    "number": ("two", "three", "five", "seven", "nine"),
    "sport": ("tennis", "golf", "rugby", "hockey", "boxing"),
    "drink": ("tea", "coffee", "milk", "juice", "water"),
    "instrument": ("piano", "guitar", "violin", "drum", "flute"),
}
"""Attribute -> its values; ``num_attributes`` takes the first N attributes. Values are single words, distinct
across attributes."""

CORE_PHRASINGS = (
    "Tell me about {name}.",
    "What do you know about {name}?",
    "Describe {name}.",
    "Who is {name}?",
    "Give me facts about {name}.",
    "What can you say about {name}?",
)
GREETINGS = ("", "Hello!", "Hi!")
CLOSINGS = ("", "Thanks!")

_FIRST_SYLLABLES = ("Ka", "Lo", "Mi", "Ra", "Te", "Zu", "Ve", "No", "Si", "Ba")
_NEXT_SYLLABLES = ("ra", "len", "mo", "vi", "dor", "na", "sel", "tu")

_WORD = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"[.!?\n]+")
_HAS_WORD = re.compile(r"\w")


def fact_sentence(name: str, attribute: str, value: str) -> str:
    """The one surface form of a fact: ``fact_sentence("Ava", "colour", "red") == "Ava's colour is red."``."""
    return f"{name}'s {attribute} is {value}."


def fact_question(name: str, attribute: str) -> str:
    """``"What is Ava's colour?"``: the prompt of a short question-and-answer fact."""
    return f"What is {name}'s {attribute}?"


def prompt_id_for(prompt: str) -> str:
    """The stable id of a prompt: the id scheme of every data source (:func:`sipo.data.pairs.prompt_id_for`)."""
    # Imported here: ``sipo.data`` may register this benchmark as a source, so a top-level import could cycle.
    from sipo.data.pairs import prompt_id_for as data_prompt_id

    return data_prompt_id(prompt)


@dataclass(frozen=True)
class Entity:
    name: str
    truth: dict[str, str]
    """Attribute -> true value."""
    confabulated: dict[str, str] = field(default_factory=dict)
    """Attribute the writer does not know -> the one wrong value it always states for it."""

    def stated_value(self, attribute: str) -> str:
        """The value the writer states for ``attribute`` (wrong iff the writer does not know it)."""
        return self.confabulated.get(attribute, self.truth[attribute])


@dataclass(frozen=True)
class SyntheticPrompt:
    prompt_id: str
    prompt: str
    entity: str
    core: int
    """Index into :data:`CORE_PHRASINGS`."""

    def record(self) -> PromptRecord:
        return PromptRecord(prompt_id=self.prompt_id, prompt=self.prompt)


@dataclass(frozen=True)
class Fact:
    """A parsed attribute sentence (values in their canonical spelling)."""

    entity: str
    attribute: str
    value: str


@dataclass(frozen=True)
class World:
    seed: int
    attributes: tuple[str, ...]
    entities: tuple[Entity, ...]
    train_prompts: tuple[SyntheticPrompt, ...]
    test_prompts: tuple[SyntheticPrompt, ...]
    heldout: frozenset[str] = frozenset()
    """Names of the held-out entities (benchmark v2): in no pair and no self-improvement prompt."""
    validation_prompts: tuple[SyntheticPrompt, ...] = ()
    """With ``data.synthetic.validation_prompts``: prompts of the loop's entities in a held-out core phrasing of
    their own (rated pairs, no SFT example); empty otherwise."""
    demo_prompts: tuple[SyntheticPrompt, ...] = ()
    """With ``data.synthetic.demo_phrasing``: every entity's prompts in a core phrasing of their own, on which the
    SFT review and rewrite demonstrations are written (no pair, no writer answer); empty: the demonstrations are
    written on the training prompts."""
    _by_lower_name: dict[str, Entity] = field(repr=False, compare=False, default_factory=dict)

    def entity(self, name: str) -> Entity:
        return self._by_lower_name[name.lower()]

    def values(self, attribute: str) -> tuple[str, ...]:
        return ATTRIBUTES[attribute]

    def find_entity(self, prompt: object) -> Entity | None:
        """The first entity named in ``prompt`` (a whole word, any case); None if there is none."""
        if not isinstance(prompt, str):
            return None
        for word in _WORD.findall(prompt):
            entity = self._by_lower_name.get(word.lower())
            if entity is not None:
                return entity
        return None

    def parse_sentence(self, sentence: str) -> Fact | None:
        """Read one sentence (without its final ``.``) as ``<name>'s <attribute> is <value>``; None if it is not
        exactly that form with a known entity, one of the world's attributes and a value of that attribute."""
        words = _WORD.findall(sentence.replace("\u2019", "'"))
        if len(words) != 6 or words[1] != "'" or words[2].lower() != "s" or words[4].lower() != "is":
            return None
        entity = self._by_lower_name.get(words[0].lower())
        attribute = words[3].lower()
        if entity is None or attribute not in self.attributes:
            return None
        for value in ATTRIBUTES[attribute]:
            if value.lower() == words[5].lower():
                return Fact(entity.name, attribute, value)
        return None

    def vocabulary_text(self) -> str:
        """Every name, attribute and value of the world, as one line of text (for building a tokenizer)."""
        words = [e.name for e in self.entities] + list(self.attributes)
        words += [v for a in self.attributes for v in ATTRIBUTES[a]]
        return " ".join(words)


def split_sentences(text: object) -> list[str]:
    """Split at ``.``, ``!``, ``?`` and line breaks; fragments without a letter or digit are not sentences."""
    if not isinstance(text, str):
        return []
    return [s.strip() for s in _SENTENCE_END.split(text) if _HAS_WORD.search(s)]


def check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """The synthetic benchmark judges only :data:`OBJECTIVES`; anything else is a config error."""
    for name in objectives:
        if name not in OBJECTIVES:
            raise ConfigError(
                f"config key 'objectives': the synthetic benchmark judges {list(OBJECTIVES)}, not '{name}'")
    return tuple(objectives)


def _settings(cfg: Any) -> tuple[int, int, int, int, int, int, int, int, int, bool]:
    s = cfg.data.synthetic
    return (int(cfg.seed), s.num_entities, s.num_attributes, s.unknown_per_entity, s.responses_per_prompt,
            s.num_train_prompts, s.num_test_prompts, s.heldout_entities, s.validation_prompts, s.demo_phrasing)


def _validate(num_entities: int, num_attributes: int, unknown: int, responses: int, num_train: int,
              num_test: int, heldout: int = 0, num_validation: int = 0, demo_phrasing: bool = False) -> None:
    key = "data.synthetic."
    if num_entities < 1:
        raise ConfigError(f"config key '{key}num_entities': must be at least 1")
    if not 0 <= heldout < num_entities:
        raise ConfigError(f"config key '{key}heldout_entities': must be between 0 and num_entities - 1 "
                          f"({num_entities - 1}): the self-improvement loop needs at least one entity")
    if len(_name_pool(num_entities)) < num_entities:
        raise ConfigError(f"config key '{key}num_entities': at most {len(_name_pool(10**9))} entities")
    if not 1 <= num_attributes <= len(ATTRIBUTES):
        raise ConfigError(f"config key '{key}num_attributes': must be between 1 and {len(ATTRIBUTES)}")
    if not 0 <= unknown <= num_attributes:
        raise ConfigError(f"config key '{key}unknown_per_entity': must be between 0 and num_attributes")
    if responses < 2:
        raise ConfigError(f"config key '{key}responses_per_prompt': must be at least 2 (pairs need two)")
    variants = len(GREETINGS) * len(CLOSINGS)
    held_cores = 1 + bool(num_validation) + bool(demo_phrasing)
    train_capacity = num_entities * (len(CORE_PHRASINGS) - held_cores) * variants
    if not 1 <= num_train <= train_capacity:
        raise ConfigError(f"config key '{key}num_train_prompts': must be between 1 and {train_capacity} "
                          f"for {num_entities} entities")
    if not 0 <= num_test <= num_entities * variants:
        raise ConfigError(f"config key '{key}num_test_prompts': must be between 0 and "
                          f"{num_entities * variants} for {num_entities} entities")
    loop_capacity = (num_entities - heldout) * variants
    if not 0 <= num_validation <= loop_capacity:
        raise ConfigError(f"config key '{key}validation_prompts': must be between 0 and {loop_capacity} for "
                          f"{num_entities - heldout} entities in the loop")


def _name_pool(count: int) -> list[str]:
    """Fictional names made of syllables; three-syllable names only when two-syllable ones run out."""
    reserved = {w.lower() for w in ATTRIBUTES} | {v.lower() for vs in ATTRIBUTES.values() for v in vs}
    two = [a + b for a, b in itertools.product(_FIRST_SYLLABLES, _NEXT_SYLLABLES)]
    names = [n for n in two if n.lower() not in reserved]
    if count > len(names):
        three = [a + b + c for a, b, c in itertools.product(_FIRST_SYLLABLES, _NEXT_SYLLABLES, _NEXT_SYLLABLES)]
        names += [n for n in three if n.lower() not in reserved]
    return names


def _prompt_text(core: int, greeting: str, closing: str, name: str) -> str:
    return " ".join(p for p in (greeting, CORE_PHRASINGS[core].format(name=name), closing) if p)


def _round_robin(per_entity: list[list[SyntheticPrompt]], count: int) -> tuple[SyntheticPrompt, ...]:
    """Take prompts one entity at a time so every entity gets ``count / num_entities`` of them (+-1)."""
    out: list[SyntheticPrompt] = []
    for column in itertools.zip_longest(*per_entity):
        for item in column:
            if item is not None and len(out) < count:
                out.append(item)
    return tuple(out)


def build_world(cfg: Any) -> World:
    """The world of ``cfg`` (``cfg.seed`` and ``cfg.data.synthetic``); cached, so calling it again is free.

    Raises:
        ConfigError: a ``data.synthetic`` value is out of range.
    """
    return _build_world(*_settings(cfg))


@lru_cache(maxsize=8)
def _build_world(seed: int, num_entities: int, num_attributes: int, unknown: int, responses: int,
                 num_train: int, num_test: int, heldout: int = 0, num_validation: int = 0,
                 demo_phrasing: bool = False) -> World:
    _validate(num_entities, num_attributes, unknown, responses, num_train, num_test, heldout, num_validation,
              demo_phrasing)
    rng = random.Random(f"sipo-synthetic-world:{seed}")
    attributes = tuple(list(ATTRIBUTES)[:num_attributes])
    names = rng.sample(_name_pool(num_entities), num_entities)
    entities = []
    for name in names:
        truth = {a: rng.choice(ATTRIBUTES[a]) for a in attributes}
        unknown_attributes = sorted(rng.sample(attributes, unknown), key=attributes.index)
        confabulated = {a: rng.choice([v for v in ATTRIBUTES[a] if v != truth[a]]) for a in unknown_attributes}
        entities.append(Entity(name, truth, confabulated))

    # Entity i holds out core phrasing (offset + i) mod #cores, so every core stays in some training prompts; with
    # validation prompts also the next core, for the loop's entities' validation prompts; with demo_phrasing also the
    # next one, for the review and rewrite demonstrations.
    offset = rng.randrange(len(CORE_PHRASINGS))
    variants = list(itertools.product(GREETINGS, CLOSINGS))
    train_per_entity, test_per_entity, validation_per_entity, demos = [], [], [], []
    for i, entity in enumerate(entities):
        held_out = (offset + i) % len(CORE_PHRASINGS)
        for_validation = (offset + i + 1) % len(CORE_PHRASINGS) if num_validation else None
        for_demos = (offset + i + 1 + bool(num_validation)) % len(CORE_PHRASINGS) if demo_phrasing else None
        train, test, validation = [], [], []
        for core in range(len(CORE_PHRASINGS)):
            for greeting, closing in variants:
                text = _prompt_text(core, greeting, closing, entity.name)
                prompt = SyntheticPrompt(prompt_id_for(text), text, entity.name, core)
                (test if core == held_out else validation if core == for_validation
                 else demos if core == for_demos else train).append(prompt)
        rng.shuffle(train)
        rng.shuffle(test)
        train_per_entity.append(train)
        test_per_entity.append(test)
        if i < len(entities) - heldout:
            validation_per_entity.append(validation)
    if num_validation:
        # Seeded apart from the world above, so that the same seed keeps its entities with or without them.
        validation_rng = random.Random(f"sipo-synthetic-validation:{seed}")
        for validation in validation_per_entity:
            validation_rng.shuffle(validation)
    return World(
        seed=seed,
        attributes=attributes,
        entities=tuple(entities),
        train_prompts=_round_robin(train_per_entity, num_train),
        test_prompts=_round_robin(test_per_entity, num_test),
        heldout=frozenset(e.name for e in entities[len(entities) - heldout:]) if heldout else frozenset(),
        validation_prompts=_round_robin(validation_per_entity, num_validation),
        demo_prompts=tuple(demos),
        _by_lower_name={e.name.lower(): e for e in entities},
    )


def train_prompts(cfg: Any) -> list[PromptRecord]:
    """The prompts the rated responses and the SFT data are written for."""
    return [p.record() for p in build_world(cfg).train_prompts]


def test_prompts(cfg: Any) -> list[PromptRecord]:
    """The held-out evaluation prompts: no training row or SFT example uses any of them."""
    return [p.record() for p in build_world(cfg).test_prompts]


test_prompts.__test__ = False  # type: ignore[attr-defined]  # keep pytest from collecting it when imported


def validation_prompt_ids(cfg: Any) -> list[str]:
    """The ids of the world's own validation prompts (``data.synthetic.validation_prompts``; empty: none, and the
    validation prompts are a share of the training prompts)."""
    return [p.prompt_id for p in build_world(cfg).validation_prompts]


IN_DISTRIBUTION, TRANSFER = "in_distribution", "transfer"
"""The two test sets of benchmark v2 (docs/benchmark.md)."""


def test_sets(cfg: Any) -> dict[str, list[str]]:
    """Benchmark v2's test sets as prompt ids: ``in_distribution`` (test prompts of the self-improvement entities)
    and ``transfer`` (test prompts of the held-out entities); empty without held-out entities."""
    world = build_world(cfg)
    if not world.heldout:
        return {}
    sets: dict[str, list[str]] = {IN_DISTRIBUTION: [], TRANSFER: []}
    for p in world.test_prompts:
        sets[TRANSFER if p.entity in world.heldout else IN_DISTRIBUTION].append(p.prompt_id)
    return sets


test_sets.__test__ = False  # type: ignore[attr-defined]


def probe_prompts(cfg: Any, limit: int) -> dict[str, list[PromptRecord]]:
    """The review probe's prompts: up to ``limit`` training prompts of the loop's entities (``in_distribution``) and
    as many of the held-out entities (``transfer``), in the world's order (one entity after another, so each set
    spreads evenly over its entities); empty without held-out entities. The loop never reads them back: the probe
    only measures its reviews."""
    world = build_world(cfg)
    if not world.heldout or limit < 1:
        return {}
    sets: dict[str, list[PromptRecord]] = {IN_DISTRIBUTION: [], TRANSFER: []}
    for p in world.train_prompts:
        chosen = sets[TRANSFER if p.entity in world.heldout else IN_DISTRIBUTION]
        if len(chosen) < limit:
            chosen.append(p.record())
    return sets


def loop_entity(world: World, prompt: str) -> bool:
    """Whether ``prompt`` may feed preference pairs and the self-improvement loop: it names an entity that is not
    held out (prompts naming no entity are kept)."""
    entity = world.find_entity(prompt)
    return entity is None or entity.name not in world.heldout
