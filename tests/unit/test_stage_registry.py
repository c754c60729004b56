"""The registries (stages, methods, judges) and what is derived from them: fingerprints over whole config
sections with an exclude list, the input checks, the command-line help. No model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipo.cli import build_parser
from sipo.configure import load_config
from sipo.judges import JUDGES
from sipo.methods import METHODS, MethodDef
from sipo.pipeline import fingerprint, plan
from sipo.registry import Registry
from sipo.stage import StageSpec
from sipo.stages.registry import ROUND_STAGES, STAGES

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def smoke(*overrides: str):
    return load_config(SMOKE, ["run_dir=/nonexistent/run", *overrides])


def test_every_stage_module_declares_its_spec_and_the_registry_keeps_pipeline_order():
    assert STAGES.names() == ("prepare", "sft", "dpo", "label", "sample", "review", "rewrite", "combine", "filter",
                              "realign", "review_probe", "sipo_no_rewrite", "sipo_no_filter", "sipo_oracle_filter", "nll_control",
                              "dpo_lw", "modpo", "evaluate", "report")
    assert ROUND_STAGES == ("sample", "review", "rewrite", "combine", "filter", "realign")
    for name in STAGES:
        module = __import__(f"sipo.stages.{name}", fromlist=["SPEC"])
        assert module.SPEC is STAGES[name] and module.SPEC.run is module.run


def test_every_declared_fingerprint_key_exists_in_the_config():
    cfg = smoke("methods=[sft,dpo,dpo_soups,mod,dpo_lw,modpo,sipo,sipo_no_rewrite,sipo_no_filter,sipo_oracle_filter,"
                "nll_control]", "data.source=synthetic", "sft.enabled=true")
    for stage in plan(cfg):
        fingerprint(cfg, stage, {})  # raises KeyError on a key that is not in the config


def test_a_fingerprint_key_that_does_not_exist_fails_loudly():
    cfg = smoke()
    with pytest.raises(KeyError, match="'eval.jugde' is not a config key"):
        fingerprint(cfg, StageSpec("evaluate", None, ("eval.jugde",)), {})
    with pytest.raises(KeyError, match="exclude 'eval.nothing' is not a config key"):
        fingerprint(cfg, StageSpec("evaluate", None, ("eval",), (), ("eval.nothing",)), {})


def evaluate_fingerprint(*overrides: str) -> str:
    cfg = smoke(*overrides)
    (stage,) = [s for s in plan(cfg) if s.name == "evaluate"]
    return fingerprint(cfg, stage, {})


def test_evaluate_fingerprints_the_whole_eval_section_but_the_reference_point():
    base = evaluate_fingerprint()
    assert evaluate_fingerprint("eval.reference_point=[0,0]") == base  # only the report reads it
    assert evaluate_fingerprint("eval.reward_model.batch_size=3") != base  # a judge setting, never listed by hand
    assert evaluate_fingerprint("eval.decode.top_p=0.5") != base


def test_input_checks_follow_the_stage_flags():
    assert {n for n in STAGES if STAGES[n].loads_model} == set(STAGES) - {"prepare", "report"}
    assert {n for n in STAGES if STAGES[n].renders_templates} == {"sft", "review", "rewrite", "review_probe"}
    assert {n for n in STAGES if STAGES[n].distributed} == set(STAGES) - {"prepare", "label", "combine", "filter",
                                                                          "report"}


def test_help_lists_every_registered_stage_method_and_judge():
    text = build_parser().format_help()
    for name in (*STAGES, *METHODS, *JUDGES):
        assert name in text
    assert "-> rK/filter/selected.jsonl" in text


def test_registry_refuses_a_taken_name_and_a_name_that_cannot_name_a_folder():
    registry: Registry[MethodDef] = Registry("method")
    first = registry.register(MethodDef("a", "", lambda m: []))
    with pytest.raises(ValueError, match="method 'a' is already registered"):
        registry.register(MethodDef("a", "", lambda m: []))
    registry.register(first)  # the same entry again is a no-op
    replaced = registry.register(MethodDef("a", "again", lambda m: []), replace=True)
    assert registry["a"] is replaced and registry.names() == ("a",)
    with pytest.raises(ValueError, match="letters, digits"):
        registry.register(MethodDef("a/b", "", lambda m: []))
