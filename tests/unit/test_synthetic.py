"""The synthetic conflict benchmark: world, writer, oracle judge and SFT data (docs/method.md §3)."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipo import prompting
from sipo.configure import load_config
from sipo.data.pairs import prompt_id_for
from sipo.errors import ConfigError
from sipo.synthetic import (
    OracleJudge,
    ReviewPlan,
    all_texts,
    apply_review,
    build_world,
    conflict_share,
    fact_sentence,
    load_pairs,
    plan_review,
    rated_rows,
    read_review,
    review_text,
    sft_examples,
    sft_examples_by_kind,
    synthetic_descriptions,
)
from sipo.synthetic import world as world_module
from sipo.synthetic.oracle import parse_response

WORD = re.compile(r"\w+|[^\w\s]")
BASE = ["run_dir=unused", "objectives=[correctness,verbosity]", "model.name_or_path=random",
        "data.source=synthetic", "sft.enabled=true"]


def make_cfg(*overrides: str):
    return load_config(None, [*BASE, *overrides])


@pytest.fixture(scope="module")
def cfg():
    return make_cfg()


@pytest.fixture(scope="module")
def world(cfg):
    return build_world(cfg)


@pytest.fixture(scope="module")
def rows(cfg):
    return rated_rows(cfg)


@pytest.fixture(scope="module")
def sft(cfg):
    return sft_examples_by_kind(cfg, synthetic_descriptions())


def _section(prompt: str, label: str) -> str:
    """The text after ``label:`` on its line of a rendered template (tests only)."""
    return re.search(rf"^{label}: (.*)$", prompt, re.MULTILINE).group(1)


# ---------------------------------------------------------------------------------------------------------------
# World and prompts


def test_generation_is_deterministic_and_seeded(cfg):
    world_module._build_world.cache_clear()
    first = (build_world(cfg), rated_rows(cfg), sft_examples(cfg))
    world_module._build_world.cache_clear()
    second = (build_world(cfg), rated_rows(cfg), sft_examples(cfg))
    assert first == second
    other = make_cfg("seed=1")
    assert rated_rows(other) != first[1]
    assert build_world(other).entities != first[0].entities


def test_world_shape_follows_config(cfg, world):
    s = cfg.data.synthetic
    assert len(world.entities) == s.num_entities == len({e.name for e in world.entities})
    assert len(world.attributes) == s.num_attributes
    for entity in world.entities:
        assert set(entity.truth) == set(world.attributes)
        assert len(entity.confabulated) == s.unknown_per_entity
        assert all(entity.confabulated[a] != entity.truth[a] for a in entity.confabulated)
    assert len(world.train_prompts) == s.num_train_prompts == len({p.prompt_id for p in world.train_prompts})
    assert len(world.test_prompts) == s.num_test_prompts == len({p.prompt_id for p in world.test_prompts})
    assert all(p.prompt_id == prompt_id_for(p.prompt) for p in world.train_prompts + world.test_prompts)
    assert [r.prompt for r in world_module.test_prompts(cfg)] == [p.prompt for p in world.test_prompts]


def test_test_prompts_are_held_out_from_all_training_data(cfg, world, rows, sft):
    test = {p.prompt for p in world.test_prompts}
    assert not test & {r["prompt"] for r in rows}
    sft_prompts = [e["prompt"] for group in sft.values() for e in group]
    assert not any(t in p for t in test for p in sft_prompts)
    # (entity, core phrasing) combinations of test prompts never occur in training; entities and cores all do.
    train_combos = {(p.entity, p.core) for p in world.train_prompts}
    assert not {(p.entity, p.core) for p in world.test_prompts} & train_combos
    assert {e for e, _ in train_combos} == {e.name for e in world.entities}
    assert {c for _, c in train_combos} == set(range(len(world_module.CORE_PHRASINGS)))
    row_entities = {world.find_entity(r["prompt"]).name for r in rows}
    assert row_entities == {e.name for e in world.entities}


def test_every_word_of_the_test_prompts_is_seen_in_training(world, rows, sft):
    train_words = {w for r in rows for w in WORD.findall(r["prompt"] + " " + r["response"])}
    train_words |= {w for group in sft.values() for e in group for w in WORD.findall(e["prompt"])}
    test_words = {w for p in world.test_prompts for w in WORD.findall(p.prompt)}
    assert test_words <= train_words


def test_bad_synthetic_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="data.synthetic.num_attributes"):
        build_world(make_cfg("data.synthetic.num_attributes=99"))
    with pytest.raises(ConfigError, match="data.synthetic.num_train_prompts"):
        build_world(make_cfg("data.synthetic.num_entities=2"))
    with pytest.raises(ConfigError, match="objectives"):
        OracleJudge(make_cfg("objectives=[helpfulness,verbosity]"))


# ---------------------------------------------------------------------------------------------------------------
# Oracle


def _facts(world, name: str, attributes, *, wrong=()):
    """Sentences about entity ``name``; the attributes in ``wrong`` get a value that is not the truth."""
    entity = world.entity(name)
    out = []
    for a in attributes:
        value = entity.truth[a]
        if a in wrong:
            value = next(v for v in world.values(a) if v != value)
        out.append(fact_sentence(name, a, value))
    return " ".join(out)


def test_oracle_on_hand_made_responses(cfg, world):
    """With 6 attributes: verbosity = distinct attributes of the prompt's entity / 6."""
    judge = OracleJudge(cfg)
    ava, bob = world.entities[0].name, world.entities[1].name
    prompt = f"Tell me about {ava}."
    colour, city, pet = world.attributes[:3]
    cases = {
        # all true: 2/2 correct, 2 attributes
        _facts(world, ava, [colour, city]): (1.0, 2 / 6),
        # one of two false: 1/2 correct, both attributes stated
        _facts(world, ava, [colour, city], wrong=[city]): (0.5, 2 / 6),
        # a repeated attribute counts once for verbosity: 3/3 correct, 2 distinct attributes
        _facts(world, ava, [colour, colour, pet]): (1.0, 2 / 6),
        # true facts about another entity are not true of the prompt's entity and state nothing about it
        _facts(world, bob, [colour, city]): (0.0, 0.0),
        _facts(world, ava, [colour]) + " " + _facts(world, bob, [city]): (0.5, 1 / 6),
        # a value from another attribute's vocabulary does not parse: 1 true of 2 sentences, 1 attribute
        _facts(world, ava, [pet]) + f" {ava}'s {colour} is {world.values(city)[0]}.": (0.5, 1 / 6),
        # the spacing a word-level tokenizer's decoder produces still parses
        " ".join(WORD.findall(_facts(world, ava, [colour, city]))): (1.0, 2 / 6),
        # the final sentence may lack its full stop (a truncated generation)
        _facts(world, ava, [colour, city])[:-1]: (1.0, 2 / 6),
        "": (0.0, 0.0),
        "   \n  ": (0.0, 0.0),
        "!!! ... ???": (0.0, 0.0),
        "hello world": (0.0, 0.0),
        _facts(world, ava, [colour]) + " garbage here.": (0.5, 1 / 6),
    }
    scores = judge.score([prompt] * len(cases), list(cases))
    got = list(zip(scores["correctness"], scores["verbosity"]))
    for (response, expected), actual in zip(cases.items(), got):
        assert actual == pytest.approx(expected), response
    full = judge.score([prompt], [_facts(world, ava, world.attributes)])
    assert full == {"correctness": [1.0], "verbosity": [1.0]}
    assert judge.score(["Tell me a joke."], [_facts(world, ava, [colour])]) == {"correctness": [0.0],
                                                                                "verbosity": [0.0]}
    assert OracleJudge(cfg, ["verbosity"]).score([prompt], [""]) == {"verbosity": [0.0]}
    with pytest.raises(ValueError):
        judge.score([prompt], [])


@pytest.fixture(scope="module")
def judge(cfg):
    return OracleJudge(cfg)


@pytest.fixture(scope="module")
def vocabulary(cfg) -> list[str]:
    return sorted({w for t in all_texts(cfg) for w in WORD.findall(t)})


@settings(max_examples=150, deadline=None)
@given(prompt=st.text(), response=st.text())
def test_oracle_is_total_on_any_text(judge, prompt, response):
    scores = judge.score([prompt], [response])
    assert all(0.0 <= scores[o][0] <= 1.0 for o in ("correctness", "verbosity"))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_oracle_is_total_on_near_sentences(judge, vocabulary, data):
    """Word salads from the benchmark's own vocabulary hit the parser's partial matches."""
    words = st.sampled_from(vocabulary + ["\n", "'s"])
    prompt = " ".join(data.draw(st.lists(words, max_size=8)))
    response = " ".join(data.draw(st.lists(words, max_size=40)))
    scores = judge.score([prompt], [response])
    assert all(0.0 <= scores[o][0] <= 1.0 for o in ("correctness", "verbosity"))


# ---------------------------------------------------------------------------------------------------------------
# Writer


def test_confabulation_is_consistent(world, rows, sft):
    """Every wrong statement is the entity's one confabulated value for an attribute the writer does not know."""
    wrong_values = defaultdict(set)
    responses = [(r["prompt"], r["response"]) for r in rows] + [(e["prompt"], e["completion"]) for e in sft["answers"]]
    for prompt, response in responses:
        entity = world.find_entity(prompt)
        for sentence in response.split(". "):
            fact = world.parse_sentence(sentence.rstrip("."))
            assert fact is not None and fact.entity == entity.name
            if fact.value != entity.truth[fact.attribute]:
                wrong_values[(fact.entity, fact.attribute)].add(fact.value)
    assert wrong_values, "the writer never confabulates"
    for (name, attribute), values in wrong_values.items():
        assert values == {world.entity(name).confabulated[attribute]}


def test_rows_are_oracle_scored_and_long_answers_are_less_correct(cfg, world, rows, judge):
    per_prompt = cfg.data.synthetic.responses_per_prompt
    assert len(rows) == cfg.data.synthetic.num_train_prompts * per_prompt
    assert all(set(r) == {"prompt", "response", "correctness", "verbosity"} for r in rows)
    scores = judge.score([r["prompt"] for r in rows], [r["response"] for r in rows])
    assert scores["correctness"] == [r["correctness"] for r in rows]
    assert scores["verbosity"] == [r["verbosity"] for r in rows]
    by_length = defaultdict(list)
    for r in rows:
        by_length[round(r["verbosity"] * len(world.attributes))].append(r["correctness"])
    assert sorted(by_length) == list(range(1, len(world.attributes) + 1))
    mean = {k: sum(v) / len(v) for k, v in by_length.items()}
    assert mean[1] > mean[3] > mean[len(world.attributes)]


def test_conflict_share_at_the_default_config(cfg):
    """Measured at seed 0: 1154 of 2400 pairs (48.1%) conflict."""
    pairs = load_pairs(cfg)
    assert len(pairs) == cfg.data.synthetic.num_train_prompts * 6  # 4 distinct responses -> 6 pairs per prompt
    share = conflict_share(pairs)
    assert 0.3 <= share <= 0.6
    for pair in pairs[:50]:
        c, v = pair.preferred["correctness"], pair.preferred["verbosity"]
        assert pair.conflict == (c is not None and v is not None and c != v)


# ---------------------------------------------------------------------------------------------------------------
# SFT data


def test_sft_kinds_and_counts(cfg, world, sft):
    n_train = cfg.data.synthetic.num_train_prompts
    assert {k: len(v) for k, v in sft.items()} == {
        "answers": n_train, "facts": 4 * len(world.entities) * len(world.attributes),
        "reviews": n_train, "rewrites": n_train}
    examples = sft_examples(cfg, synthetic_descriptions())
    assert len(examples) == sum(len(v) for v in sft.values())
    assert all(set(e) == {"prompt", "completion"} and e["prompt"] and e["completion"] for e in examples)


def test_facts_teach_the_truth_of_every_attribute(world, sft):
    taught = {(f["prompt"], f["completion"]) for f in sft["facts"]}
    for entity in world.entities:
        for attribute in world.attributes:
            assert (f"What is {entity.name}'s {attribute}?",
                    fact_sentence(entity.name, attribute, entity.truth[attribute])) in taught


def test_review_demos_use_the_review_renderer(cfg, world, sft):
    descriptions = synthetic_descriptions()
    for example in sft["reviews"]:
        question, response = _section(example["prompt"], "Question"), _section(example["prompt"], "Response")
        assert example["prompt"] == prompting.review_prompt(question, response, cfg.objectives, descriptions)
        plan = plan_review(world, question, response, cfg.objectives)
        assert plan.fixes or plan.additions
        assert example["completion"] == review_text(plan, cfg.objectives)
        assert read_review(world, example["completion"]) == plan


def test_rewrite_demos_use_the_rewrite_renderer_and_dominate(cfg, world, sft, judge):
    descriptions = synthetic_descriptions()
    originals, rewrites, questions = [], [], []
    for example in sft["rewrites"]:
        question = _section(example["prompt"], "Question")
        response = _section(example["prompt"], "Response")
        review = _section(example["prompt"], "Review")
        assert example["prompt"] == prompting.rewrite_prompt(question, response, review, cfg.objectives,
                                                             descriptions)
        assert review == review_text(plan_review(world, question, response, cfg.objectives), cfg.objectives)
        questions.append(question)
        originals.append(response)
        rewrites.append(example["completion"])
    before, after = judge.score(questions, originals), judge.score(questions, rewrites)
    for i in range(len(rewrites)):
        old = (before["correctness"][i], before["verbosity"][i])
        new = (after["correctness"][i], after["verbosity"][i])
        assert new[0] >= old[0] and new[1] >= old[1] and new != old, (originals[i], rewrites[i])
    assert after["correctness"] == [1.0] * len(rewrites) and after["verbosity"] == [1.0] * len(rewrites)


def test_review_language_round_trip(world):
    """A fix and an addition; read_review is total and ignores clauses it cannot parse."""
    entity = world.entities[0]
    colour, city = world.attributes[:2]
    wrong = next(v for v in world.values(colour) if v != entity.truth[colour])
    response = fact_sentence(entity.name, colour, wrong)
    prompt = f"Describe {entity.name}."
    plan = plan_review(world, prompt, response, ["correctness", "verbosity"])
    text = review_text(plan, ["correctness", "verbosity"])
    assert text.startswith(f"The response can be more correct and verbose by changing {entity.name}'s {colour} "
                           f"from {wrong} to {entity.truth[colour]}, adding {entity.name}'s {city}, ")
    assert read_review(world, text) == plan
    assert read_review(world, " ".join(WORD.findall(text))) == plan  # word-tokenizer spacing
    rewrite = apply_review(world, response, plan)
    assert rewrite.startswith(fact_sentence(entity.name, colour, entity.truth[colour]))
    assert review_text(ReviewPlan(), ["correctness", "verbosity"]) == "The response is already correct and verbose."
    for junk in ("", "by", "The response can be more by adding, changing x from y to z.", None, "by adding Nobody's pet"):
        assert read_review(world, junk) == ReviewPlan()


def test_single_objective_reviews_only_name_that_objective():
    cfg = make_cfg("objectives=[correctness]", "allow_single_objective=true")
    reviews = sft_examples_by_kind(cfg)["reviews"]
    assert all("adding" not in e["completion"] for e in reviews)
    assert all(e["completion"].startswith("The response can be more correct by changing") for e in reviews)
    assert conflict_share(load_pairs(cfg)) == 0.0
    rewrites = sft_examples_by_kind(cfg)["rewrites"]
    judge = OracleJudge(cfg, ["correctness", "verbosity"])
    prompts = [_section(e["prompt"], "Question") for e in rewrites]
    assert judge.score(prompts, [e["completion"] for e in rewrites])["correctness"] == [1.0] * len(rewrites)
    originals = [_section(e["prompt"], "Response") for e in rewrites]
    assert judge.score(prompts, originals)["verbosity"] == judge.score(prompts, [e["completion"] for e in rewrites])[
        "verbosity"]  # only fixes: the same attributes


def test_vocabulary_is_small_and_covers_every_text(cfg, world, rows, sft):
    texts = all_texts(cfg, synthetic_descriptions())
    vocabulary = {w for t in texts for w in WORD.findall(t)}
    assert len(vocabulary) < 150
    covered = set(texts)
    assert {p.prompt for p in world.train_prompts + world.test_prompts} <= covered
    assert {r["response"] for r in rows} <= covered
    assert {s for group in sft.values() for e in group for s in (e["prompt"], e["completion"])} <= covered
    fixed_texts = [*world_module.CORE_PHRASINGS, *world_module.GREETINGS, *world_module.CLOSINGS,
                   *world_module.ATTRIBUTES, *(v for vs in world_module.ATTRIBUTES.values() for v in vs),
                   prompting.review_prompt("", "", cfg.objectives, synthetic_descriptions()),
                   prompting.rewrite_prompt("", "", "", cfg.objectives, synthetic_descriptions()),
                   "The response can be more correct and verbose by changing from to, adding already."]
    fixed_words = {w.lower() for t in fixed_texts for w in WORD.findall(t)}
    assert not {e.name.lower() for e in world.entities} & fixed_words  # a name is never another word


@settings(max_examples=100, deadline=None)
@given(prompt=st.text(max_size=40), response=st.text(max_size=80), review=st.text(max_size=80))
def test_review_helpers_are_total(world, prompt, response, review):
    plan = plan_review(world, prompt, response, ["correctness", "verbosity"])
    assert isinstance(review_text(plan, ["correctness", "verbosity"]), str)
    assert isinstance(apply_review(world, response, read_review(world, review)), str)


def test_prepare_stage_imports_resolve(cfg):
    """The prepare and evaluate stages import these names from these modules."""
    from sipo.synthetic.oracle import OracleJudge as Judge
    from sipo.synthetic.sft_data import sft_examples as examples
    from sipo.synthetic.writer import test_prompts as held_out

    assert held_out(cfg) == world_module.test_prompts(cfg)
    assert examples(cfg, {}) and Judge(cfg).score([], []) == {"correctness": [], "verbosity": []}


def test_sft_mix_follows_the_config():
    """answers_per_prompt and fact_copies set how many answers and facts the SFT data holds; negatives are refused."""
    cfg = make_cfg("data.synthetic.answers_per_prompt=3", "data.synthetic.fact_copies=2")
    groups = sft_examples_by_kind(cfg)
    world = build_world(cfg)
    assert len(groups["answers"]) == 3 * len(world.train_prompts)
    assert len(groups["facts"]) == 2 * len(world.entities) * len(world.attributes)
    with pytest.raises(ConfigError, match="fact_copies"):
        sft_examples_by_kind(make_cfg("data.synthetic.fact_copies=-1"))


def test_writer_answers_follow_the_attribute_order(world):
    """Every rated answer states its attributes in the world's order (greedy decoding continues them coherently)."""
    rank = {a: k for k, a in enumerate(world.attributes)}
    cfg = make_cfg()
    for row in rated_rows(cfg)[:200]:
        facts = [f for _, f in parse_response(world, row["response"]) if f is not None]
        assert [rank[f.attribute] for f in facts] == sorted(rank[f.attribute] for f in facts)


def test_recall_states_some_unknown_attributes_truly_but_confabulation_stays_the_mode():
    """With recall 0.3 the writer states an unknown attribute with its true value about 30% of the time."""
    cfg = make_cfg("data.synthetic.recall=0.3", "data.synthetic.num_train_prompts=400")
    world = build_world(cfg)
    true = wrong = 0
    for row in rated_rows(cfg):
        entity = world.find_entity(row["prompt"])
        for _, fact in parse_response(world, row["response"]):
            if fact is not None and fact.attribute in entity.confabulated:
                true += fact.value == entity.truth[fact.attribute]
                wrong += fact.value == entity.confabulated[fact.attribute]
    assert true + wrong > 200
    assert 0.2 < true / (true + wrong) < 0.4
    assert make_cfg().data.synthetic.recall == 0.0
    with pytest.raises(ConfigError, match="recall"):
        rated_rows(make_cfg("data.synthetic.recall=1.5"))
