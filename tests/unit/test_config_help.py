"""``sipo config``: generated from the config tree, so every key is listed, with a description, and none else."""

from __future__ import annotations

from pathlib import Path

from sipo.cli import main
from sipo.config import to_dict
from sipo.config_help import config_lines, first_sentence, undocumented_keys
from sipo.configure import load_config

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in tree.items():
        if isinstance(value, dict) and name not in ("objective_descriptions", "response_columns", "heads", "sign") \
                and not (prefix + name == "data.path"):
            keys |= leaf_keys(value, prefix + name + ".")
        else:
            keys.add(prefix + name)
    return keys


def test_every_config_key_has_a_description():
    assert undocumented_keys() == []


def test_the_listing_has_exactly_the_config_keys():
    cfg = load_config(SMOKE)
    lines = [line for line in config_lines(cfg) if not line.startswith(("#", " "))]
    listed = {line.split(":", 1)[0] for line in lines}
    assert listed == leaf_keys(to_dict(cfg))
    assert all("  # " in line and line.split("  # ", 1)[1].strip() for line in lines)


def test_preset_values_and_defaults():
    lines = {line.split(":", 1)[0]: line for line in config_lines(load_config(SMOKE, ["dpo.beta=0.3"]))}
    assert lines["dpo.beta"].startswith("dpo.beta: 0.3  # ") and lines["dpo.beta"].endswith("[default: 0.1]")
    assert "[default" not in lines["seed"]
    assert lines["model.max_response_tokens"].endswith("[default: 256]")  # the preset sets 48
    defaults = {line.split(":", 1)[0]: line for line in config_lines()}
    assert "???" in defaults["run_dir"] and "[default" not in defaults["dpo.beta"]


def test_first_sentence():
    assert first_sentence("Objective names, e.g. ``[a, b]``; they must be columns. More.") == \
        "Objective names, e.g. `[a, b]`; they must be columns."
    assert first_sentence("Where models\n    are cached (e.g. the GGUF).") == "Where models are cached (e.g. the GGUF)."


def test_config_command_with_an_objectives_override(capsys):
    assert main(["config", str(SMOKE), "objectives=[correctness,harmlessness]"]) == 0
    out = capsys.readouterr().out
    assert 'objectives: ["correctness", "harmlessness"]' in out
    assert 'objective_descriptions: {"correctness": "every statement in the response is true"}' in out
    assert main(["config"]) == 0 and "eval.reference_point: null" in capsys.readouterr().out


def test_closed_choices_and_registered_names_are_listed_from_their_single_definition():
    """``sipo config`` lists a key's allowed values from its enum or registry, so they cannot drift from what
    validation accepts; a method registered at run time is listed too."""
    from sipo.config import CombineRule, Dtype
    from sipo.methods import METHODS, MethodDef

    lines = {line.split(":", 1)[0]: line for line in config_lines()}
    assert lines["model.dtype"].endswith(f"[choices: {', '.join(Dtype.values())}]")
    assert lines["combine.rule"].endswith("[choices: not_dominated, no_worse]") and len(CombineRule) == 2
    assert "[choices: implicit, reward_model]" in lines["data.fill_judge"]
    assert "[choices: implicit, oracle, reward_model, length" in lines["eval.judge"]
    assert "[choices: helpsteer, pku_saferlhf, jsonl, synthetic" in lines["data.source"]
    assert "[choices" not in lines["dpo.beta"] and "[choices" not in lines["eval.reward_model.prompt_format"]
    METHODS.register(MethodDef("echo_method", "a test method", lambda m: []))
    try:
        assert "echo_method]" in {line.split(":", 1)[0]: line for line in config_lines()}["methods"]
    finally:
        METHODS.unregister("echo_method")
    preset = {line.split(":", 1)[0]: line for line in config_lines(load_config(SMOKE, ["soup_mode=factors"]))}
    assert preset["soup_mode"] == ('soup_mode: "factors"  # ``delta`` (exact interpolation of LoRA updates) or '
                                   '``factors`` (A and B interpolated separately, as in the reference code). '
                                   '[choices: delta, factors] [default: "delta"]'.replace("``", "`"))
