"""The config tree: presets, dotted overrides, every validation rule, weight grids and their tags."""

from __future__ import annotations

import ast
import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sipo.config import (
    CombineRule,
    DecodeSettings,
    Device,
    Dtype,
    FillJudge,
    ModelConfig,
    OnBadRow,
    PipelineConfig,
    PromptTemplate,
    RandomModelConfig,
    RandomTokenizer,
    RewardModelConfig,
    RewardModelSpec,
    SoupMode,
    TrainSettings,
    WeightGrid,
    config_text,
    field_choices,
    save_config,
    to_dict,
    weight_grid,
    weights_tag,
)
from sipo.configure import load_config, validate
from sipo.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# A valid config that needs no preset: two objectives not named like HelpSteer's, a user's JSONL file.
BASE = ["run_dir=run", "objectives=[safer,better]", "data.source=jsonl", "data.path=data.jsonl",
        "model.name_or_path=some/model"]


def base(*overrides: str) -> PipelineConfig:
    return load_config(None, [*BASE, *overrides])


# --- presets and overrides ------------------------------------------------------------------------------------


PRESETS = sorted(CONFIGS.glob("*.yaml"))


def test_the_documented_presets_exist():
    assert {"smoke.yaml", "demo.yaml"} <= {p.name for p in PRESETS}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_presets_load_and_start_with_the_command_that_runs_them(path):
    """Every preset validates as shipped (run_dir overridden) and its header comment shows ``sipo run``."""
    cfg = load_config(path, ["run_dir=elsewhere"])
    assert cfg.run_dir == "elsewhere"
    assert len(cfg.objectives) >= 2
    header = [line for line in path.read_text().splitlines()[:5] if line.startswith("#")]
    assert any(f"sipo run configs/{path.name}" in line for line in header)


def test_smoke_preset_values():
    """configs/smoke.yaml: a random tiny model on a HelpSteer fixture of this repository, judged by implicit
    rewards, every default method."""
    cfg = load_config(CONFIGS / "smoke.yaml", [])
    assert cfg.model.name_or_path == "random"
    assert cfg.objectives == ["correctness", "verbosity"]
    assert cfg.data.source == "helpsteer"
    assert cfg.data.path.startswith("tests/fixtures/")
    assert (CONFIGS.parent / cfg.data.path).is_file()
    assert cfg.eval.judge == "implicit"
    assert cfg.methods == ["sft", "dpo", "dpo_soups", "mod", "sipo"]


def test_dotted_overrides_reach_nested_keys_and_keep_types():
    cfg = load_config(CONFIGS / "smoke.yaml", ["run_dir=/tmp/r", "dpo.beta=0.25", "dpo.lora.r=2",
                                               "sample.decode.max_new_tokens=7", "combine.rule=no_worse",
                                               "rounds=2"])
    assert cfg.dpo.beta == 0.25 and isinstance(cfg.dpo.beta, float)
    assert cfg.dpo.lora.r == 2
    assert cfg.sample.decode.max_new_tokens == 7
    assert cfg.combine.rule == "no_worse"
    assert cfg.rounds == 2
    assert cfg.dpo.train.max_steps == 4  # untouched keys keep the preset's value


def test_list_override_syntax():
    """``methods=[sft,mod]`` replaces the preset's list (it does not merge into it)."""
    cfg = load_config(CONFIGS / "smoke.yaml", ["methods=[sft,mod]"])
    assert cfg.methods == ["sft", "mod"]
    cfg = base("sample.grid.explicit=[[0.3,0.7],[0.6,0.4]]")
    assert cfg.sample.grid.explicit == [[0.3, 0.7], [0.6, 0.4]]


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match=r"'dpo\.bta'"):
        base("dpo.bta=0.2")


def test_unknown_key_in_the_yaml_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: r\nobjectives: [a, b]\nfoo: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["data.source=jsonl", "data.path=x", "model.name_or_path=m"])
    assert str(path) in str(info.value) and "'foo'" in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path):
    """The list on line 2 is not closed; the parser notices on line 3."""
    path = tmp_path / "broken.yaml"
    path.write_text("run_dir: r\nobjectives: [a, b\nseed: 1\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: not valid YAML"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/config.yaml")


@pytest.mark.parametrize("override, key", [
    ("dpo.beta=high", "dpo.beta"),
    ("rounds=two", "rounds"),
    ("seed=1.5", "seed"),
    ("sft.enabled=maybe", "sft.enabled"),
])
def test_wrong_type_is_rejected_with_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        base(override)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        base("rounds")


def test_required_keys_must_be_set():
    """No preset and no model: the missing key is named."""
    with pytest.raises(ConfigError, match=r"'model\.name_or_path' is required"):
        load_config(None, ["run_dir=r", "objectives=[a,b]", "data.source=synthetic", "sft.enabled=true"])


def test_saved_config_loads_back_identically(tmp_path):
    """``RUN_DIR/config.yaml`` is what ``sipo report RUN_DIR`` reloads: the round trip must be exact."""
    cfg = load_config(CONFIGS / "demo.yaml", ["run_dir=r", "sample.grid.explicit=[[0.25,0.75]]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert to_dict(again) == to_dict(cfg)


# --- validate(): one rule each --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, key", [
    (["objectives=[safer,safer]"], "objectives"),
    (["objectives=[]"], "objectives"),
    (["objectives=[a/b,c]"], "objectives"),
    (["objective_descriptions={kind: be kind}"], "objective_descriptions"),
    (["methods=[sft,best]"], "methods"),
    (["methods=[]"], "methods"),
    (["rounds=0"], "rounds"),
    (["soup_mode=average"], "soup_mode"),
    (["data.source=parquet"], "data.source"),
    (["data.path=null"], "data.path"),
    (["data.conflict_fraction=1.5"], "data.conflict_fraction"),
    (["data.test_fraction=1.0"], "data.test_fraction"),
    (["data.validation_fraction=-0.1"], "data.validation_fraction"),
    (["data.test_fraction=0.5", "data.validation_fraction=0.5"], "data.test_fraction"),
    (["model.dtype=int8"], "model.dtype"),
    (["model.device=tpu"], "model.device"),
    (["model.prompt_template=alpaca"], "model.prompt_template"),
    (["model.random.tokenizer=char"], "model.random.tokenizer"),
    (["review.reviewer=correctness"], "review.reviewer"),
    (["combine.rule=dominates"], "combine.rule"),
    (["eval.judge=gpt4"], "eval.judge"),
    (["eval.reference_point=[0.0]"], "eval.reference_point"),
    (["eval.reference_point=[0,0,0]"], "eval.reference_point"),
    (["sample.grid.explicit=[[0.5,0.4]]"], "sample.grid.explicit[0]"),
    (["sample.grid.explicit=[[0.2,0.8],[0.5,0.3,0.2]]"], "sample.grid.explicit[1]"),
    (["sample.grid.explicit=[[1.5,-0.5]]"], "sample.grid.explicit[0]"),
    (["sample.grid.explicit=[]"], "sample.grid.explicit"),
    (["eval.grid.explicit=[[0.7,0.7]]"], "eval.grid.explicit[0]"),
    (["sample.grid.resolution=0"], "sample.grid.resolution"),
    (["sample.grid.resolution=1", "sample.grid.interior_only=true"], "sample.grid.resolution"),
    (["eval.grid.resolution=0"], "eval.grid.resolution"),
    (["sample.decode.max_new_tokens=0"], "sample.decode.max_new_tokens"),
    (["review.decode.batch_size=0"], "review.decode.batch_size"),
    (["rewrite.decode.temperature=-1"], "rewrite.decode.temperature"),
    (["eval.decode.top_p=0"], "eval.decode.top_p"),
    (["eval.decode.top_p=1.5"], "eval.decode.top_p"),
    (["dpo.train.learning_rate=0"], "dpo.train.learning_rate"),
    (["sft.train.batch_size=0"], "sft.train.batch_size"),
    (["realign.train.learning_rate=-1e-6"], "realign.train.learning_rate"),
    (["dpo.beta=0"], "dpo.beta"),
    (["realign.beta=-0.1"], "realign.beta"),
    (["realign.alpha=-0.1"], "realign.alpha"),
    (["data.source=synthetic", "model.name_or_path=random", "sft.enabled=false"], "sft.enabled"),
])
def test_each_validation_rule_names_its_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        base(*overrides)
    message = str(info.value)
    assert f"'{key}'" in message
    assert "\n" not in message


def test_valid_edge_values_pass():
    """The boundaries the rules allow: alpha 0 (plain DPO), conflict_fraction 0 and 1, temperature 0, top_p 1,
    the reviewer named explicitly, a reference point of the right length, explicit weights summing to 1 within
    float noise (0.1 + 0.2 + 0.7 = 1.0000000000000002)."""
    cfg = base("realign.alpha=0", "data.conflict_fraction=1.0", "eval.decode.temperature=0", "eval.decode.top_p=1",
               "review.reviewer=better", "eval.reference_point=[-1,-1]", "combine.rule=no_worse")
    assert (cfg.realign.alpha, cfg.review.reviewer, cfg.eval.reference_point) == (0.0, "better", [-1.0, -1.0])
    cfg = base("data.conflict_fraction=0", "objectives=[a,b,c]", "sample.grid.explicit=[[0.1,0.2,0.7]]",
               "eval.reference_point=[0,0,0]", "sample.grid.interior_only=true", "sample.grid.resolution=3")
    assert cfg.sample.grid.explicit == [[0.1, 0.2, 0.7]]


def test_validate_catches_values_set_after_loading():
    """validate() is an explicit call, usable on a config changed in code."""
    cfg = base()
    cfg.combine.rule = "whatever"
    with pytest.raises(ConfigError, match=r"'combine\.rule'"):
        validate(cfg)


# --- closed choices: one enum each ---------------------------------------------------------------------------


def choice_keys() -> list[tuple[str, type, str]]:
    """(dotted key, section, field) of every config key with a closed set of values, found in the tree itself."""
    from sipo.config_help import iter_keys

    return [(key, owner, name) for key, owner, name, _ in iter_keys() if field_choices(owner, name) is not None]


def test_the_closed_choices_are_the_enums():
    assert {key: field_choices(owner, name) for key, owner, name in choice_keys()} == {
        "soup_mode": SoupMode, "model.dtype": Dtype, "model.device": Device,
        "model.prompt_template": PromptTemplate, "model.random.tokenizer": RandomTokenizer,
        "data.fill_judge": FillJudge, "combine.rule": CombineRule, "data.on_bad_row": OnBadRow}
    assert Dtype.values() == ("float32", "bfloat16", "float16")
    assert Device.values() == ("auto", "cpu", "cuda")
    assert PromptTemplate.values() == ("chat", "plain", "raw")
    assert RandomTokenizer.values() == ("byte", "word")
    assert FillJudge.values() == ("implicit", "reward_model")
    assert CombineRule.values() == ("not_dominated", "no_worse")
    assert SoupMode.values() == ("delta", "factors")
    # a member is the string users write, wherever it is compared, formatted or hashed
    assert Dtype.bfloat16 == "bfloat16" and str(Dtype.bfloat16) == "bfloat16" and f"{SoupMode.delta}" == "delta"
    assert hash(CombineRule.no_worse) == hash("no_worse")


@pytest.mark.parametrize("key", [k for k, _, _ in choice_keys()])
def test_a_bad_choice_is_one_line_naming_key_value_and_choices(key):
    """Every enum-valued key: the error names the key, the bad value and every allowed value, on one line."""
    owner, name = next((o, n) for k, o, n in choice_keys() if k == key)
    allowed = field_choices(owner, name).values()
    with pytest.raises(ConfigError) as info:
        base(f"{key}=bogus")
    message = str(info.value)
    assert message == f"config key '{key}': must be {', '.join(allowed[:-1])} or {allowed[-1]}, got 'bogus'"
    for value in allowed:  # and every allowed value passes the key's own check, as its member
        assert field_choices(owner, name).check(key, value) == value


@pytest.mark.parametrize("key, value", [("model.dtype", "bfloat16"), ("model.device", "cpu"),
                                        ("model.prompt_template", "raw"), ("model.random.tokenizer", "word"),
                                        ("combine.rule", "no_worse"), ("soup_mode", "factors")])
def test_every_choice_value_loads_as_a_plain_string(key, value):
    cfg = base(f"{key}={value}")
    section, _, name = key.rpartition(".")
    holder = cfg
    for part in filter(None, section.split(".")):
        holder = getattr(holder, part)
    assert getattr(holder, name) == value and type(getattr(holder, name)) is str


def test_an_enum_member_set_in_code_saves_and_hashes_as_its_string(tmp_path):
    """Fields stay typed ``str``: a member assigned in code writes the same ``config.yaml`` and the same stage
    fingerprints as the string loaded from YAML."""
    from sipo.pipeline import fingerprint, plan

    loaded = base("model.dtype=bfloat16", "soup_mode=factors", "combine.rule=no_worse")
    typed = base()
    typed.model.dtype, typed.soup_mode, typed.combine.rule = Dtype.bfloat16, SoupMode.factors, CombineRule.no_worse
    validate(typed)
    assert config_text(typed) == config_text(loaded)
    assert "dtype: bfloat16\n" in config_text(typed) and "Dtype" not in config_text(typed)
    assert all(type(v) is str for v in (to_dict(typed)["model"]["dtype"], to_dict(typed)["soup_mode"]))
    for stage in plan(loaded):
        upstream = {u: "x" for u in stage.upstream}
        assert fingerprint(typed, stage, upstream) == fingerprint(loaded, stage, upstream), stage.id
    save_config(typed, tmp_path / "config.yaml")
    assert to_dict(load_config(tmp_path / "config.yaml")) == to_dict(loaded)


# --- each section validates itself -------------------------------------------------------------------------------


@pytest.mark.parametrize("section, key, message", [
    (TrainSettings(learning_rate=0.0), "dpo.train", "'dpo.train.learning_rate': must be positive"),
    (TrainSettings(warmup_ratio=float("nan")), "realign.train",
     "'realign.train.warmup_ratio': must be a finite number"),
    (DecodeSettings(top_p=1.5), "eval.decode", "'eval.decode.top_p': must be in (0, 1]"),
    (ModelConfig(name_or_path="m", dtype="int8"), "model", "'model.dtype': must be float32, bfloat16 or float16"),
    (ModelConfig(name_or_path="m", random=RandomModelConfig(num_key_value_heads=3)), "model",
     "'model.random.num_key_value_heads': must divide num_attention_heads"),
    (WeightGrid(explicit=[[0.5, 0.4]]), "sample.grid", "'sample.grid.explicit[0]': weights must sum to 1"),
    (RewardModelConfig(models=[RewardModelSpec(name_or_path="rm", sign={"a": 0.0})]), "eval.reward_model",
     "'eval.reward_model.models[0].sign.a': must not be 0"),
])
def test_a_section_validates_itself_naming_the_full_key(section, key, message):
    """A section checks its own fields wherever it sits in the tree, without the rest of the config."""
    with pytest.raises(ConfigError) as info:
        section.validate(key)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_rules_between_sections_belong_to_the_whole_config():
    """A grid alone cannot know the number of objectives: its vectors' length is checked by the whole config."""
    WeightGrid(explicit=[[0.2, 0.3, 0.5]]).validate("sample.grid")
    with pytest.raises(ConfigError, match=r"'sample\.grid\.explicit\[0\]': has 3 weights for 2 objectives"):
        base("sample.grid.explicit=[[0.2,0.3,0.5]]")


def test_sipo_oracle_filter_checks_its_data_source():
    """A method checks the settings it needs (``MethodDef.check``), like a judge."""
    with pytest.raises(ConfigError, match=r"'methods': sipo_oracle_filter needs the exact oracle"):
        base("methods=[sft,sipo_oracle_filter]")


# --- the import graph -------------------------------------------------------------------------------------------


def test_importing_the_config_imports_no_registry():
    """``sipo.config`` sits below every registry (methods, judges, data sources, stages): importing it in a fresh
    interpreter loads no other sipo module than ``sipo.errors``, so no module that imports the config is imported
    back by it (the cycle config -> judges -> ... -> config is gone)."""
    code = "import sys, sipo.config; print(' '.join(sorted(m for m in sys.modules if m.startswith('sipo'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["sipo", "sipo.config", "sipo.errors"]


def test_the_config_module_imports_no_module_that_imports_it():
    """Also the imports inside its functions (read from the source): only modules that do not import the config."""
    import sipo.config

    tree = ast.parse(Path(sipo.config.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | \
        {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    sipo_modules = {m for m in imported if m and m.split(".")[0] == "sipo"}
    assert sipo_modules == {"sipo.errors", "sipo.artifacts"}
    for name in sipo_modules:
        source = Path(importlib.import_module(name).__file__).read_text()
        assert "sipo.config" not in source and "from sipo import config" not in source, name


# --- weight grids ---------------------------------------------------------------------------------------------


def test_weight_grid_two_objectives_interior():
    """resolution 5: k/5 for k = 0..5; interior drops (1, 0) and (0, 1); first objective's weight descending."""
    grid = weight_grid(["correctness", "verbosity"], WeightGrid(resolution=5, interior_only=True))
    assert grid == [
        {"correctness": 0.8, "verbosity": 0.2},
        {"correctness": 0.6, "verbosity": 0.4},
        {"correctness": 0.4, "verbosity": 0.6},
        {"correctness": 0.2, "verbosity": 0.8},
    ]


def test_weight_grid_two_objectives_with_end_points():
    grid = weight_grid(["a", "b"], WeightGrid(resolution=5))
    assert len(grid) == 6
    assert grid[0] == {"a": 1.0, "b": 0.0}
    assert grid[-1] == {"a": 0.0, "b": 1.0}
    assert [w["a"] for w in grid] == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]


def test_weight_grid_three_objectives():
    """Resolution 3: compositions of 3 into 3 non-negative parts, C(5, 2) = 10 vectors; the only interior one is
    (1/3, 1/3, 1/3). Sorted descending: (1, 0, 0), (2/3, 1/3, 0), (2/3, 0, 1/3), (1/3, 2/3, 0), ..."""
    objectives = ["x", "y", "z"]
    grid = weight_grid(objectives, WeightGrid(resolution=3))
    assert len(grid) == 10
    assert len({tuple(w.values()) for w in grid}) == 10
    for w in grid:
        assert list(w) == objectives
        assert math.isclose(sum(w.values()), 1.0, abs_tol=1e-9)
    assert grid[0] == {"x": 1.0, "y": 0.0, "z": 0.0}
    assert [round(v, 6) for v in grid[1].values()] == [0.666667, 0.333333, 0.0]
    assert [round(v, 6) for v in grid[2].values()] == [0.666667, 0.0, 0.333333]
    assert grid[-1] == {"x": 0.0, "y": 0.0, "z": 1.0}
    interior = weight_grid(objectives, WeightGrid(resolution=3, interior_only=True))
    assert len(interior) == 1
    assert all(math.isclose(v, 1 / 3, abs_tol=1e-9) for v in interior[0].values())


def test_explicit_weight_grid_keeps_the_given_order():
    grid = weight_grid(["a", "b"], WeightGrid(explicit=[[0.3, 0.7], [0.9, 0.1]], resolution=1))
    assert grid == [{"a": 0.3, "b": 0.7}, {"a": 0.9, "b": 0.1}]


def test_weights_tag():
    assert weights_tag({"correctness": 0.2, "verbosity": 0.8}) == "correctness0.2-verbosity0.8"
    assert weights_tag({"a": 1.0, "b": 0.0}) == "a1-b0"
    # Different vectors of a grid get different tags (they name folders and candidate ids).
    grid = weight_grid(["x", "y", "z"], WeightGrid(resolution=3))
    assert len({weights_tag(w) for w in grid}) == len(grid)


def test_a_preset_builds_on_its_base(tmp_path):
    """``base:`` merges the preset over the preset it names (sections key by key, lists and strings replaced), and
    drops the base's descriptions of objectives the preset no longer lists."""
    from sipo.config import read_config

    (tmp_path / "b.yaml").write_text("objectives: [x, y]\nobjective_descriptions: {x: ex, y: why}\n"
                                     "methods: [sft, dpo]\ndpo: {beta: 0.3, lora: {r: 2}}\ndata: {path: one.jsonl}\n")
    (tmp_path / "p.yaml").write_text("base: b.yaml\nobjectives: [x, z]\nobjective_descriptions: {z: zed}\n"
                                     "methods: [sft]\ndpo: {lora: {alpha: 3}}\ndata: {path: {x: a.jsonl, z: b.jsonl}}\n")
    cfg = read_config(tmp_path / "p.yaml", ["run_dir=/tmp/unused", "model.name_or_path=random"])
    assert list(cfg.objectives) == ["x", "z"] and dict(cfg.objective_descriptions) == {"x": "ex", "z": "zed"}
    assert list(cfg.methods) == ["sft"] and cfg.dpo.beta == 0.3 and (cfg.dpo.lora.r, cfg.dpo.lora.alpha) == (2, 3)
    assert dict(cfg.data.path) == {"x": "a.jsonl", "z": "b.jsonl"}


def test_a_preset_that_builds_on_itself_is_refused(tmp_path):
    from sipo.config import read_config

    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="builds on itself"):
        read_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        read_config(tmp_path / "missing.yaml")
