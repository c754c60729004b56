"""Benchmark v3 (docs/benchmark.md): the ``facts`` review language (a review states the entity's true facts; read
against the response, each contradicted statement is a change and each left-out attribute an addition), and the v3
preset's SFT data. Pure functions; no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipo.configure import load_config
from sipo.synthetic import build_world, rated_rows, sft_examples_by_kind
from sipo.synthetic.sft_data import (
    FACTS,
    apply_review,
    facts_review_text,
    plan_review,
    read_review,
    review_skill,
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


def test_the_facts_review_of_every_writer_answer_reads_back_as_its_ideal_review(cfg, world):
    rows = rated_rows(cfg)
    assert rows
    for row in rows:
        text = facts_review_text(world, row["prompt"], row["response"], OBJECTIVES)
        got = read_review(world, text, row["response"])
        assert got == plan_review(world, row["prompt"], row["response"], OBJECTIVES), text


def test_a_facts_review_states_the_truth_of_each_attribute_the_objectives_care_for(world):
    entity = _entity_with_confabulation(world)
    attribute = next(iter(entity.confabulated))
    wrong = fact_sentence(entity.name, attribute, entity.confabulated[attribute])
    prompt, truth = f"Tell me about {entity.name}.", fact_sentence(entity.name, attribute, entity.truth[attribute])
    both = facts_review_text(world, prompt, wrong, OBJECTIVES)
    assert both.startswith(FACTS) and truth in both and both.count(f"{entity.name}'s") == len(world.attributes)
    assert facts_review_text(world, prompt, wrong, ["correctness"]) == f"{FACTS} {truth}"
    assert truth not in facts_review_text(world, prompt, wrong, ["verbosity"])
    plan = read_review(world, both, wrong)
    assert plan.fixes == ((Fact(entity.name, attribute, entity.confabulated[attribute]),
                           Fact(entity.name, attribute, entity.truth[attribute])),)
    assert len(plan.additions) == len(world.attributes) - 1
    # Without the response a facts review only adds.
    assert read_review(world, both).fixes == () and len(read_review(world, both).additions) == len(world.attributes)


def test_review_skill_of_facts_reviews_counts_recalls_not_words(world):
    entity = _entity_with_confabulation(world)
    attribute = next(iter(entity.confabulated))
    stated = entity.confabulated[attribute]
    other = next(v for v in world.values(attribute) if v not in (stated, entity.truth[attribute]))
    prompt, response = f"Describe {entity.name}.", fact_sentence(entity.name, attribute, stated)
    right = f"{FACTS} {fact_sentence(entity.name, attribute, entity.truth[attribute])}"
    skill = review_skill(world, [(prompt, response, right)], ["correctness"])
    assert skill["corrected_share"] == 1.0 and skill["wrong_change_share"] == 0.0
    # A review that recalls a wrong value corrects nothing, and its change is wrong.
    misrecalled = f"{FACTS} {fact_sentence(entity.name, attribute, other)}"
    skill = review_skill(world, [(prompt, response, misrecalled)], ["correctness"])
    assert skill["corrected_share"] == 0.0 and skill["wrong_change_share"] == 1.0
    # A review that repeats the confabulation changes nothing.
    skill = review_skill(world, [(prompt, response, f"{FACTS} {response}")], ["correctness"])
    assert skill["corrected_share"] == 0.0 and skill["changes"] == 0


def test_reading_a_facts_review_never_raises_on_garbage(world):
    entity = world.entities[0]
    for text in [FACTS, f"{FACTS} {FACTS}", f"{FACTS} nonsense is here.", f"{FACTS} {entity.name}'s colour is",
                 f"{FACTS} Nobody's colour is red.", f"{FACTS} ....", f"  {FACTS}"]:
        for response in (None, "", "garbage", 7, f"{entity.name}'s colour is red."):
            plan = read_review(world, text, response)
            assert isinstance(plan.fixes, tuple) and isinstance(plan.additions, tuple)


def test_v3_review_and_rewrite_demonstrations_recall_the_whole_truth(cfg, world):
    groups = sft_examples_by_kind(cfg)
    assert all(example["completion"].startswith(FACTS) for example in groups["reviews"])
    for example in groups["rewrites"]:
        prompt = example["prompt"].split("Question: ", 1)[1].split("\n", 1)[0]
        entity = world.find_entity(prompt)
        # A rewrite carries out its review: every attribute, stated truly, in the world's order.
        assert example["completion"] == " ".join(fact_sentence(entity.name, a, entity.truth[a])
                                                  for a in world.attributes)


def test_v2_keeps_its_review_language(world):
    v2 = load_config(ROOT / "configs" / "demo-v2.yaml", ["run_dir=unused", "seed=3"])
    assert v2.data.synthetic.review_style == "plain"
    groups = sft_examples_by_kind(v2)
    assert not any(FACTS in example["completion"] for example in groups["reviews"])
    example = groups["rewrites"][0]
    review = example["prompt"].split("Review: ", 1)[1]
    response = example["prompt"].split("Response: ", 1)[1].split("\n", 1)[0]
    assert example["completion"] == apply_review(build_world(v2), response, read_review(build_world(v2), review))


def test_the_oracle_filter_keeps_a_candidate_that_matches_an_error_free_original_and_says_more():
    from sipo.ablations import select_for

    short_and_true = {"correctness": 1.0, "verbosity": 0.4}
    long_and_wrong = {"correctness": 0.4, "verbosity": 1.0}
    candidates = [("tie", {"correctness": 1.0, "verbosity": 0.4}), ("full", {"correctness": 1.0, "verbosity": 1.0})]
    # Exact scores tie: the complete true answer Pareto-dominates both originals, though not strictly on correctness.
    assert select_for("sipo_oracle_filter", candidates, short_and_true, long_and_wrong) == "full"
    # A copy of an original dominates neither of them.
    assert select_for("sipo_oracle_filter", candidates[:1], short_and_true, long_and_wrong) is None
    # The learned judges' rule stays strict.
    assert select_for("sipo_no_rewrite", candidates, short_and_true, long_and_wrong) is None


def test_the_demo_is_the_full_protocol_without_the_ablations():
    """configs/demo.yaml (the 10-minute demo) and configs/demo-full.yaml (the protocol's runs) differ only in their
    methods and run folder; the demo keeps what the validity conditions and the oracle-gain share need."""
    from dataclasses import asdict

    demo = asdict(load_config(ROOT / "configs" / "demo.yaml", ["run_dir=r"]))
    full = asdict(load_config(ROOT / "configs" / "demo-full.yaml", ["run_dir=r"]))
    assert {"mod", "sipo", "sipo_oracle_filter", "dpo_lw", "modpo"} <= set(demo["methods"])
    assert set(full["methods"]) - set(demo["methods"]) == {"sipo_no_rewrite", "sipo_no_filter", "nll_control"}
    demo.pop("methods"), full.pop("methods")
    assert demo == full


def test_without_heldout_demos_the_held_out_entities_keep_their_facts_and_answers_but_no_review_demos():
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["run_dir=unused", "seed=3"])
    off = load_config(ROOT / "configs" / "demo.yaml", ["run_dir=unused", "seed=3", "data.synthetic.heldout_demos=false"])
    world = build_world(off)
    assert world.heldout

    def entities(examples):
        return {world.find_entity(e["prompt"]).name for e in examples}

    with_demos, without = sft_examples_by_kind(cfg), sft_examples_by_kind(off)
    assert with_demos["facts"] == without["facts"] and with_demos["answers"] == without["answers"]
    for kind in ("reviews", "rewrites"):
        assert entities(with_demos[kind]) & world.heldout  # v3.1 demonstrates reviews on every entity
        assert without[kind] and not entities(without[kind]) & world.heldout
        assert without[kind] == [e for e in with_demos[kind] if world.find_entity(e["prompt"]).name not in world.heldout]


def test_the_review_probe_takes_training_prompts_of_each_entity_set():
    from sipo.synthetic.world import probe_prompts

    cfg = load_config(ROOT / "configs" / "demo.yaml", ["run_dir=unused", "seed=3"])
    world = build_world(cfg)
    sets = probe_prompts(cfg, 12)
    assert set(sets) == {"in_distribution", "transfer"}
    train = {p.prompt_id for p in world.train_prompts}
    for name, prompts in sets.items():
        assert len(prompts) == 12 and len({p.prompt_id for p in prompts}) == 12
        assert {p.prompt_id for p in prompts} <= train  # never a test prompt
        names = [world.find_entity(p.prompt).name for p in prompts]
        assert all((n in world.heldout) == (name == "transfer") for n in names)
        assert len(set(names)) == 6  # spread over every entity of the set
    assert probe_prompts(cfg, 0) == {}
    assert probe_prompts(load_config(ROOT / "configs" / "demo-v1.yaml", ["run_dir=unused"]), 12) == {}


def test_validation_prompts_of_their_own_use_a_held_out_phrasing_and_have_pairs_but_no_sft_example():
    from sipo.stages.prepare import compute

    base = ["run_dir=unused", "seed=3"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", base)
    on = load_config(ROOT / "configs" / "demo.yaml", [*base, "data.synthetic.validation_prompts=10"])
    world, other = build_world(on), build_world(cfg)
    assert other.validation_prompts == ()
    # the same entities and truth; the validation core is neither the test core nor any training core of its entity
    assert [(e.name, e.truth) for e in world.entities] == [(e.name, e.truth) for e in other.entities]
    assert len(world.validation_prompts) == 10
    per_entity = {}
    for p in world.validation_prompts:
        per_entity.setdefault(p.entity, set()).add(p.core)
    assert not set(per_entity) & world.heldout and len(per_entity) == len(world.entities) - len(world.heldout)
    for name, cores in per_entity.items():
        assert len(cores) == 1
        assert not cores & {p.core for p in world.train_prompts if p.entity == name}
        assert not cores & {p.core for p in world.test_prompts if p.entity == name}
    counts = [sum(p.entity == n for p in world.validation_prompts) for n in per_entity]
    assert max(counts) - min(counts) <= 1  # spread over the loop's entities
    # rated pairs for them, no SFT example mentions them, and prepare puts exactly them in validation
    ids = {p.prompt_id for p in world.validation_prompts}
    texts = {p.prompt for p in world.validation_prompts}
    assert texts <= {r["prompt"] for r in rated_rows(on)}
    for kind, examples in sft_examples_by_kind(on).items():
        assert not any(t in e["prompt"] for e in examples for t in texts), kind
    _, splits, _ = compute(on)
    assert {p.prompt_id for p in splits.validation} == ids
    trained = {p.prompt_id for pairs in splits.train.values() for p in pairs} | {p.prompt_id for p in splits.train_conflict}
    assert not trained & ids and not {p.prompt_id for p in splits.test_prompts} & ids


def test_validation_prompts_beyond_the_loops_phrasings_are_refused():
    from sipo.errors import ConfigError

    cfg = load_config(ROOT / "configs" / "demo.yaml", ["run_dir=unused", "seed=3", "data.synthetic.validation_prompts=37"])
    with pytest.raises(ConfigError, match="validation_prompts"):
        build_world(cfg)


def test_demo_phrasing_writes_the_review_and_rewrite_demonstrations_on_prompts_of_their_own():
    base = ["run_dir=unused", "seed=3", "data.synthetic.validation_prompts=6", "data.synthetic.num_train_prompts=120"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", base)
    on = load_config(ROOT / "configs" / "demo.yaml", [*base, "data.synthetic.demo_phrasing=true"])
    world = build_world(on)
    assert build_world(cfg).demo_prompts == () and world.demo_prompts
    cores = {}
    for p in world.demo_prompts:
        cores.setdefault(p.entity, set()).add(p.core)
    assert set(cores) == {e.name for e in world.entities}
    for name, core in cores.items():
        assert len(core) == 1
        for other in (world.train_prompts, world.test_prompts, world.validation_prompts):
            assert not core & {p.core for p in other if p.entity == name}
    groups, before = sft_examples_by_kind(on), sft_examples_by_kind(cfg)
    demo_texts = {p.prompt for p in world.demo_prompts}
    train_texts = {p.prompt for p in world.train_prompts}
    for kind in ("reviews", "rewrites"):
        assert len(groups[kind]) == len(world.demo_prompts)
        assert all(any(f"Question: {t}\n" in e["prompt"] for t in demo_texts) for e in groups[kind])
        assert not any(f"Question: {t}\n" in e["prompt"] for e in groups[kind] for t in train_texts)
        assert len(before[kind]) == len(build_world(cfg).train_prompts)
    assert {e["prompt"] for e in groups["answers"]} <= train_texts
    assert not {r["prompt"] for r in rated_rows(on)} & demo_texts  # no pair is about a demonstration prompt
