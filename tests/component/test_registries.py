"""Extension points: a method and a judge added from inside a test, without editing any module of the package,
run through config validation, the evaluate stage and the report; a data source's declared needs and offers drive
validation; the stage registry drives the plan and help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipo.artifacts import RunDir
from sipo.configure import load_config
from sipo.errors import ConfigError
from sipo.judges import JUDGES, JudgeDef
from sipo.methods import METHODS, Job, MethodDef
from sipo.records import PromptRecord, ScoreRow, read_jsonl, write_jsonl
from sipo.stage import Models, StageContext, StageSpec
from sipo.stages import evaluate
from sipo.stages import report as report_stage


class Bank:
    def __init__(self):
        self.loaded: dict[str, Path] = {}

    def load_adapter(self, name, path):
        self.loaded[name] = Path(path)


def echo_generate(bank, tokenizer, prompts, mixes, **kwargs):
    """The reply names the adapter mix it was decoded with, so the judge below can score the mix."""
    return [" ".join(f"{name}={weight:g}" for name, weight in sorted(mix.items())) for mix in mixes]


@pytest.fixture
def toy_method_and_judge():
    def points(m):
        # MOD at the mirrored weight vector: a method that is not any built-in one.
        return [Job("mirror", 1, w, m.objective_mix(dict(zip(m.objectives, reversed(list(w.values())))), 0))
                for w in m.grid]

    def build(ctx, bank, tokenizer):
        objectives = list(ctx.cfg.objectives)

        def score(items):
            # objective o scores the decoding weight of its own adapter, read back from the echoed mix
            out = {}
            for item in items:
                mix = dict(part.split("=") for part in item.response.split())
                out[item.id] = {o: float(mix.get(f"r0_{o}", 0.0)) for o in objectives}
            return out

        return score

    METHODS.register(MethodDef("mirror", "MOD at the mirrored weights", points, colour="#123456", marker="x"))
    JUDGES.register(JudgeDef("mix_weight", "the decoding weight of each objective's adapter", build))
    yield
    METHODS.unregister("mirror")
    JUDGES.unregister("mix_weight")


def config(tmp_path, *overrides):
    return load_config(None, [
        f"run_dir={tmp_path}", "objectives=[safer,better]", "data.source=jsonl", "data.path=unused.jsonl",
        "model.name_or_path=random", "model.prompt_template=plain", "model.device=cpu", *overrides])


def test_a_registered_method_and_judge_run_through_evaluate_and_report(tmp_path, toy_method_and_judge,
                                                                         tiny_tokenizer):
    cfg = config(tmp_path, "methods=[mod,mirror]", "eval.judge=mix_weight", "eval.grid.resolution=4",
                 "eval.reference_point=[0,0]")
    write_jsonl(RunDir(cfg.run_dir).path("prepare", "test_prompts.jsonl"),
                [PromptRecord("t1", "First?"), PromptRecord("t2", "Second?")])
    bank = Bank()
    models = Models(load_bank=lambda ctx, adapters: (bank, tiny_tokenizer), generate=echo_generate)
    ctx = StageContext(cfg=cfg, run_dir=RunDir(cfg.run_dir), stage=StageSpec("evaluate"), device="cpu",
                       models=models)

    counts = evaluate.run(ctx)

    assert counts["points"] == 10 and counts["responses"] == 20 and counts["judge"] == "mix_weight"
    rows = read_jsonl(tmp_path / "evaluate" / "scores.jsonl", ScoreRow)
    (row,) = [r for r in rows if r.method == "mirror" and r.weights == {"safer": 0.75, "better": 0.25}
              and r.prompt_id == "t1"]
    assert row.response == "r0_better=0.75 r0_safer=0.25"
    assert row.scores == {"safer": 0.25, "better": 0.75}

    report_stage.run(StageContext(cfg=cfg, run_dir=RunDir(cfg.run_dir), stage=StageSpec("report"), device="cpu"))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["judge"] == "mix_weight"
    assert set(report["methods"]) == {"mod", "mirror"}
    mirror = report["methods"]["mirror"]
    assert [p["scores"] for p in mirror["points"]][:2] == [{"safer": 0.0, "better": 1.0},
                                                           {"safer": 0.25, "better": 0.75}]
    # the points lie on w_safer + w_better = 1: the front is all of them, the same area as mod's
    assert mirror["hypervolume"] == pytest.approx(report["methods"]["mod"]["hypervolume"])
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 0
    assert "mirror" in (tmp_path / "report" / "report.md").read_text()


def test_an_unregistered_method_or_judge_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'methods': unknown method 'mirror' \(choose from sft,"):
        config(tmp_path, "methods=[mirror]")
    with pytest.raises(ConfigError, match="config key 'eval.judge': unknown judge 'mix_weight'"):
        config(tmp_path, "eval.judge=mix_weight")


def test_a_registered_data_source_is_accepted_by_validation(tmp_path):
    from sipo.data import SOURCES, register_source

    with pytest.raises(ConfigError, match="unknown source 'toy'"):
        config(tmp_path, "data.source=toy")
    register_source("toy", lambda cfg: [])
    try:
        assert config(tmp_path, "data.source=toy").data.source == "toy"
    finally:
        SOURCES.unregister("toy")


def test_what_a_data_source_asks_of_the_config_and_offers_is_read_from_its_definition(tmp_path):
    """A source without data.path, with rules of its own and an oracle: validation reads its SourceDef, not its name
    (the synthetic benchmark's rules hold for any source that declares them)."""
    from sipo.data import SOURCES, SourceDef

    def own_rules(cfg):
        if cfg.seed == 7:
            raise ConfigError("config key 'seed': the toy world has no seed 7")

    with pytest.raises(ConfigError, match=r"config key 'data.path': is required for data.source=jsonl"):
        config(tmp_path, "data.path=null")
    SOURCES.register(SourceDef("toy", lambda cfg: [], needs_path=False, check_config=own_rules,
                               oracle=lambda cfg: None))
    try:
        cfg = config(tmp_path, "data.source=toy", "data.path=null", "methods=[sft,sipo_oracle_filter]")
        assert (cfg.data.path, cfg.methods) == (None, ["sft", "sipo_oracle_filter"])
        with pytest.raises(ConfigError, match="config key 'seed': the toy world has no seed 7"):
            config(tmp_path, "data.source=toy", "seed=7")
        with pytest.raises(ConfigError, match=r"sipo_oracle_filter needs the exact oracle of data.source: synthetic, "
                                              r"toy$"):
            config(tmp_path, "methods=[sft,sipo_oracle_filter]")
    finally:
        SOURCES.unregister("toy")


def test_a_method_that_trains_a_stage_puts_it_in_the_plan(tmp_path):
    from sipo.pipeline import plan

    METHODS.register(MethodDef("lw_again", "DPO-LW under another name", lambda m: [], trains=("dpo_lw",)))
    try:
        ids = [s.id for s in plan(config(tmp_path, "methods=[sft,lw_again]"))]
    finally:
        METHODS.unregister("lw_again")
    assert ids == ["prepare", "sft", "dpo", "dpo_lw", "evaluate", "report"]
