"""Benchmark v3 (docs/benchmark.md): the checked review language that recalls the truth attribute by attribute, and
the v3 preset's SFT data. Pure functions; no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipo.configure import load_config
from sipo.synthetic import build_world, rated_rows, sft_examples_by_kind
from sipo.synthetic.diagnostics import review_skill
from sipo.synthetic.sft_data import (
    MISSING,
    TRUTH,
    apply_review,
    checked_review_text,
    plan_review,
    read_review,
)
from sipo.synthetic.world import Fact, fact_sentence

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ("correctness", "verbosity")


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "configs" / "demo.yaml", ["run_dir=unused", "seed=3"])


@pytest.fixture(scope="module")
def world(cfg):
    return build_world(cfg)


def _entity_with_confabulation(world):
    return next(e for e in world.entities if e.confabulated)


def test_the_checked_review_of_every_writer_answer_reads_back_as_its_ideal_review(cfg, world):
    rows = rated_rows(cfg)
    assert rows
    for row in rows:
        text = checked_review_text(world, row["prompt"], row["response"], OBJECTIVES)
        got, ideal = read_review(world, text), plan_review(world, row["prompt"], row["response"], OBJECTIVES)
        assert set(got.fixes) == set(ideal.fixes), text
        assert set(got.additions) == set(ideal.additions), text


def test_the_checked_review_copies_each_statement_then_recalls_its_truth(world):
    entity = _entity_with_confabulation(world)
    wrong_attribute = next(iter(entity.confabulated))
    wrong = fact_sentence(entity.name, wrong_attribute, entity.confabulated[wrong_attribute])
    text = checked_review_text(world, f"Tell me about {entity.name}.", wrong, OBJECTIVES)
    truth = fact_sentence(entity.name, wrong_attribute, entity.truth[wrong_attribute])
    assert f"{wrong} {TRUTH} {truth}" in text
    # Every other attribute is missing, and its truth follows.
    assert text.count(MISSING) == len(world.attributes) - 1
    assert text.count(TRUTH) == len(world.attributes)
    plan = read_review(world, text)
    assert plan.fixes == ((Fact(entity.name, wrong_attribute, entity.confabulated[wrong_attribute]),
                           Fact(entity.name, wrong_attribute, entity.truth[wrong_attribute])),)
    assert len(plan.additions) == len(world.attributes) - 1


def test_a_miscopied_statement_is_a_wrong_change_and_a_wrong_truth_corrects_nothing(world):
    entity = _entity_with_confabulation(world)
    attribute = next(iter(entity.confabulated))
    stated = entity.confabulated[attribute]
    other = next(v for v in world.values(attribute) if v not in (stated, entity.truth[attribute]))
    prompt, response = f"Describe {entity.name}.", fact_sentence(entity.name, attribute, stated)
    right = f"{TRUTH} {fact_sentence(entity.name, attribute, entity.truth[attribute])}"
    # The review says the response stated `other` (it stated `stated`): its change is not the ideal one.
    miscopied = f"{fact_sentence(entity.name, attribute, other)} {right}"
    skill = review_skill(world, [(prompt, response, miscopied)], ["correctness"])
    assert skill["corrected_share"] == 0.0 and skill["wrong_change_share"] == 1.0
    # The review recalls a wrong truth: the confabulation is not corrected either.
    misrecalled = f"{response} {TRUTH} {fact_sentence(entity.name, attribute, other)}"
    skill = review_skill(world, [(prompt, response, misrecalled)], ["correctness"])
    assert skill["corrected_share"] == 0.0 and skill["wrong_change_share"] == 1.0
    # The ideal checked review corrects it, with no wrong change.
    skill = review_skill(world, [(prompt, response, f"{response} {right}")], ["correctness"])
    assert skill["corrected_share"] == 1.0 and skill["wrong_change_share"] == 0.0


def test_reading_a_checked_review_never_raises_on_garbage(world):
    entity = world.entities[0]
    for text in ["Truth:", f"{TRUTH} {TRUTH} {MISSING}", f"{MISSING} {MISSING}. Truth: nonsense is here.",
                 f"Truth: {entity.name}'s colour is", "Missing. Truth: Nobody's colour is red.", "Truth: ....", ""]:
        plan = read_review(world, text)
        assert isinstance(plan.fixes, tuple) and isinstance(plan.additions, tuple)


def test_v3_review_and_rewrite_demonstrations_recall_the_whole_truth(cfg, world):
    groups = sft_examples_by_kind(cfg)
    assert all(TRUTH in example["completion"] for example in groups["reviews"])
    for example in groups["rewrites"]:
        prompt = example["prompt"].split("Question: ", 1)[1].split("\n", 1)[0]
        entity = world.find_entity(prompt)
        # A rewrite carries out its checked review: every attribute, stated truly, in the world's order.
        assert example["completion"] == " ".join(fact_sentence(entity.name, a, entity.truth[a])
                                                  for a in world.attributes)


def test_v2_keeps_its_review_language(world):
    v2 = load_config(ROOT / "configs" / "demo-v2.yaml", ["run_dir=unused", "seed=3"])
    assert not v2.data.synthetic.review_checks
    groups = sft_examples_by_kind(v2)
    assert not any(TRUTH in example["completion"] for example in groups["reviews"])
    example = groups["rewrites"][0]
    review = example["prompt"].split("Review: ", 1)[1]
    response = example["prompt"].split("Response: ", 1)[1].split("\n", 1)[0]
    assert example["completion"] == apply_review(build_world(v2), response, read_review(build_world(v2), review))
