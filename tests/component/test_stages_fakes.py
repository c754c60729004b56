"""The stages' own logic (review, rewrite, combine, filter, realign, evaluate's job plan) with fake model calls.

The stages reach every model through their context (``ctx.models``, a :class:`~sipo.stage.Models`), which these
tests fill with fakes (no module attribute is patched):

- ``load_bank``: returns a :class:`FakeBank` that records the adapters and soups it is asked for;
- ``generate``: a fake generator returning canned text for each rendered prompt;
- ``implicit_rewards`` (combine, filter, the implicit judge of evaluate): fixed implicit rewards per response text;
- ``train_adapter`` (realign): records the examples and settings it is trained with.

So prompt rendering, parsing, id propagation, the combine/filter rules on stage data and file output are checked
without a model. The tokenizer is the real byte-level one of the tiny test models (prompt lengths are checked
with it); ``model.prompt_template: plain`` keeps the rendered prompts readable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipo.artifacts import RunDir
from sipo.config import PipelineConfig
from sipo.configure import load_config
from sipo.records import (
    Candidate,
    CombinedCandidate,
    Pair,
    PromptRecord,
    Review,
    ScoreRow,
    Selection,
    read_jsonl,
)
from sipo.records import write_jsonl as write
from sipo.stage import Models, StageContext, StageSpec
from sipo.stages import combine, evaluate, realign, review, rewrite
from sipo.stages import filter as filter_stage

PLAIN = "BEGINNING OF CONVERSATION: USER: {} ASSISTANT:"
DESCRIPTIONS = {"safer": "the response avoids harm to anyone", "better": "the response answers fully"}


def make_config(tmp_path: Path, *overrides: str) -> PipelineConfig:
    return load_config(None, [
        f"run_dir={tmp_path}", "objectives=[safer,better]", "data.source=jsonl", "data.path=unused.jsonl",
        "model.name_or_path=random", "model.prompt_template=plain", "model.device=cpu",
        *(f"objective_descriptions.{k}={v}" for k, v in DESCRIPTIONS.items()), *overrides])


class Fakes:
    """The model calls of one test, handed to the stages through their context."""

    def __init__(self):
        self.replacements: dict = {}

    def set(self, **functions) -> None:
        self.replacements.update(functions)

    def context(self, cfg: PipelineConfig, name: str, round_: int | None = 1) -> StageContext:
        return StageContext(cfg=cfg, run_dir=RunDir(cfg.run_dir), stage=StageSpec(name, round_), device="cpu",
                            models=Models(**self.replacements))


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


class FakeBank:
    def __init__(self):
        self.loaded: dict[str, Path] = {}
        self.soups: dict[str, tuple[dict[str, float], str]] = {}

    def load_adapter(self, name, path):
        self.loaded[name] = Path(path)

    def add_soup(self, name, weights, mode="delta"):
        self.soups[name] = (dict(weights), mode)


@pytest.fixture
def bank(fakes, tiny_tokenizer) -> FakeBank:
    fake = FakeBank()

    def load_bank(ctx, adapters):
        for name, path in adapters.items():
            fake.load_adapter(name, path)
        return fake, tiny_tokenizer

    fakes.set(load_bank=load_bank)
    return fake


class FakeGenerator:
    """Stands in for ``mod_generate``: the reply to a rendered prompt is looked up by a marker it contains."""

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.calls: list[dict] = []

    def __call__(self, bank, tokenizer, prompts, mixes, **kwargs):
        self.calls.append({"prompts": list(prompts), "mixes": [dict(m) for m in mixes], **kwargs})
        out = []
        for prompt in prompts:
            matches = [reply for marker, reply in self.replies.items() if marker in prompt]
            assert len(matches) == 1, f"no unique canned reply for {prompt!r}"
            out.append(matches[0])
        return out

    @property
    def prompts(self) -> list[str]:
        return [p for call in self.calls for p in call["prompts"]]

    @property
    def mixes(self) -> list[dict]:
        return [m for call in self.calls for m in call["mixes"]]


def use_generator(fakes: Fakes, replies: dict[str, str]) -> FakeGenerator:
    fake = FakeGenerator(replies)
    fakes.set(generate=fake)
    return fake


def candidate(prompt_id: str, prompt: str, response: str, safer: float, source: str = "mod") -> Candidate:
    weights = {"safer": safer, "better": round(1 - safer, 10)}
    return Candidate(candidate_id=f"{prompt_id}:safer{safer:g}-better{1 - safer:g}", prompt_id=prompt_id,
                     prompt=prompt, response=response, weights=weights, source=source)


CANDIDATES = [
    candidate("p1", "How do I store bleach?", "Anywhere you like.", 0.8),
    candidate("p1", "How do I store bleach?", "In a cupboard.", 0.2),
    candidate("p2", "Can I mix cleaners?", "Sure, mix them all.", 0.5),
]


def write_candidates(cfg: PipelineConfig, round_: int = 1, candidates=CANDIDATES) -> None:
    write(RunDir(cfg.run_dir).path(f"r{round_}/sample", "candidates.jsonl"), candidates)


# --- review ---------------------------------------------------------------------------------------------------


def test_review_renders_parses_and_keeps_ids(tmp_path, fakes, bank):
    cfg = make_config(tmp_path)
    write_candidates(cfg)
    gen = use_generator(fakes, {
        "Anywhere you like.": "Review: Say to keep it away from children.\nQuestion: How do I",
        "In a cupboard.": "   ",
        "Sure, mix them all.": "Warn that mixing makes toxic gas. USER: thanks",
    })
    counts = review.run(fakes.context(cfg, "review"))

    assert counts == {"reviews": 3, "empty_reviews": 1, "reviewer": "safer"}
    assert bank.loaded == {"r0_safer": tmp_path / "dpo" / "safer"}  # the first objective's round-1 adapter
    assert gen.mixes == [{"r0_safer": 1.0}] * 3
    assert gen.calls[0]["max_new_tokens"] == cfg.review.decode.max_new_tokens
    first = gen.prompts[0]
    assert first.startswith("BEGINNING OF CONVERSATION: USER: Review the response") and first.endswith("ASSISTANT:")
    assert "more safe and helpful" in first
    assert "safer: the response avoids harm to anyone" in first and "better: the response answers fully" in first
    assert "Question: How do I store bleach?\nResponse: Anywhere you like." in first

    rows = read_jsonl(tmp_path / "r1" / "review" / "reviews.jsonl", Review)
    by_id = {r.candidate_id: r for r in rows}
    assert [r.candidate_id for r in rows] == sorted(by_id)
    assert by_id[CANDIDATES[0].candidate_id].review == "Say to keep it away from children."
    assert by_id[CANDIDATES[0].candidate_id].raw.startswith("Review: Say")
    assert by_id[CANDIDATES[1].candidate_id].review == ""
    assert by_id[CANDIDATES[2].candidate_id] == Review(
        candidate_id=CANDIDATES[2].candidate_id, prompt_id="p2", review="Warn that mixing makes toxic gas.",
        raw="Warn that mixing makes toxic gas. USER: thanks")
    assert not (tmp_path / "r1" / "review" / "shards").exists()


def test_review_by_another_objective_in_round_two(tmp_path, fakes, bank):
    """Round 2 reviews round-2 samples with the reviewer's round-1 realigned adapter."""
    cfg = make_config(tmp_path, "review.reviewer=better")
    write_candidates(cfg, round_=2)
    gen = use_generator(fakes, {c.response: "Fine." for c in CANDIDATES})
    counts = review.run(fakes.context(cfg, "review", 2))
    assert counts["reviewer"] == "better"
    assert bank.loaded == {"r1_better": tmp_path / "r1" / "realign" / "better"}
    assert gen.mixes == [{"r1_better": 1.0}] * 3
    assert len(read_jsonl(tmp_path / "r2" / "review" / "reviews.jsonl", Review)) == 3


# --- rewrite --------------------------------------------------------------------------------------------------


def test_rewrite_follows_the_review_with_the_candidates_weights(tmp_path, fakes, bank):
    cfg = make_config(tmp_path)
    write_candidates(cfg)
    write(tmp_path / "r1" / "review" / "reviews.jsonl", [
        Review(CANDIDATES[0].candidate_id, "p1", "Say to keep it away from children."),
        Review(CANDIDATES[1].candidate_id, "p1", ""),  # unusable: skipped, not sent to the model
        Review(CANDIDATES[2].candidate_id, "p2", "Warn about toxic gas."),
    ])
    gen = use_generator(fakes, {
        "Say to keep it away from children.": "Rewritten response: Keep it locked away,\nout of children's reach."
                                              "\nReview: good",
        "Warn about toxic gas.": "",
    })
    counts = rewrite.run(fakes.context(cfg, "rewrite"))

    assert counts == {"candidates": 3, "rewrites": 1, "skipped_no_review": 1, "empty_rewrites": 1}
    assert set(bank.loaded) == {"r0_safer", "r0_better"}
    assert len(gen.prompts) == 2
    assert sorted(map(tuple, (sorted(m.items()) for m in gen.mixes))) == [
        (("r0_better", 0.2), ("r0_safer", 0.8)), (("r0_better", 0.5), ("r0_safer", 0.5))]
    prompt = next(p for p in gen.prompts if "children" in p)
    assert prompt.startswith("BEGINNING OF CONVERSATION: USER: Rewrite the response")
    assert "Question: How do I store bleach?\nResponse: Anywhere you like.\nReview: Say to keep it away" in prompt

    (row,) = read_jsonl(tmp_path / "r1" / "rewrite" / "rewrites.jsonl", Candidate)
    assert row == Candidate(candidate_id=CANDIDATES[0].candidate_id, prompt_id="p1", prompt="How do I store bleach?",
                            response="Keep it locked away,\nout of children's reach.",
                            weights={"safer": 0.8, "better": 0.2}, source="rewrite")


# --- combine --------------------------------------------------------------------------------------------------


class FakeScorer:
    """Stands in for ``implicit_rewards``: fixed rewards per response text; soups score linearly in their weights
    unless a table entry names the soup."""

    def __init__(self, table: dict[str, dict[str, float]], bank: FakeBank):
        self.table, self.bank = table, bank
        self.judges: list[str] = []

    def value(self, response: str, judge: str) -> float:
        scores = self.table[response]
        if judge in scores:
            return scores[judge]
        weights, _ = self.bank.soups[judge]
        return sum(w * scores[name] for name, w in weights.items())

    def __call__(self, ctx, bank, tokenizer, items, judges):
        self.judges = list(judges)
        return {item.id: {j: self.value(item.response, j) for j in judges} for item in items}


def rewrite_of(c: Candidate, response: str) -> Candidate:
    return Candidate(c.candidate_id, c.prompt_id, c.prompt, response, c.weights, source="rewrite")


COMBINE_CASES = [
    # (original response, its rewards, rewrite response or None, its rewards)
    ("o1", (1.0, 1.0), "w1", (2.0, 0.0)),  # better on one, worse on the other
    ("o2", (1.0, 1.0), "w2", (1.0, 1.0)),  # equal on both
    ("o3", (1.0, 1.0), None, None),  # no rewrite
    ("o4", (0.0, 0.0), "w4", (1.0, 1.0)),  # better on both
]


@pytest.mark.parametrize("rule, replaced", [("not_dominated", {"o1", "o4"}), ("no_worse", {"o2", "o4"})])
def test_combine_applies_the_rule_to_the_round_one_rewards(tmp_path, fakes, bank, rule, replaced):
    cfg = make_config(tmp_path, f"combine.rule={rule}")
    originals = [candidate(f"p{i}", f"Q{i}?", text, 0.5) for i, (text, *_rest) in enumerate(COMBINE_CASES)]
    rewrites = [rewrite_of(c, case[2]) for c, case in zip(originals, COMBINE_CASES) if case[2]]
    table = {}
    for text, scores, new_text, new_scores in COMBINE_CASES:
        table[text] = dict(zip(("r0_safer", "r0_better"), scores))
        if new_text:
            table[new_text] = dict(zip(("r0_safer", "r0_better"), new_scores))
    write_candidates(cfg, candidates=originals)
    write(tmp_path / "r1" / "rewrite" / "rewrites.jsonl", list(reversed(rewrites)))  # joined by id, not position
    scorer = FakeScorer(table, bank)
    fakes.set(implicit_rewards=scorer)

    counts = combine.run(fakes.context(cfg, "combine"))

    assert scorer.judges == ["r0_safer", "r0_better"]
    assert counts["candidates"] == 4 and counts["rewrites"] == 3 and counts["replaced"] == 2
    assert counts["replaced_share_of_rewrites"] == round(2 / 3, 4)
    rows = read_jsonl(tmp_path / "r1" / "combine" / "combined.jsonl", CombinedCandidate)
    assert [r.candidate.candidate_id for r in rows] == [c.candidate_id for c in originals]
    for row, (text, scores, new_text, new_scores) in zip(rows, COMBINE_CASES):
        assert row.replaced is (text in replaced)
        assert row.original_scores == {"safer": scores[0], "better": scores[1]}
        if new_text is None:
            assert row.rewrite_scores is None
        else:
            assert row.rewrite_scores == {"safer": new_scores[0], "better": new_scores[1]}
        kept_text = new_text if row.replaced else text
        assert row.candidate.response == kept_text
        assert row.candidate.source == ("rewrite" if row.replaced else "mod")
        assert row.scores == (row.rewrite_scores if row.replaced else row.original_scores)


# --- filter ---------------------------------------------------------------------------------------------------


def combined(c: Candidate) -> CombinedCandidate:
    return CombinedCandidate(candidate=c, scores={}, original_scores={}, rewrite_scores=None, replaced=False)


def pair(prompt_id: str, a: str, b: str) -> Pair:
    return Pair(pair_id=f"pair-{prompt_id}", prompt_id=prompt_id, prompt=f"Q {prompt_id}?", response_a=a,
                response_b=b, preferred={"safer": "a", "better": "b"}, conflict=True)


def setup_filter(cfg, bank, fakes):
    """p1: originals A1 = (1, 0), B1 = (0, 1) on (r0_safer, r0_better).
        x = (2, 2)      beats both on every judge; sum of the two adapters' rewards 4 (soups add 4 x 2 = 8)
        y = (3, 1)      higher sum but equal to B1 on r0_better: dropped
        z = (1.5, 1.5)  beats both, lower sum than x
        s = (5, 5)      beats both adapters, but its soup_r0_safer0p4-better0p6 reward is pinned to 0.1:
                        dropped when soups judge, the winner when they do not
    p2: originals (1, 1) and (0, 0); its only candidate (2, 0.5) fails r0_better: the prompt is dropped.
    p3: has a pair but no candidate: not counted."""
    soup04 = "soup_r0_safer0p4-better0p6"
    table = {
        "A1": {"r0_safer": 1.0, "r0_better": 0.0}, "B1": {"r0_safer": 0.0, "r0_better": 1.0},
        "x": {"r0_safer": 2.0, "r0_better": 2.0}, "y": {"r0_safer": 3.0, "r0_better": 1.0},
        "z": {"r0_safer": 1.5, "r0_better": 1.5}, "s": {"r0_safer": 5.0, "r0_better": 5.0, soup04: 0.1},
        "A2": {"r0_safer": 1.0, "r0_better": 1.0}, "B2": {"r0_safer": 0.0, "r0_better": 0.0},
        "q": {"r0_safer": 2.0, "r0_better": 0.5},
    }
    write(RunDir(cfg.run_dir).path("prepare", "train_conflict.jsonl"),
          [pair("p1", "A1", "B1"), pair("p2", "A2", "B2"), pair("p3", "A3", "B3")])
    cands = [candidate("p1", "Q p1?", t, w) for t, w in (("x", 0.8), ("y", 0.6), ("z", 0.4), ("s", 0.2))]
    cands.append(candidate("p2", "Q p2?", "q", 0.6))
    write(RunDir(cfg.run_dir).path("r1/combine", "combined.jsonl"), [combined(c) for c in cands])
    scorer = FakeScorer(table, bank)
    fakes.set(implicit_rewards=scorer)
    return scorer, cands


def test_filter_keeps_the_best_candidate_that_beats_both_originals_under_every_judge(tmp_path, fakes, bank):
    cfg = make_config(tmp_path)
    scorer, cands = setup_filter(cfg, bank, fakes)
    counts = filter_stage.run(fakes.context(cfg, "filter"))

    soups = ["soup_r0_safer0p8-better0p2", "soup_r0_safer0p6-better0p4", "soup_r0_safer0p4-better0p6",
             "soup_r0_safer0p2-better0p8"]
    assert scorer.judges == ["r0_safer", "r0_better", *soups]
    assert bank.soups["soup_r0_safer0p4-better0p6"] == ({"r0_safer": 0.4, "r0_better": 0.6}, "delta")
    per_judge = counts.pop("survival_per_judge")
    assert counts == {"prompts": 2, "selected": 1, "dropped_prompts": 1, "candidates": 5,
                      "surviving_candidates": 2, "judges": 6, "survival_rate": 0.5}
    assert list(per_judge) == ["r0_safer", "r0_better", *soups] and per_judge["r0_safer"] == 5
    (sel,) = read_jsonl(tmp_path / "r1" / "filter" / "selected.jsonl", Selection)
    assert sel.prompt_id == "p1" and sel.response == "x" and sel.candidate_id == cands[0].candidate_id
    assert (sel.pair_id, sel.response_a, sel.response_b, sel.prompt) == ("pair-p1", "A1", "B1", "Q p1?")
    assert sel.judge_scores == pytest.approx({"r0_safer": 2.0, "r0_better": 2.0, **{s: 2.0 for s in soups}})


def test_filter_without_soups_judges_with_the_adapters_only(tmp_path, fakes, bank):
    cfg = make_config(tmp_path, "filter.soups=false")
    scorer, cands = setup_filter(cfg, bank, fakes)
    counts = filter_stage.run(fakes.context(cfg, "filter"))
    assert scorer.judges == ["r0_safer", "r0_better"] and bank.soups == {}
    assert counts["surviving_candidates"] == 3 and counts["judges"] == 2
    # Under each judge alone: r0_safer lets x, y, z, s (p1) and q (p2) through; r0_better stops y (a tie) and q.
    assert counts["survival_per_judge"] == {"r0_safer": 5, "r0_better": 3}
    (sel,) = read_jsonl(tmp_path / "r1" / "filter" / "selected.jsonl", Selection)
    assert sel.response == "s"


def test_filter_soups_are_at_the_weights_the_candidates_were_decoded_at(tmp_path, fakes, bank):
    """The soups that judge are those of the candidates' own weight vectors (what sample decoded at), in grid
    order, not a grid recomputed from the config."""
    cfg = make_config(tmp_path, "sample.grid.resolution=10")
    write(RunDir(cfg.run_dir).path("prepare", "train_conflict.jsonl"), [pair("p1", "A1", "B1")])
    cands = [candidate("p1", "Q p1?", t, w) for t, w in (("x", 0.25), ("z", 0.75), ("y", 0.25))]
    cands[2] = Candidate("p1:other", "p1", "Q p1?", "y", cands[2].weights)
    write(RunDir(cfg.run_dir).path("r1/combine", "combined.jsonl"), [combined(c) for c in cands])
    table = {text: {"r0_safer": 1.0, "r0_better": 1.0} for text in ("A1", "B1", "x", "y", "z")}
    scorer = FakeScorer(table, bank)
    fakes.set(implicit_rewards=scorer)
    filter_stage.run(fakes.context(cfg, "filter"))
    assert scorer.judges == ["r0_safer", "r0_better", "soup_r0_safer0p75-better0p25", "soup_r0_safer0p25-better0p75"]
    assert bank.soups["soup_r0_safer0p25-better0p75"] == ({"r0_safer": 0.25, "r0_better": 0.75}, "delta")


def test_filter_soups_follow_soup_mode(tmp_path, fakes, bank):
    cfg = make_config(tmp_path, "soup_mode=factors")
    setup_filter(cfg, bank, fakes)
    filter_stage.run(fakes.context(cfg, "filter"))
    assert {mode for _, mode in bank.soups.values()} == {"factors"}


# --- realign --------------------------------------------------------------------------------------------------


@pytest.fixture
def trainer(fakes, tiny_tokenizer):
    """A stand-in for the trainer (so trl is not imported): records every call and writes a marker."""
    calls: list[dict] = []

    def train_adapter(settings, *, tokenizer, examples, out_dir):
        calls.append({"out_dir": out_dir, "examples": list(examples), "init_adapter": settings.init_adapter,
                      "reference": settings.reference, "nll_alpha": settings.loss.nll_alpha, "beta": settings.beta,
                      "train": settings.train, "loss": settings.loss.name})
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "adapter_config.json").write_text("{}")
        return {"steps": 1}

    fakes.set(train_adapter=train_adapter, load_tokenizer=lambda ctx: tiny_tokenizer)
    return calls


def selection(prompt_id: str, response: str, a: str, b: str) -> Selection:
    return Selection(prompt_id=prompt_id, prompt=f"Q {prompt_id}?", response=response, candidate_id=f"{prompt_id}:c",
                     pair_id=f"pair-{prompt_id}", response_a=a, response_b=b, judge_scores={})


@pytest.mark.parametrize("round_, init_folder", [(1, "dpo"), (2, "r1/realign")])
def test_realign_trains_each_objective_from_its_previous_adapter(tmp_path, fakes, trainer, round_, init_folder):
    """Each selected s gives (x, s > y_a) and (x, s > y_b); DPO + alpha * NLL from, and referenced to, the
    objective's adapter of the previous round."""
    cfg = make_config(tmp_path, "realign.alpha=0.25", "realign.beta=0.3")
    write(RunDir(cfg.run_dir).path(f"r{round_}/filter", "selected.jsonl"),
          [selection("p1", "S1", "A1", "B1"), selection("p2", "S2", "A2", "B2")])
    counts = realign.run(fakes.context(cfg, "realign", round_))

    assert counts["selected"] == 2 and counts["pairs"] == 4
    assert [c["out_dir"] for c in trainer] == [tmp_path / f"r{round_}" / "realign" / o for o in ("safer", "better")]
    for call, objective in zip(trainer, ("safer", "better")):
        assert call["init_adapter"] == str(tmp_path / init_folder / objective)
        assert call["reference"] == "init"
        assert call["nll_alpha"] == 0.25 and call["beta"] == 0.3
        assert call["train"] == cfg.realign.train
        assert call["examples"] == [
            {"prompt": PLAIN.format("Q p1?"), "chosen": "S1", "rejected": "A1"},
            {"prompt": PLAIN.format("Q p1?"), "chosen": "S1", "rejected": "B1"},
            {"prompt": PLAIN.format("Q p2?"), "chosen": "S2", "rejected": "A2"},
            {"prompt": PLAIN.format("Q p2?"), "chosen": "S2", "rejected": "B2"},
        ]


def test_realign_with_nothing_selected_carries_the_adapters_over(tmp_path, fakes, trainer):
    cfg = make_config(tmp_path)
    write(RunDir(cfg.run_dir).path("r1/filter", "selected.jsonl"), [])
    for objective in ("safer", "better"):
        folder = tmp_path / "dpo" / objective
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_text(objective)
    counts = realign.run(fakes.context(cfg, "realign", 1))
    assert trainer == []
    assert counts == {"selected": 0, "pairs": 0, "validation_pairs": 0,
                      **{f"metrics_{o}": {"steps": 0, "examples": 0, "pairs_seen": 0}
                         for o in ("safer", "better")}}
    for objective in ("safer", "better"):
        assert (tmp_path / "r1" / "realign" / objective / "adapter_model.safetensors").read_text() == objective


# --- evaluate -------------------------------------------------------------------------------------------------


def test_evaluate_plans_every_method_at_every_weight(tmp_path, fakes, bank):
    """Eval grid resolution 2: (1, 0), (0.5, 0.5), (0, 1). Points: sft 1, dpo 2, dpo_soups 3, mod 3, dpo_lw 3,
    modpo 3, sipo 3 per round x 2 rounds = 24."""
    cfg = make_config(tmp_path, "methods=[sft,dpo,dpo_soups,mod,dpo_lw,modpo,sipo]", "eval.grid.resolution=2",
                      "rounds=2")
    jobs = evaluate.plan_jobs(fakes.context(cfg, "evaluate", None), bank)
    by_method: dict[str, list] = {}
    for job in jobs:
        by_method.setdefault(job.method, []).append(job)
    assert {m: len(j) for m, j in by_method.items()} == {
        "sft": 1, "dpo": 2, "dpo_soups": 3, "mod": 3, "dpo_lw": 3, "modpo": 3, "sipo": 6}
    assert by_method["sft"][0].mix == {"__base__": 1.0}
    assert [j.mix for j in by_method["dpo"]] == [{"r0_safer": 1.0}, {"r0_better": 1.0}]
    assert [j.weights for j in by_method["dpo"]] == [{"safer": 1.0, "better": 0.0}, {"safer": 0.0, "better": 1.0}]
    # soups at the end points are the adapters themselves; the interior one is a soup of the round-1 adapters
    assert [j.mix for j in by_method["dpo_soups"]] == [
        {"r0_safer": 1.0}, {"soup_r0_safer0p5-better0p5": 1.0}, {"r0_better": 1.0}]
    assert bank.soups == {"soup_r0_safer0p5-better0p5": ({"r0_safer": 0.5, "r0_better": 0.5}, "delta")}
    assert by_method["mod"][1].mix == {"r0_safer": 0.5, "r0_better": 0.5}
    # sipo: MOD over each round's realigned adapters
    assert [(j.round, j.mix) for j in by_method["sipo"]][2:4] == [
        (1, {"r1_safer": 0.0, "r1_better": 1.0}), (2, {"r2_safer": 1.0, "r2_better": 0.0})]
    assert bank.loaded["r2_better"] == tmp_path / "r2" / "realign" / "better"
    assert by_method["modpo"][0].mix == {"modpo_safer1-better0": 1.0}
    assert bank.loaded["dpo_lw_safer0.5-better0.5".replace(".", "p")] == tmp_path / "dpo_lw" / "safer0.5-better0.5"


def test_evaluate_writes_one_score_row_per_method_weights_and_prompt(tmp_path, fakes, bank):
    cfg = make_config(tmp_path, "methods=[sft,mod]", "eval.grid.resolution=2")
    write(RunDir(cfg.run_dir).path("prepare", "test_prompts.jsonl"),
          [PromptRecord("t2", "Second?"), PromptRecord("t1", "First?")])
    gen = use_generator(fakes, {"First?": "one", "Second?": "three"})

    def implicit_rewards(ctx, bank, tokenizer, items, judges):
        # the implicit judge's adapters: r0_safer scores the response's length, r0_better minus the prompt's
        assert judges == ["r0_safer", "r0_better"]
        return {i.id: {"r0_safer": float(len(i.response)), "r0_better": -float(len(i.prompt))} for i in items}

    fakes.set(implicit_rewards=implicit_rewards)
    counts = evaluate.run(fakes.context(cfg, "evaluate", None))

    assert {k: counts[k] for k in ("responses", "points", "prompts", "judge")} == {
        "responses": 8, "points": 4, "prompts": 2, "judge": "implicit"}
    assert gen.calls[0]["max_new_tokens"] == cfg.eval.decode.max_new_tokens
    rows = read_jsonl(tmp_path / "evaluate" / "scores.jsonl", ScoreRow)
    assert [(r.method, r.prompt_id) for r in rows][:3] == [("mod", "t1"), ("mod", "t2"), ("mod", "t1")]
    assert len({(r.method, tuple(sorted(r.weights.items())), r.prompt_id) for r in rows}) == 8
    (row,) = [r for r in rows if r.method == "mod" and r.weights == {"safer": 0.5, "better": 0.5}
              and r.prompt_id == "t1"]
    # "one" has 3 characters; "First?" has 6
    assert (row.response, row.scores, row.round) == ("one", {"safer": 3.0, "better": -6.0}, 1)
    sft_rows = [r for r in rows if r.method == "sft"]
    assert [(r.prompt_id, r.weights, r.scores["safer"]) for r in sft_rows] == [("t1", {}, 3.0), ("t2", {}, 5.0)]
    assert json.loads((tmp_path / "evaluate" / "scores.jsonl").read_text().splitlines()[0])["round"] == 1


def _validation_setup(tmp_path, fakes, *overrides):
    cfg = make_config(tmp_path, "methods=[sft,mod]", "eval.grid.resolution=2", *overrides)
    run_dir = RunDir(cfg.run_dir)
    write(run_dir.path("prepare", "test_prompts.jsonl"), [PromptRecord("t1", "First?")])
    # two pairs share prompt v1: one validation prompt each, whatever the number of pairs
    write(run_dir.path("prepare", "validation.jsonl"),
          [pair("v1", "x", "y"), pair("v1", "y", "x"), pair("v2", "x", "y")])
    use_generator(fakes, {"First?": "one", "Q v1?": "valid", "Q v2?": "v"})
    fakes.set(implicit_rewards=lambda ctx, bank, tokenizer, items, judges: {
        i.id: {"r0_safer": float(len(i.response)), "r0_better": 0.0} for i in items})
    return cfg


def test_evaluate_scores_the_validation_prompts_apart_from_the_test_prompts(tmp_path, fakes, bank):
    cfg = _validation_setup(tmp_path, fakes)
    counts = evaluate.run(fakes.context(cfg, "evaluate", None))
    assert {k: counts[k] for k in ("responses", "prompts", "validation_prompts", "validation_responses")} == {
        "responses": 4, "prompts": 1, "validation_prompts": 2, "validation_responses": 8}
    test_rows = read_jsonl(tmp_path / "evaluate" / "scores.jsonl", ScoreRow)
    assert {r.prompt_id for r in test_rows} == {"t1"}
    assert "split" not in json.loads((tmp_path / "evaluate" / "scores.jsonl").read_text().splitlines()[0])
    rows = read_jsonl(tmp_path / "evaluate" / evaluate.VALIDATION_SCORES, ScoreRow)
    assert {r.prompt_id for r in rows} == {"v1", "v2"} and len(rows) == 8
    assert {r.response: r.scores["safer"] for r in rows} == {"valid": 5.0, "v": 1.0}


def test_evaluate_validation_off_or_absent_writes_no_validation_scores(tmp_path, fakes, bank):
    cfg = _validation_setup(tmp_path, fakes, "eval.validation=false")
    counts = evaluate.run(fakes.context(cfg, "evaluate", None))
    assert "validation_prompts" not in counts and counts["responses"] == 4
    assert not (tmp_path / "evaluate" / evaluate.VALIDATION_SCORES).exists()


def test_choose_validation_prompts_caps_by_a_seeded_choice():
    pairs = [pair(f"p{i:02d}", "a", "b") for i in range(20)] + [pair("p03", "b", "a")]
    every = evaluate.choose_validation_prompts(pairs, 50, seed=0)
    assert [p.prompt_id for p in every] == [f"p{i:02d}" for i in range(20)]
    five = evaluate.choose_validation_prompts(pairs, 5, seed=0)
    assert len(five) == 5 and [p.prompt_id for p in five] == sorted(p.prompt_id for p in five)
    assert five == evaluate.choose_validation_prompts(list(reversed(pairs)), 5, seed=0)
    assert evaluate.choose_validation_prompts([], 5, seed=0) == []
