"""The oracle judge of the synthetic benchmark: exact scores, because the truth is known (docs/method.md §3).

For a prompt about entity ``E`` and a response split into sentences (:func:`~sipo.synthetic.world.split_sentences`):

* **correctness** = sentences that state a true fact about ``E`` / all sentences. A sentence about another entity,
  a sentence not of the form ``"E's <attribute> is <value>."`` or with a value that is not one of the attribute's
  values is *not true*. A response with no sentence at all scores 0.0.
* **verbosity** = distinct attributes of ``E`` stated by a parseable sentence (true or false) / number of
  attributes. Unparseable sentences and sentences about other entities add nothing.

A prompt that names no entity makes every sentence "not true" and states nothing. Both scores are in [0, 1] for
any string, and scoring never raises on text.

Example::

    judge = OracleJudge(cfg)
    judge.score(["Tell me about Kara."], ["Kara's colour is red. Kara's pet is cat."])
    # {"correctness": [0.5], "verbosity": [0.3333333333333333]}  when exactly one of the two is true
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sipo.synthetic.world import OBJECTIVES, Fact, World, build_world, check_objectives, split_sentences


def parse_response(world: World, response: object) -> list[tuple[str, Fact | None]]:
    """Each sentence of ``response`` with its parsed fact (None if it does not parse)."""
    return [(s, world.parse_sentence(s)) for s in split_sentences(response)]


def score_response(world: World, prompt: object, response: object) -> dict[str, float]:
    """Both oracle scores of one response (see the module docstring)."""
    entity = world.find_entity(prompt)
    sentences = parse_response(world, response)
    if not sentences:
        return {"correctness": 0.0, "verbosity": 0.0}
    true_count = 0
    stated: set[str] = set()
    for _, fact in sentences:
        if fact is None or entity is None or fact.entity != entity.name:
            continue
        stated.add(fact.attribute)
        if entity.truth[fact.attribute] == fact.value:
            true_count += 1
    return {"correctness": true_count / len(sentences), "verbosity": len(stated) / len(world.attributes)}


class OracleJudge:
    """Scores ``(prompt, response)`` pairs on the configured objectives with the benchmark's exact rules.

    Args:
        cfg: the pipeline config; the world comes from ``cfg.seed`` and ``cfg.data.synthetic`` and the returned
            objectives are ``cfg.objectives`` (each must be ``correctness`` or ``verbosity``).
    """

    def __init__(self, cfg: Any, objectives: Sequence[str] | None = None):
        self.world = build_world(cfg)
        self.objectives = check_objectives(list(objectives if objectives is not None else cfg.objectives))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, list[float]]:
        """Objective -> one score per response, in input order. Shape: ``len(prompts)`` per objective.

        Raises:
            ValueError: ``prompts`` and ``responses`` differ in length (a caller bug, not a text problem).
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rows = [score_response(self.world, p, r) for p, r in zip(prompts, responses)]
        return {o: [row[o] for row in rows] for o in self.objectives}


__all__ = ["OBJECTIVES", "OracleJudge", "parse_response", "score_response"]
