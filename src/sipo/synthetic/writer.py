"""The writer of the synthetic benchmark: rated responses whose errors grow with length (docs/method.md §3).

An answer states a random number of the entity's attributes (1 to ``num_attributes``, uniform), one fact
sentence each, in the world's attribute order (colour, city, pet, ...): one fixed structure, as a real assistant's
answers have, so that greedy decoding of a tiny model continues an answer coherently instead of repeating itself. Known attributes are stated truly; attributes the writer does not know are
stated with the entity's one *confabulated* value, the same everywhere. The longer the answer, the more likely it
contains the unknown attributes: with probability ``data.synthetic.known_first`` (default 0.5) the writer picks
the attributes it knows first (so only long answers reach the unknown ones), otherwise it picks them uniformly at
random. Long answers are therefore more verbose but less correct, and about half of the pairs conflict at the
default config (``conflict_share``).

With ``data.synthetic.recall`` > 0 the writer sometimes remembers: it states an attribute it does not know with the
true value with that probability. Below 0.5 the confabulated value stays the most likely one, so greedy decoding of
a model trained on the answers still confabulates; but the preference data now shows a true value beating the
confabulated one, which a judge trained on it (a DPO adapter's implicit reward) can learn.

The rows have the per-objective form of HelpSteer, scored by the oracle::

    {"prompt": "Tell me about Kara.", "response": "Kara's pet is cat. Kara's colour is red.",
     "correctness": 0.5, "verbosity": 0.3333333333333333}

Training prompts only: no row uses a test prompt (:func:`test_prompts`, re-exported here from
:mod:`sipo.synthetic.world`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from sipo.records import Pair
from sipo.synthetic.oracle import score_response
from sipo.synthetic.world import (
    Entity,
    World,
    build_world,
    check_objectives,
    fact_sentence,
    loop_entity,
    test_prompts,
)

logger = logging.getLogger(__name__)

KNOWN_FIRST_PROBABILITY = 0.5
"""How often an answer takes the attributes the writer knows before the ones it does not (else uniform)."""
_MAX_REDRAWS = 20


def writer_answer(world: World, entity: Entity, rng: random.Random,
                  known_first: float = KNOWN_FIRST_PROBABILITY, recall: float = 0.0) -> str:
    """One answer of the writer about ``entity`` (see the module docstring), drawn with ``rng``; ``known_first`` is
    the probability that it takes the attributes it knows first (``data.synthetic.known_first``), ``recall`` the
    probability that it states an attribute it does not know with its true value (``data.synthetic.recall``)."""
    attributes = list(world.attributes)
    count = rng.randint(1, len(attributes))
    if rng.random() < known_first:
        known = [a for a in attributes if a not in entity.confabulated]
        unknown = [a for a in attributes if a in entity.confabulated]
        rng.shuffle(known)
        rng.shuffle(unknown)
        chosen = (known + unknown)[:count]
    else:
        chosen = rng.sample(attributes, count)
    chosen.sort(key=attributes.index)
    sentences = []
    for a in chosen:
        value = entity.stated_value(a)
        if recall > 0 and a in entity.confabulated and rng.random() < recall:
            value = entity.truth[a]
        sentences.append(fact_sentence(entity.name, a, value))
    return " ".join(sentences)


def distinct_answers(world: World, entity: Entity, rng: random.Random, count: int,
                     known_first: float = KNOWN_FIRST_PROBABILITY, recall: float = 0.0) -> list[str]:
    """``count`` writer answers, redrawing repeats (a few times at most, so tiny worlds may keep one)."""
    answers: list[str] = []
    for _ in range(count):
        answer = writer_answer(world, entity, rng, known_first, recall)
        for _ in range(_MAX_REDRAWS):
            if answer not in answers:
                break
            answer = writer_answer(world, entity, rng, known_first, recall)
        answers.append(answer)
    return answers


def rated_rows(cfg: Any) -> list[dict]:
    """``responses_per_prompt`` rated writer answers for every training prompt, then for every validation prompt of
    the world's own (``data.synthetic.validation_prompts``), in prompt order.

    Returns:
        rows ``{prompt, response, correctness, verbosity}``; scores from the oracle.
    """
    world = build_world(cfg)
    per_prompt = cfg.data.synthetic.responses_per_prompt
    settings = cfg.data.synthetic
    rows = []
    for prompt in world.train_prompts + world.validation_prompts:
        rng = random.Random(f"sipo-synthetic-writer:{world.seed}:{prompt.prompt_id}")
        for response in distinct_answers(world, world.entity(prompt.entity), rng, per_prompt, settings.known_first,
                                         settings.recall):
            rows.append({"prompt": prompt.prompt, "response": response,
                         **score_response(world, prompt.prompt, response)})
    return rows


def pairs_from_rows(rows: Sequence[dict], objectives: Sequence[str]) -> list[Pair]:
    """Every pair of distinct responses per prompt, labelled per objective by the higher score (tie: None).

    The pair builder shared by every data source (:func:`sipo.data.jsonl.pairs_from_scored_responses`).
    """
    from sipo.data.pairs import pairs_from_scored_responses  # here: sipo.data may import this module

    scored = [(r["prompt"], r["response"], {o: r[o] for o in objectives}) for r in rows]
    return pairs_from_scored_responses(scored, list(objectives))


def load_pairs(cfg: Any) -> list[Pair]:
    """The ``synthetic`` data source: pairs of the writer's rated answers, for ``cfg.objectives``."""
    objectives = check_objectives(cfg.objectives)
    world = build_world(cfg)
    # Benchmark v2: the held-out entities' answers stay in the SFT data but never become preference pairs (so they
    # reach neither DPO, its validation pairs, nor the self-improvement loop).
    rows = [r for r in rated_rows(cfg) if loop_entity(world, r["prompt"])]
    pairs = pairs_from_rows(rows, objectives)
    logger.info("synthetic: %d pairs, %.1f%% conflicting", len(pairs), 100 * conflict_share(pairs))
    return pairs


def conflict_share(pairs: Sequence[Pair]) -> float:
    """Share of ``pairs`` whose objectives prefer different responses (0.0 for no pairs)."""
    return sum(p.conflict for p in pairs) / len(pairs) if pairs else 0.0


__all__ = ["KNOWN_FIRST_PROBABILITY", "conflict_share", "distinct_answers", "load_pairs", "pairs_from_rows",
           "rated_rows", "test_prompts", "writer_answer"]
