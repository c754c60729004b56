"""Supervised fine-tuning data of the synthetic benchmark (docs/method.md §3).

Four kinds of ``{"prompt": <raw user turn>, "completion": <text>}`` examples, for training prompts only (the review
and rewrite demonstrations, with ``data.synthetic.demo_phrasing``, for the world's demonstration prompts instead):

* ``answers``: a sample of the writer's rated answers (confabulations included: that is the base behaviour);
* ``facts``: short question-and-answer facts that teach the *truth* of every attribute of every entity, the
  unknown ones included (``"What is Kara's colour?"`` -> ``"Kara's colour is red."``), several copies each;
* ``reviews``: a writer answer reviewed in the review language below (not for the held-out entities with
  ``data.synthetic.heldout_demos: false``, nor the rewrites), the prompt rendered by
  :func:`sipo.prompting.review_prompt` with the config's review template;
* ``rewrites``: a writer answer rewritten to follow its review (wrong statements corrected, missing attributes
  added with their true values: a Pareto-better response), the prompt rendered by
  :func:`sipo.prompting.rewrite_prompt`.

The review language (one sentence; clauses in a fixed order, fixes in the response's order, then additions in
attribute order)::

    The response can be more correct and verbose by changing Kara's colour from blue to red, adding Kara's city.
    The response is already correct and verbose.          (nothing to improve)

``changing ...`` clauses appear only when ``correctness`` is an objective, ``adding ...`` clauses only when
``verbosity`` is; ``correct and verbose`` is the templates' ``objective_list``. :func:`read_review` parses it back
and :func:`apply_review` carries it out, so a rewrite demo is literally its review applied.

With ``data.synthetic.review_style: facts`` (benchmark v3) a review states the entity's true facts instead, in the
question-and-answer facts' own words; each fact that the response contradicts is a change and each one it leaves out
an addition (:func:`read_review` reads a review against its response)::

    Facts: Kara's colour is red. Kara's city is Rome. Kara's pet is cat. ...

Only facts about the attributes the objectives care for are stated: the response's own attributes for
``correctness``, the missing ones for ``verbosity``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sipo import prompting
from sipo.synthetic.oracle import parse_response
from sipo.synthetic.world import (
    Fact,
    World,
    build_world,
    check_objectives,
    fact_question,
    fact_sentence,
    split_sentences,
)
from sipo.synthetic.writer import rated_rows, writer_answer

DEMOS_PER_PROMPT = 1
"""Review demonstrations and rewrite demonstrations per training prompt (each)."""
_MAX_REDRAWS = 20
_WORD = re.compile(r"\w+|[^\w\s]")


def synthetic_descriptions() -> dict[str, str]:
    """The default descriptions of the benchmark's objectives, shown in the review prompt."""
    return {
        "correctness": "the share of stated facts that are true",
        "verbosity": "the number of facts the response states",
    }


@dataclass(frozen=True)
class ReviewPlan:
    """What a review asks for: wrong facts to change (``(stated, corrected)``) and ``(entity, attribute)`` to add."""

    fixes: tuple[tuple[Fact, Fact], ...] = ()
    additions: tuple[tuple[str, str], ...] = ()


def _objective_list(objectives: Sequence[str]) -> str:
    return prompting.join_words([prompting.ADJECTIVES.get(o, o) for o in objectives])


def plan_review(world: World, prompt: str, response: str, objectives: Sequence[str]) -> ReviewPlan:
    """The ideal review of ``response`` (the oracle's knowledge): its wrong facts about the prompt's entity and the
    attributes it does not state."""
    entity = world.find_entity(prompt)
    if entity is None:
        return ReviewPlan()
    fixes: list[tuple[Fact, Fact]] = []
    stated: set[str] = set()
    for _, fact in parse_response(world, response):
        if fact is None or fact.entity != entity.name:
            continue
        stated.add(fact.attribute)
        truth = Fact(entity.name, fact.attribute, entity.truth[fact.attribute])
        if "correctness" in objectives and fact != truth and (fact, truth) not in fixes:
            fixes.append((fact, truth))
    additions = []
    if "verbosity" in objectives:
        additions = [(entity.name, a) for a in world.attributes if a not in stated]
    return ReviewPlan(tuple(fixes), tuple(additions))


def review_text(plan: ReviewPlan, objectives: Sequence[str]) -> str:
    """A plan in the review language (see the module docstring)."""
    clauses = [f"changing {old.entity}'s {old.attribute} from {old.value} to {new.value}" for old, new in plan.fixes]
    clauses += [f"adding {name}'s {attribute}" for name, attribute in plan.additions]
    if not clauses:
        return f"The response is already {_objective_list(objectives)}."
    return f"The response can be more {_objective_list(objectives)} by {', '.join(clauses)}."


FACTS = "Facts:"
"""How a review in the ``facts`` language begins (benchmark v3)."""


def facts_review_text(world: World, prompt: str, response: str, objectives: Sequence[str]) -> str:
    """The ideal review of ``response`` in the ``facts`` language (see the module docstring): the true facts of the
    attributes it states (``correctness``) and of those it leaves out (``verbosity``), in the world's order."""
    entity = world.find_entity(prompt)
    if entity is None:
        return review_text(ReviewPlan(), objectives)
    stated = {fact.attribute for _, fact in parse_response(world, response)
              if fact is not None and fact.entity == entity.name}
    wanted = [a for a in world.attributes
              if ("correctness" in objectives and a in stated) or ("verbosity" in objectives and a not in stated)]
    if not wanted:
        return review_text(ReviewPlan(), objectives)
    return " ".join([FACTS, *(fact_sentence(entity.name, a, entity.truth[a]) for a in wanted)])


def _read_facts_review(world: World, review: str, response: object) -> ReviewPlan:
    """A ``facts`` review read against its response: each statement of the response that a fact of the review
    contradicts becomes a change to that fact, each fact about an attribute the response does not state an
    addition. The first fact of the review about an attribute counts; sentences that do not parse are ignored."""
    facts: dict[tuple[str, str], Fact] = {}
    for sentence in split_sentences(review.split(FACTS, 1)[1]):
        fact = world.parse_sentence(sentence)
        if fact is not None:
            facts.setdefault((fact.entity, fact.attribute), fact)
    fixes: list[tuple[Fact, Fact]] = []
    stated: set[tuple[str, str]] = set()
    for _, fact in parse_response(world, response):
        if fact is None:
            continue
        subject = (fact.entity, fact.attribute)
        stated.add(subject)
        told = facts.get(subject)
        if told is not None and told.value != fact.value and (fact, told) not in fixes:
            fixes.append((fact, told))
    additions = tuple(subject for subject in facts if subject not in stated)
    return ReviewPlan(tuple(fixes), additions)


def _subject(world: World, words: Sequence[str]) -> tuple[str, str] | None:
    """``["Kara", "'", "s", "colour"]`` -> ``("Kara", "colour")``; None unless an entity's attribute."""
    if len(words) != 4 or words[1] != "'" or words[2].lower() != "s" or words[3].lower() not in world.attributes:
        return None
    entity = world.find_entity(words[0])
    return (entity.name, words[3].lower()) if entity is not None else None


def read_review(world: World, review: object, response: object = None) -> ReviewPlan:
    """Parse a review written in the review language, or in the ``facts`` language against ``response`` (the
    reviewed response; without it a ``facts`` review only adds); clauses that do not parse are ignored (never
    raises)."""
    if isinstance(review, str) and review.lstrip().startswith(FACTS):
        return _read_facts_review(world, review, response)
    if not isinstance(review, str) or " by " not in review:
        return ReviewPlan()
    fixes, additions = [], []
    for clause in review.split(" by ", 1)[1].split(","):
        words = _WORD.findall(clause.replace("\u2019", "'"))
        if words and words[-1] == ".":
            words = words[:-1]
        verb = words[0].lower() if words else ""
        if verb == "changing" and len(words) == 9 and words[5].lower() == "from" and words[7].lower() == "to":
            subject = _subject(world, words[1:5])
            if subject is None:
                continue
            old = world.parse_sentence(f"{subject[0]}'s {subject[1]} is {words[6]}")
            new = world.parse_sentence(f"{subject[0]}'s {subject[1]} is {words[8]}")
            if old is not None and new is not None:
                fixes.append((old, new))
        elif verb == "adding" and len(words) == 5:
            subject = _subject(world, words[1:5])
            if subject is not None:
                additions.append(subject)
    return ReviewPlan(tuple(fixes), tuple(additions))


def apply_review(world: World, response: str, plan: ReviewPlan) -> str:
    """Carry out ``plan``: change each wrong fact to its correction in place, then add each missing attribute
    with its true value (the world's truth: what the model should know), where the world's attribute order puts it
    (before the first later attribute of that entity; a response in that order stays in it)."""
    sentences: list[tuple[str, Fact | None]] = []
    stated: set[tuple[str, str]] = set()
    corrections = {old: new for old, new in plan.fixes}
    for text, fact in parse_response(world, response):
        if fact is None:
            sentences.append((text + ".", None))
            continue
        fact = corrections.get(fact, fact)
        stated.add((fact.entity, fact.attribute))
        sentences.append((fact_sentence(fact.entity, fact.attribute, fact.value), fact))
    rank = {a: k for k, a in enumerate(world.attributes)}
    for name, attribute in plan.additions:
        if (name, attribute) in stated:
            continue
        stated.add((name, attribute))
        added = Fact(name, attribute, world.entity(name).truth[attribute])
        at = next((i for i, (_, f) in enumerate(sentences)
                   if f is not None and f.entity == name and rank[f.attribute] > rank[attribute]), len(sentences))
        sentences.insert(at, (fact_sentence(name, attribute, added.value), added))
    return " ".join(text for text, _ in sentences)


def _improvable_answer(world: World, entity_name: str, rng: random.Random, objectives: Sequence[str],
                       prompt: str, known_first: float, recall: float) -> tuple[str, ReviewPlan]:
    """A writer answer with something to improve (if one turns up in a few draws)."""
    entity = world.entity(entity_name)
    for _ in range(_MAX_REDRAWS):
        answer = writer_answer(world, entity, rng, known_first, recall)
        plan = plan_review(world, prompt, answer, objectives)
        if plan.fixes or plan.additions:
            break
    return answer, plan


def _demo_review(world: World, prompt: str, response: str, plan: ReviewPlan, objectives: Sequence[str],
                 style: str) -> str:
    """A review demonstration of ``response`` in the configured language (``data.synthetic.review_style``)."""
    if style == "facts":
        return facts_review_text(world, prompt, response, objectives)
    return review_text(plan, objectives)


def sft_examples_by_kind(cfg: Any, objective_descriptions: Mapping[str, str] | None = None, *,
                         answers_per_prompt: int | None = None, fact_copies: int | None = None,
                         demos_per_prompt: int = DEMOS_PER_PROMPT) -> dict[str, list[dict[str, str]]]:
    """The SFT examples grouped by kind: ``answers``, ``facts``, ``reviews``, ``rewrites`` (see the module
    docstring).

    Args:
        cfg: the pipeline config (seed, ``data.synthetic``, ``objectives``, ``review.template``,
            ``rewrite.template``).
        objective_descriptions: descriptions rendered into the review prompt; default
            :func:`synthetic_descriptions`. The review and rewrite stages must render with the same mapping.
        answers_per_prompt: writer answers per training prompt; default ``cfg.data.synthetic.answers_per_prompt``.
        fact_copies: copies of each fact; default ``cfg.data.synthetic.fact_copies``.
    """
    world = build_world(cfg)
    objectives = check_objectives(cfg.objectives)
    descriptions = dict(synthetic_descriptions() if objective_descriptions is None else objective_descriptions)
    seed = world.seed
    settings = cfg.data.synthetic
    first, remembers = settings.known_first, settings.recall
    style = settings.review_style
    if answers_per_prompt is None:
        answers_per_prompt = settings.answers_per_prompt
    if fact_copies is None:
        fact_copies = settings.fact_copies

    by_prompt: dict[str, list[dict]] = {}
    for row in rated_rows(cfg):
        by_prompt.setdefault(row["prompt"], []).append(row)
    answers = []
    for prompt in world.train_prompts:
        rng = random.Random(f"sipo-synthetic-sft-answers:{seed}:{prompt.prompt_id}")
        rows = by_prompt[prompt.prompt]
        for row in rng.sample(rows, min(answers_per_prompt, len(rows))):
            answers.append({"prompt": prompt.prompt, "completion": row["response"]})

    facts = [{"prompt": fact_question(e.name, a), "completion": fact_sentence(e.name, a, e.truth[a])}
             for _ in range(fact_copies) for e in world.entities for a in world.attributes]

    reviews, rewrites = [], []
    for prompt in world.demo_prompts or world.train_prompts:
        if not settings.heldout_demos and prompt.entity in world.heldout:
            continue  # the review_probe stage then tests the review skill on entities it never saw reviewed
        for k in range(demos_per_prompt):
            rng = random.Random(f"sipo-synthetic-sft-review:{seed}:{prompt.prompt_id}:{k}")
            response, plan = _improvable_answer(world, prompt.entity, rng, objectives, prompt.prompt,
                                                  first, remembers)
            reviews.append({
                "prompt": prompting.review_prompt(prompt.prompt, response, objectives, descriptions,
                                                  template=cfg.review.template),
                "completion": _demo_review(world, prompt.prompt, response, plan, objectives, style),
            })
            rng = random.Random(f"sipo-synthetic-sft-rewrite:{seed}:{prompt.prompt_id}:{k}")
            response, plan = _improvable_answer(world, prompt.entity, rng, objectives, prompt.prompt,
                                                  first, remembers)
            review = _demo_review(world, prompt.prompt, response, plan, objectives, style)
            rewrites.append({
                "prompt": prompting.rewrite_prompt(prompt.prompt, response, review, objectives, descriptions,
                                                   template=cfg.rewrite.template),
                "completion": apply_review(world, response, read_review(world, review, response)),
            })
    return {"answers": answers, "facts": facts, "reviews": reviews, "rewrites": rewrites}


def sft_examples(cfg: Any, objective_descriptions: Mapping[str, str] | None = None,
                 **counts: int) -> list[dict[str, str]]:
    """All SFT examples (every kind of :func:`sft_examples_by_kind`), in a seeded shuffled order.

    Returns:
        ``[{"prompt": <raw user turn>, "completion": <text>}, ...]``
    """
    groups = sft_examples_by_kind(cfg, objective_descriptions, **counts)
    examples = [example for kind in ("answers", "facts", "reviews", "rewrites") for example in groups[kind]]
    random.Random(f"sipo-synthetic-sft-order:{cfg.seed}").shuffle(examples)
    return examples


def all_texts(cfg: Any, objective_descriptions: Mapping[str, str] | None = None) -> list[str]:
    """Every string a word-level tokenizer must cover: all prompts (test prompts too), rated responses, SFT
    prompts and completions, every name, attribute and value, and the review language's fixed sentences.
    Duplicates removed, order stable."""
    world = build_world(cfg)
    objectives = check_objectives(cfg.objectives)
    texts = [world.vocabulary_text()]
    texts += [p.prompt for group in (world.train_prompts, world.test_prompts, world.validation_prompts,
                                     world.demo_prompts) for p in group]
    texts += [row["response"] for row in rated_rows(cfg)]
    texts.append(review_text(ReviewPlan(), objectives))
    for group in sft_examples_by_kind(cfg, objective_descriptions).values():
        for example in group:
            texts += [example["prompt"], example["completion"]]
    return list(dict.fromkeys(texts))


def review_skill(world, items: Sequence[tuple[str, str, str]], objectives: Sequence[str]) -> dict[str, Any]:
    """How well the model's reviews match the ideal review (:func:`plan_review`).

    Args:
        items: (prompt, reviewed response, review text) triples.

    Returns:
        ``wrong_facts`` and ``corrected_share`` (wrong statements the review names and corrects to the true value),
        ``changes`` and ``wrong_change_share`` (the review's changes that are not such a correction),
        ``missing`` and ``added_share`` (attributes the response leaves out that the review asks to add); a share
        is None when its denominator is 0.
    """
    wrong = corrected = changes = wrong_changes = missing = added = 0
    for prompt, response, review in items:
        ideal = plan_review(world, prompt, response, objectives)
        got = read_review(world, review, response)
        wrong += len(ideal.fixes)
        corrected += sum(1 for fix in ideal.fixes if fix in got.fixes)
        changes += len(got.fixes)
        wrong_changes += sum(1 for fix in got.fixes if fix not in ideal.fixes)
        missing += len(ideal.additions)
        added += sum(1 for a in ideal.additions if a in got.additions)

    def share(k: int, n: int) -> float | None:
        return round(k / n, 4) if n else None

    return {"reviews": len(items), "wrong_facts": wrong, "corrected_share": share(corrected, wrong),
            "changes": changes, "wrong_change_share": share(wrong_changes, changes), "missing": missing,
            "added_share": share(added, missing)}


__all__ = ["ReviewPlan", "all_texts", "apply_review", "facts_review_text", "plan_review", "read_review", "review_skill", "review_text", "sft_examples",
           "sft_examples_by_kind", "synthetic_descriptions"]
