"""The stage graph, fingerprints and the orchestrator (sipo.pipeline), with fake stage functions: no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipo import pipeline
from sipo.artifacts import RunDir
from sipo.config import PipelineConfig, save_config
from sipo.configure import load_config
from sipo.errors import ConfigError, RunDirError
from sipo.pipeline import check_run_dir, fingerprint, needs_sft_stage, plan, run_pipeline

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"

ROUND_1 = ["r1/sample", "r1/review", "r1/rewrite", "r1/combine", "r1/filter", "r1/realign"]
ROUND_2 = [s.replace("r1/", "r2/") for s in ROUND_1]


def smoke(*overrides: str, run_dir: str = "/nonexistent/run") -> PipelineConfig:
    return load_config(SMOKE, [f"run_dir={run_dir}", *overrides])


def with_objectives(cfg: PipelineConfig, objectives: list[str]) -> PipelineConfig:
    """The preset's descriptions name its own objectives, and a dotted override cannot remove dict keys."""
    cfg.objectives, cfg.objective_descriptions = objectives, {}
    return cfg


def ids(cfg: PipelineConfig) -> list[str]:
    return [s.id for s in plan(cfg)]


def fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """Every stage's fingerprint, computed in plan order as the orchestrator does."""
    result: dict[str, str] = {}
    for stage in plan(cfg):
        result[stage.id] = fingerprint(cfg, stage, {u: result[u] for u in stage.upstream})
    return result


def changed(before: PipelineConfig, after: PipelineConfig) -> set[str]:
    a, b = fingerprints(before), fingerprints(after)
    assert a.keys() == b.keys()
    return {k for k in a if a[k] != b[k]}


# --- plan -----------------------------------------------------------------------------------------------------


def test_stage_order_round_1():
    assert ids(smoke()) == ["prepare", "sft", "dpo", *ROUND_1, "evaluate", "report"]


def test_stage_order_round_2_samples_from_round_1_adapters():
    cfg = smoke("rounds=2")
    assert ids(cfg) == ["prepare", "sft", "dpo", *ROUND_1, *ROUND_2, "evaluate", "report"]
    stages = {s.id: s for s in plan(cfg)}
    assert "r1/realign" in stages["r2/sample"].upstream
    assert "dpo" not in stages["r2/sample"].upstream
    assert stages["r2/sample"].round == 2 and stages["r2/sample"].name == "sample"
    # evaluate reads every round's adapters (sipo@r1 and sipo)
    assert {"dpo", "r1/realign", "r2/realign"} <= set(stages["evaluate"].upstream)
    assert stages["report"].upstream == ("evaluate",)


def test_sft_stage_only_when_needed():
    """A random model must be built by the sft stage; a given model needs it only with sft.enabled."""
    cfg = smoke("model.name_or_path=/models/tiny", "sft.enabled=false")
    assert not needs_sft_stage(cfg)
    assert ids(cfg) == ["prepare", "dpo", *ROUND_1, "evaluate", "report"]
    assert {s.id: s for s in plan(cfg)}["dpo"].upstream == ("prepare",)
    assert "sft" in ids(smoke("model.name_or_path=/models/tiny", "sft.enabled=true"))
    assert "sft" in ids(smoke("sft.enabled=false"))  # model.name_or_path: random


def test_baseline_stages_only_when_in_methods():
    assert "dpo_lw" not in ids(smoke()) and "modpo" not in ids(smoke())
    cfg = smoke("methods=[sft,dpo_lw,sipo]")
    assert ids(cfg) == ["prepare", "sft", "dpo", *ROUND_1, "dpo_lw", "evaluate", "report"]
    cfg = smoke("methods=[modpo,dpo_lw]")
    order = ids(cfg)
    assert order[-4:] == ["dpo_lw", "modpo", "evaluate", "report"]
    evaluate = {s.id: s for s in plan(cfg)}["evaluate"]
    assert {"dpo_lw", "modpo"} <= set(evaluate.upstream)


def test_stage_ids_are_unique_and_upstream_comes_first():
    cfg = smoke("rounds=3", "methods=[sft,dpo,dpo_soups,mod,dpo_lw,modpo,sipo]")
    order = ids(cfg)
    assert len(order) == len(set(order))
    for i, stage in enumerate(plan(cfg)):
        assert all(order.index(u) < i for u in stage.upstream), stage.id


# --- fingerprints ---------------------------------------------------------------------------------------------


def test_fingerprints_are_deterministic():
    assert fingerprints(smoke()) == fingerprints(smoke())
    assert len(set(fingerprints(smoke()).values())) == len(ids(smoke()))


def test_realign_alpha_changes_realign_and_everything_after_it_only():
    assert changed(smoke(), smoke("realign.alpha=0.5")) == {"r1/realign", "evaluate", "report"}


def test_sample_max_new_tokens_changes_sample_onward():
    before = smoke("methods=[sft,dpo_lw,sipo]")
    after = smoke("methods=[sft,dpo_lw,sipo]", "sample.decode.max_new_tokens=5")
    assert changed(before, after) == {*ROUND_1, "evaluate", "report"}  # prepare, sft, dpo, dpo_lw untouched


def test_combine_rule_changes_combine_onward():
    assert changed(smoke(), smoke("combine.rule=no_worse")) == {
        "r1/combine", "r1/filter", "r1/realign", "evaluate", "report"}


def test_dpo_beta_changes_dpo_and_the_judges_that_use_it():
    assert changed(smoke(), smoke("dpo.beta=0.2")) == {"dpo", *ROUND_1, "evaluate", "report"}


def test_evaluation_settings_change_evaluate_and_report_only():
    assert changed(smoke(), smoke("eval.decode.max_new_tokens=3")) == {"evaluate", "report"}
    assert changed(smoke(), smoke("eval.reference_point=[0,0]")) == {"report"}


def test_a_second_round_reuses_round_one():
    """Adding a round leaves every round-1 stage finished; only the new round and evaluation run."""
    one, two = fingerprints(smoke()), fingerprints(smoke("rounds=2"))
    assert {k for k in one if one[k] != two[k]} == {"evaluate", "report"}
    assert set(two) - set(one) == set(ROUND_2)


def test_the_run_dir_does_not_enter_fingerprints():
    """Moving a run directory keeps it resumable."""
    assert fingerprints(smoke(run_dir="/a")) == fingerprints(smoke(run_dir="/b"))


def test_synthetic_prepare_depends_on_what_its_sft_demonstrations_render():
    """The synthetic benchmark's prepare stage writes SFT demonstrations of the review and rewrite prompts, which
    render objective_descriptions and the templates; a real dataset's prepare does not."""
    demo = Path(SMOKE).parent / "demo.yaml"
    a = load_config(demo, ["run_dir=/r"])
    b = load_config(demo, ["run_dir=/r", "objective_descriptions.verbosity=how much the response says"])
    assert "prepare" in changed(a, b)
    c = load_config(demo, ["run_dir=/r", "review.template=/elsewhere/review.jinja"])
    assert "prepare" in changed(a, c)
    assert "prepare" not in changed(smoke(), smoke("objective_descriptions.verbosity=long"))


# --- check_run_dir --------------------------------------------------------------------------------------------


def test_check_run_dir(tmp_path):
    cfg = smoke(run_dir=str(tmp_path))
    check_run_dir(cfg, RunDir(tmp_path))  # no config.yaml yet: fine
    save_config(cfg, tmp_path / "config.yaml")
    # No stage finished (e.g. a run refused for bad data): other objectives may use the directory.
    check_run_dir(with_objectives(smoke(run_dir=str(tmp_path)), ["correctness", "coherence"]), RunDir(tmp_path))
    (tmp_path / "prepare").mkdir()
    (tmp_path / "prepare" / "manifest.json").write_text("{}")
    check_run_dir(smoke("realign.alpha=0.3", run_dir=str(tmp_path)), RunDir(tmp_path))  # other settings: fine
    with pytest.raises(RunDirError, match="objectives"):
        check_run_dir(with_objectives(smoke(run_dir=str(tmp_path)), ["correctness", "coherence"]), RunDir(tmp_path))
    with pytest.raises(RunDirError, match="data.source"):
        check_run_dir(smoke("data.source=jsonl", run_dir=str(tmp_path)), RunDir(tmp_path))
    with pytest.raises(RunDirError, match="model.name_or_path"):
        check_run_dir(smoke("model.name_or_path=/other", run_dir=str(tmp_path)), RunDir(tmp_path))


def test_check_run_dir_unreadable(tmp_path):
    (tmp_path / "config.yaml").write_text("objectives: [a, b\n")
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "manifest.json").write_text("{}")
    with pytest.raises(RunDirError, match="unreadable"):
        check_run_dir(smoke(run_dir=str(tmp_path)), RunDir(tmp_path))


# --- run_pipeline with fake stages ----------------------------------------------------------------------------


class FakeStages:
    """Stands in for sipo.stages.*: records which stage ran and writes one output file per stage."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on

    def __call__(self, name: str):
        def run(ctx: pipeline.StageContext) -> dict:
            assert (ctx.run_dir.root / "config.yaml").is_file(), "config.yaml must be saved before any work"
            for upstream in ctx.stage.upstream:
                assert ctx.run_dir.read_manifest(upstream) is not None, f"{upstream} unfinished"
            if ctx.stage.id == self.fail_on:
                raise RuntimeError("killed")
            self.calls.append(ctx.stage.id)
            (ctx.out_dir / "out.txt").write_text(ctx.stage.id)
            return {"items": len(self.calls)}

        return run


@pytest.fixture
def fake_stages(monkeypatch):
    fake = FakeStages()
    monkeypatch.setattr(pipeline, "stage_function", fake)
    # Manifest details that cost a subprocess per stage; not what these tests are about.
    monkeypatch.setattr(pipeline, "_git_sha", lambda: None)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return fake


def test_run_then_rerun_skips_every_stage(tmp_path, fake_stages):
    cfg = smoke("model.device=cpu", run_dir=str(tmp_path))
    results = run_pipeline(cfg)
    assert [r["id"] for r in results] == ids(cfg)
    assert all(r["status"] == "ran" for r in results)
    assert fake_stages.calls == ids(cfg)
    manifest = RunDir(tmp_path).read_manifest("r1/filter")
    combine = RunDir(tmp_path).read_manifest("r1/combine")
    # Chained on the upstream stage's result id (fresh each time it runs), not on its settings alone.
    assert manifest["upstream"] == {"r1/combine": combine["result"]}
    filter_spec = {s.id: s for s in plan(cfg)}["r1/filter"]
    assert manifest["fingerprint"] == fingerprint(cfg, filter_spec, {"r1/combine": combine["result"]})
    assert manifest["outputs"] == {"out.txt": [len("r1/filter"), manifest["outputs"]["out.txt"][1]]}
    assert manifest["counts"] == {"items": ids(cfg).index("r1/filter") + 1}
    assert {"seconds", "versions", "finished_at", "processes", "result"} <= set(manifest)

    fake_stages.calls.clear()
    again = run_pipeline(cfg)
    assert fake_stages.calls == []
    assert all(r["status"] == "skipped" for r in again)
    assert again[ids(cfg).index("r1/filter")]["counts"] == manifest["counts"]


def test_changed_setting_reruns_exactly_the_changed_stages(tmp_path, fake_stages):
    run_pipeline(smoke("model.device=cpu", run_dir=str(tmp_path)))
    fake_stages.calls.clear()
    run_pipeline(smoke("model.device=cpu", "realign.alpha=0.7", run_dir=str(tmp_path)))
    assert fake_stages.calls == ["r1/realign", "evaluate", "report"]


def test_force_reruns_a_finished_stage(tmp_path, fake_stages):
    cfg = smoke("model.device=cpu", run_dir=str(tmp_path))
    run_pipeline(cfg)
    fake_stages.calls.clear()
    run_pipeline(cfg, force=["review"])
    assert fake_stages.calls == ["r1/review", "r1/rewrite", "r1/combine", "r1/filter", "r1/realign", "evaluate",
                                 "report"]  # a forced stage's new results re-run everything that reads them


def test_a_failed_stage_leaves_no_manifest_and_the_run_resumes_there(tmp_path, monkeypatch, fake_stages):
    cfg = smoke("model.device=cpu", run_dir=str(tmp_path))
    monkeypatch.setattr(pipeline, "stage_function", FakeStages(fail_on="r1/combine"))
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(cfg)
    run = RunDir(tmp_path)
    assert run.read_manifest("r1/rewrite") is not None
    assert run.read_manifest("r1/combine") is None
    resumed = FakeStages()
    monkeypatch.setattr(pipeline, "stage_function", resumed)
    run_pipeline(cfg)
    assert resumed.calls == ["r1/combine", "r1/filter", "r1/realign", "evaluate", "report"]


def test_partial_outputs_of_other_settings_are_not_reused(tmp_path, monkeypatch, fake_stages):
    """A stage may keep resumable partial outputs in its folder (shards, a margins cache); they must not survive
    into a run of the stage with other settings. The fake sample stage caches its setting and reuses the cache
    when present, as the sharded stages do."""
    def caching(name):
        def run(ctx):
            cache = ctx.out_dir / "cache.txt"
            if not cache.is_file():
                cache.write_text(str(ctx.cfg.sample.decode.max_new_tokens))
            return {"max_new_tokens": int(cache.read_text())}
        return run

    monkeypatch.setattr(pipeline, "stage_function", caching)
    run_pipeline(smoke("model.device=cpu", run_dir=str(tmp_path)))
    assert RunDir(tmp_path).read_manifest("r1/sample")["counts"] == {"max_new_tokens": 12}
    run_pipeline(smoke("model.device=cpu", "sample.decode.max_new_tokens=5", run_dir=str(tmp_path)))
    assert RunDir(tmp_path).read_manifest("r1/sample")["counts"] == {"max_new_tokens": 5}


def test_partial_outputs_of_the_same_settings_are_kept(tmp_path, monkeypatch, fake_stages):
    """A stage killed midway resumes from its partial outputs when the settings did not change."""
    monkeypatch.setattr(pipeline, "stage_function", FakeStages(fail_on="r1/sample"))
    cfg = smoke("model.device=cpu", run_dir=str(tmp_path))
    with pytest.raises(RuntimeError):
        run_pipeline(cfg)
    shard = RunDir(tmp_path).path("r1/sample", "shards", "00000.jsonl")
    shard.parent.mkdir(parents=True)
    shard.write_text("{}\n")  # as if the killed stage had finished one shard
    monkeypatch.setattr(pipeline, "stage_function", FakeStages(fail_on="r1/sample"))
    with pytest.raises(RuntimeError):
        run_pipeline(cfg)
    assert shard.is_file()


def test_stage_runs_only_after_its_upstream(tmp_path, fake_stages):
    cfg = smoke("model.device=cpu", run_dir=str(tmp_path))
    with pytest.raises(RunDirError, match="'prepare' is not finished"):
        run_pipeline(cfg, only=["evaluate"])
    assert fake_stages.calls == []


def test_unknown_stage_name(tmp_path, fake_stages):
    with pytest.raises(ConfigError, match="unknown stage 'r3/sample'"):
        run_pipeline(smoke(run_dir=str(tmp_path)), only=["r3/sample"])


def test_dry_run_writes_nothing(tmp_path, fake_stages):
    run = tmp_path / "run"
    results = run_pipeline(smoke(run_dir=str(run)), dry_run=True)
    assert [r["status"] for r in results] == ["planned"] * len(results)
    assert not run.exists()
    assert fake_stages.calls == []


def test_a_run_dir_of_other_objectives_is_refused_before_any_work(tmp_path, fake_stages):
    run_pipeline(smoke("model.device=cpu", run_dir=str(tmp_path)))
    fake_stages.calls.clear()
    other = with_objectives(smoke("model.device=cpu", run_dir=str(tmp_path)), ["helpfulness", "verbosity"])
    with pytest.raises(RunDirError, match="objectives"):
        run_pipeline(other)
    assert fake_stages.calls == []
