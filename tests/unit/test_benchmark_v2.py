"""Benchmark v2 (docs/benchmark.md): the entity split, the statistics of the protocol, the ablations' selection
rules and the validation-selected checkpoint. Pure functions and a tiny torch module; no model."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch

from sipo.ablations import ABLATIONS, ablation_source, select_by_sum, select_for
from sipo.configure import load_config
from sipo.data.splits import make_splits
from sipo.errors import ConfigError
from sipo.pareto import hypervolume
from sipo.records import ScoreRow
from sipo.report.build import make_report
from sipo.stats import bootstrap_hypervolumes, paired_differences, t_interval, t_quantile
from sipo.synthetic import build_world, load_pairs, rated_rows, sft_examples_by_kind
from sipo.synthetic.world import IN_DISTRIBUTION, TRANSFER, test_sets
from sipo.training.dpo import BestValidationCallback

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=[10, 11])
def cfg(request):
    return load_config(ROOT / "configs" / "demo.yaml", ["run_dir=unused", f"seed={request.param}"])


def _named_entities(world, text):
    words = {w.strip(".,!?'").lower() for w in text.replace("'", " ").split()}
    return {e.name for e in world.entities if e.name.lower() in words}


# ---------------------------------------------------------------- entity split


def test_held_out_entities_are_in_no_pair_no_loop_prompt_and_no_validation_pair(cfg):
    world = build_world(cfg)
    assert len(world.heldout) == cfg.data.synthetic.heldout_entities == 6
    pairs = load_pairs(cfg)
    assert pairs
    for pair in pairs:
        assert not _named_entities(world, pair.prompt) & world.heldout, pair.prompt
        for response in (pair.response_a, pair.response_b):
            assert not _named_entities(world, response) & world.heldout
    splits = make_splits(pairs, list(cfg.objectives), conflict_fraction=cfg.data.conflict_fraction,
                         test_fraction=cfg.data.test_fraction, validation_fraction=cfg.data.validation_fraction,
                         seed=cfg.seed, max_train_pairs=cfg.data.max_train_pairs,
                         max_conflict_prompts=cfg.data.max_conflict_prompts)
    loop = [*splits.train_conflict, *splits.validation, *(p for ps in splits.train.values() for p in ps)]
    assert splits.train_conflict and splits.validation
    assert all(world.find_entity(p.prompt).name not in world.heldout for p in loop)
    # Every self-improvement entity feeds the loop.
    assert {world.find_entity(p.prompt).name for p in splits.train_conflict} == \
        {e.name for e in world.entities} - world.heldout


def test_held_out_entities_stay_in_the_sft_data(cfg):
    world = build_world(cfg)
    groups = sft_examples_by_kind(cfg)
    for kind in ("answers", "facts", "reviews", "rewrites"):
        named = set().union(*(_named_entities(world, ex["prompt"]) for ex in groups[kind]))
        assert world.heldout <= named, kind
    assert {world.find_entity(r["prompt"]).name for r in rated_rows(cfg)} >= world.heldout


def test_test_sets_split_the_test_prompts_by_entity(cfg):
    world = build_world(cfg)
    sets = test_sets(cfg)
    by_id = {p.prompt_id: p for p in world.test_prompts}
    assert set(sets) == {IN_DISTRIBUTION, TRANSFER}
    assert len(sets[IN_DISTRIBUTION]) == len(sets[TRANSFER]) == 36
    assert set(sets[IN_DISTRIBUTION]) | set(sets[TRANSFER]) == set(by_id)
    assert all(by_id[i].entity in world.heldout for i in sets[TRANSFER])
    assert all(by_id[i].entity not in world.heldout for i in sets[IN_DISTRIBUTION])
    train_texts = {p.prompt for p in world.train_prompts}
    assert not train_texts & {p.prompt for p in world.test_prompts}


def test_v1_has_no_held_out_entities_and_no_test_sets():
    cfg = load_config(ROOT / "configs" / "demo-v1.yaml", ["run_dir=unused"])
    assert build_world(cfg).heldout == frozenset()
    assert test_sets(cfg) == {}


def test_holding_out_every_entity_is_a_config_error():
    with pytest.raises(ConfigError, match="heldout_entities"):
        build_world(load_config(ROOT / "configs" / "demo.yaml",
                                ["run_dir=unused", "data.synthetic.heldout_entities=12"]))


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize(("p", "df", "expected"), [(0.975, 1, 12.7062), (0.975, 4, 2.7764), (0.975, 30, 2.0423),
                                                    (0.95, 10, 1.8125)])
def test_t_quantile_matches_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_t_interval_is_mean_plus_minus_t_times_standard_error():
    values = [0.8, 0.9, 0.7, 0.85, 0.75]
    interval = t_interval(values)
    half = 2.7764451 * statistics.stdev(values) / math.sqrt(5)
    assert interval.mean == pytest.approx(0.8)
    assert interval.low == pytest.approx(0.8 - half, abs=1e-6)
    assert interval.high == pytest.approx(0.8 + half, abs=1e-6)
    assert t_interval([0.5]).low is None and t_interval([0.5]).excludes_zero() == "overlaps"


def test_paired_differences_remove_what_a_seed_does_to_every_method():
    # Seeds move both methods a lot, but sipo is always exactly 0.05 above mod: the paired interval is a point.
    by_seed = {s: {"sipo": base + 0.05, "mod": base} for s, base in enumerate([0.3, 0.9, 0.5, 0.7, 0.1])}
    (interval, diffs), = paired_differences(by_seed, "sipo").values()
    assert diffs == pytest.approx([0.05] * 5)
    assert interval.low == pytest.approx(0.05) and interval.excludes_zero() == "above"
    # Unpaired, the same numbers overlap widely.
    assert t_interval([v["sipo"] for v in by_seed.values()]).low < t_interval([v["mod"] for v in by_seed.values()]).high
    flipped = paired_differences({s: {"sipo": v["mod"], "mod": v["sipo"]} for s, v in by_seed.items()}, "sipo")
    assert flipped["mod"][0].excludes_zero() == "below"


def test_bootstrap_interval_is_a_point_for_identical_prompts_and_brackets_the_estimate():
    same = {"m": {"w1": {f"p{i}": [0.5, 0.5] for i in range(10)}}}
    (low, high), = bootstrap_hypervolumes(same, [f"p{i}" for i in range(10)], [0, 0], resamples=50).values()
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)
    varied = {"m": {"w1": {f"p{i}": [i / 10, 1 - i / 10] for i in range(10)},
                    "w2": {f"p{i}": [1 - i / 20, i / 20] for i in range(10)}}}
    ids = [f"p{i}" for i in range(10)]
    (low, high), = bootstrap_hypervolumes(varied, ids, [0, 0], resamples=300).values()
    estimate = hypervolume([[0.45, 0.55], [0.775, 0.225]], [0, 0])
    assert low < estimate < high
    assert bootstrap_hypervolumes(varied, ids, [0, 0], resamples=300) == \
        bootstrap_hypervolumes(varied, ids, [0, 0], resamples=300)  # seeded


def test_report_gives_each_test_set_its_own_hypervolume_and_interval():
    rows = []
    for method, shift in (("mod", 0.0), ("sipo", 0.2)):
        for w in (0.0, 1.0):
            for i in range(8):
                good = 0.9 if i < 4 else 0.4  # p0-p3 (set A) are easy, p4-p7 (set B) hard
                rows.append(ScoreRow(method=method, weights={"c": w, "v": 1 - w}, prompt_id=f"p{i}", response="",
                                     scores={"c": min(1.0, good * w + shift), "v": good * (1 - w) + 0.1}))
    sets = {"in_distribution": [f"p{i}" for i in range(4)], "transfer": [f"p{i}" for i in range(4, 8)]}
    report = make_report(rows, ["c", "v"], judge="oracle", reference_point=[0, 0], test_sets=sets, bootstrap=200,
                         training_steps={"mod": 24, "sipo": 30})
    for name, ids in sets.items():
        alone = make_report([r for r in rows if r.prompt_id in ids], ["c", "v"], judge="oracle",
                            reference_point=[0, 0])
        for method in ("mod", "sipo"):
            entry = report["test_sets"][name]["methods"][method]
            assert entry["hypervolume"] == pytest.approx(alone["methods"][method]["hypervolume"])
            low, high = entry["hypervolume_ci"]
            assert low <= entry["hypervolume"] <= high
    assert report["test_sets"]["in_distribution"]["methods"]["mod"]["hypervolume"] > \
        report["test_sets"]["transfer"]["methods"]["mod"]["hypervolume"]
    assert report["methods"]["sipo"]["training_steps"] == 30


# ---------------------------------------------------------------- ablations


def test_ablation_sources_and_names():
    assert ABLATIONS == ("sipo_no_rewrite", "sipo_no_filter", "sipo_oracle_filter", "nll_control")
    assert ablation_source("sipo_no_rewrite") == "r1/sample"
    assert ablation_source("sipo_no_filter") == ablation_source("sipo_oracle_filter") == "r1/combine"
    with pytest.raises(ValueError):
        ablation_source("nll_control")


def test_no_filter_takes_the_best_sum_even_if_it_beats_neither_original():
    chosen, rejected = {"j1": 1.0, "j2": 1.0}, {"j1": 0.5, "j2": 0.5}
    candidates = [("a", {"j1": 0.2, "j2": 0.3}), ("b", {"j1": 0.9, "j2": 0.1}), ("c", {"j1": 0.4, "j2": 0.6})]
    assert select_for("sipo_no_rewrite", candidates, chosen, rejected) is None  # none beats both on every judge
    assert select_for("sipo_no_filter", candidates, chosen, rejected) == "b"  # the sums tie at 1.0: first listed
    assert select_by_sum([]) is None


def test_the_judges_filter_keeps_only_candidates_strictly_above_both_originals_the_oracle_dominating_ones():
    chosen, rejected = {"correctness": 0.5, "verbosity": 0.4}, {"correctness": 1.0, "verbosity": 0.2}
    candidates = [("equal", {"correctness": 1.0, "verbosity": 0.6}),      # not strictly above rejected
                  ("above", {"correctness": 1.0 + 1e-9, "verbosity": 0.41}),
                  ("best", {"correctness": 1.01, "verbosity": 0.8})]
    for method in ("sipo_no_rewrite", "sipo_oracle_filter"):
        assert select_for(method, candidates, chosen, rejected) == "best"
    assert select_for("sipo_no_rewrite", candidates[:1], chosen, rejected) is None
    # Exact scores tie: the oracle keeps a candidate that matches one original on correctness and says more.
    assert select_for("sipo_oracle_filter", candidates[:1], chosen, rejected) == "equal"
    assert select_for("sipo_oracle_filter", [("same", dict(rejected))], chosen, rejected) is None
    with pytest.raises(ValueError):
        select_for("nll_control", candidates, chosen, rejected)


def test_oracle_filter_needs_the_synthetic_benchmark():
    with pytest.raises(ConfigError, match="sipo_oracle_filter"):
        load_config(ROOT / "configs" / "smoke.yaml", ["run_dir=unused", "methods=[sft,sipo_oracle_filter]"])


def test_oracle_filter_scores_with_the_data_sources_oracle(cfg):
    """The stage asks the configured source for its oracle (the synthetic benchmark's exact judge)."""
    from types import SimpleNamespace

    from sipo.judges import ScoreItem
    from sipo.stages.sipo_oracle_filter import oracle_scores
    from sipo.synthetic import OracleJudge, fact_sentence

    world = build_world(cfg)
    entity = world.entities[0]
    attribute = world.attributes[0]
    prompt = f"Tell me about {entity.name}."
    responses = ["", fact_sentence(entity.name, attribute, entity.truth[attribute]), "Nothing to say."]
    items = [ScoreItem(f"i{k}", prompt, r) for k, r in enumerate(responses)]
    expected = OracleJudge(cfg).score([prompt] * len(responses), responses)
    assert oracle_scores(SimpleNamespace(cfg=cfg), items) == {
        f"i{k}": {o: float(expected[o][k]) for o in cfg.objectives} for k in range(len(responses))}
    assert oracle_scores(SimpleNamespace(cfg=cfg), items)["i1"]["correctness"] == 1.0


# ---------------------------------------------------------------- checkpoint selection


def test_best_validation_callback_restores_the_weights_of_the_lowest_loss():
    model = torch.nn.Linear(2, 1)
    model.bias.requires_grad_(False)
    best = BestValidationCallback(model)
    losses = {0: 0.69, 4: 0.5, 8: 0.3, 12: 0.3, 16: 0.45}
    for step, loss in losses.items():
        with torch.no_grad():
            model.weight.fill_(float(step))
            model.bias.fill_(float(step))
        best.record(step, loss)
    best.record(16, 0.1)  # the same step again is the same weights: ignored
    assert best.best_step == 8 and best.best_loss == 0.3  # a tie keeps the earlier weights
    assert [s for s, _ in best.history] == [0, 4, 8, 12, 16]
    best.restore()
    assert torch.all(model.weight == 8.0)
    assert torch.all(model.bias == 16.0)  # frozen parameters are not part of the checkpoint


def test_review_skill_counts_corrections_wrong_changes_and_additions(cfg):
    from sipo.synthetic.sft_data import plan_review, review_skill, review_text
    from sipo.synthetic.world import fact_sentence

    world = build_world(cfg)
    entity = next(e for e in world.entities if e.confabulated)
    attribute, wrong = next(iter(entity.confabulated.items()))
    prompt = f"Tell me about {entity.name}."
    response = fact_sentence(entity.name, attribute, wrong)
    objectives = list(cfg.objectives)
    ideal = review_text(plan_review(world, prompt, response, objectives), objectives)
    perfect = review_skill(world, [(prompt, response, ideal)], objectives)
    assert perfect["wrong_facts"] == 1 and perfect["corrected_share"] == 1.0
    assert perfect["wrong_change_share"] == 0.0
    assert perfect["missing"] == len(world.attributes) - 1 and perfect["added_share"] == 1.0
    other = next(v for v in world.values(attribute) if v not in (wrong, entity.truth[attribute]))
    bad = f"The response can be more correct and verbose by changing {entity.name}'s {attribute} from {wrong} to {other}."
    skill = review_skill(world, [(prompt, response, bad), (prompt, response, "The response is already correct.")],
                         objectives)
    assert skill["reviews"] == 2 and skill["wrong_facts"] == 2
    assert skill["corrected_share"] == 0.0 and skill["wrong_change_share"] == 1.0 and skill["added_share"] == 0.0
