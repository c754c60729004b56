"""Every preset in configs/ validates with ``sipo run --dry-run`` (nothing is loaded or downloaded), and the paper
presets hold the paper's settings.

The paper presets read a local copy of the data (``data.path: data/helpsteer``, which users download once, see
docs/scale.md); here ``data.path`` points at the test fixture of the same source, since the dry run checks that the
data exists. Their models and reward models are hub ids, which the dry run accepts without contacting the Hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sipo.cli import main
from sipo.config import weight_grid
from sipo.configure import load_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
FIXTURES = {"helpsteer": "tests/fixtures/helpsteer_sample.jsonl",
            "pku_saferlhf": "tests/fixtures/pku_saferlhf_sample.jsonl"}


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # presets name their data relative to the repository root
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _data_override(preset: Path) -> list[str]:
    data = (yaml.safe_load(preset.read_text()) or {}).get("data", {})
    path = data.get("path")
    if isinstance(path, str) and not (REPO / path).exists() and data.get("source") in FIXTURES:
        return [f"data.path={FIXTURES[data['source']]}"]
    return []


def test_the_presets_of_the_design_exist():
    names = {p.stem for p in PRESETS}
    assert {"demo", "smoke", "smollm2-helpsteer", "helpsteer", "beavertails"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_data_in_the_repository_exists(preset):
    """A preset that reads data shipped in the repository names a file that is there (the dry run below swaps a
    missing path for a fixture, which would hide a wrong one)."""
    data = (yaml.safe_load(preset.read_text()) or {}).get("data", {})
    paths = [data.get("path"), data.get("test_path")]
    if isinstance(paths[0], dict):  # one dataset per objective: objective -> path or {path, ...}
        paths = [p.get("path") if isinstance(p, dict) else p for p in paths[0].values()] + paths[1:]
    for path in paths:
        if isinstance(path, str) and path.startswith("tests/"):
            assert (REPO / path).is_file(), f"{preset.name}: data path {path} does not exist"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_with_dry_run(preset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["run", str(preset), f"run_dir={run_dir}", *_data_override(preset), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("config is valid; stages: prepare ")
    assert "report" in out.split()
    assert not run_dir.exists()  # a dry run writes nothing


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_header_shows_its_command(preset):
    """Every preset starts with a comment showing the command that runs it."""
    lines = preset.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert any(f"configs/{preset.name}" in line for line in header), f"{preset.name}: no command in the header"


def test_paper_preset_without_its_data_names_data_path(tmp_path, capsys):
    code = main(["run", "configs/helpsteer.yaml", f"run_dir={tmp_path / 'run'}",
                 f"data.path={tmp_path / 'missing'}", "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sipo: error:") and "data.path" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["helpsteer", "beavertails"])
def test_paper_presets_hold_the_paper_settings(name):
    """Li, Zhang et al. 2025 and the official scripts: Alpaca-7B, plain template, LoRA r 64 / alpha 1 / dropout 0 on
    q,k,v,o, lr 5e-4, beta 0.1, 3 epochs, 512 tokens, sampling at w = 0.2..0.8, evaluation with the end points,
    re-alignment alpha 0.1 at lr 5e-6, conflict share 0.6, bfloat16."""
    cfg = load_config(REPO / "configs" / f"{name}.yaml", ["run_dir=/tmp/unused", *_data_override(
        REPO / "configs" / f"{name}.yaml")])
    assert cfg.model.name_or_path == "PKU-Alignment/alpaca-7b-reproduced"
    assert cfg.model.prompt_template == "plain" and cfg.model.dtype == "bfloat16"
    assert cfg.model.max_prompt_tokens + cfg.model.max_response_tokens == 512
    lora = cfg.dpo.lora
    assert (lora.r, lora.alpha, lora.dropout) == (64, 1, 0.0)
    assert sorted(lora.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (cfg.dpo.beta, cfg.dpo.train.learning_rate, cfg.dpo.train.epochs) == (0.1, 5e-4, 3)
    assert (cfg.realign.alpha, cfg.realign.train.learning_rate) == (0.1, 5e-6)
    assert cfg.data.conflict_fraction == 0.6
    first = cfg.objectives[0]
    assert sorted(w[first] for w in weight_grid(cfg.objectives, cfg.sample.grid)) == [0.2, 0.4, 0.6, 0.8]
    assert sorted(w[first] for w in weight_grid(cfg.objectives, cfg.eval.grid)) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert set(cfg.methods) == {"sft", "dpo", "dpo_soups", "mod", "dpo_lw", "modpo", "sipo"}
    assert cfg.eval.judge == "reward_model"


def test_helpsteer_preset_scores_with_the_dpa_heads():
    """RLHFlow DPA heads: 1 = helpsteer-correctness, 4 = helpsteer-verbosity; the paper's (s - 10) / 20."""
    cfg = load_config(REPO / "configs/helpsteer.yaml", ["run_dir=/tmp/unused", f"data.path={FIXTURES['helpsteer']}"])
    assert cfg.objectives == ["correctness", "verbosity"] and cfg.data.source == "helpsteer"
    rm = cfg.eval.reward_model
    assert (rm.prompt_format, rm.shift, rm.scale) == ("dpa", 10.0, 20.0)
    assert [(m.name_or_path, m.heads) for m in rm.models] == [
        ("RLHFlow/RewardModel-Mistral-7B-for-DPA-v1", {"correctness": 1, "verbosity": 4})]


def test_beavertails_preset_scores_better_by_reward_and_safer_by_minus_cost():
    """The pku_saferlhf source's objectives are its label columns better / safer; safer = -cost."""
    cfg = load_config(REPO / "configs/beavertails.yaml",
                      ["run_dir=/tmp/unused", f"data.path={FIXTURES['pku_saferlhf']}"])
    assert cfg.objectives == ["better", "safer"] and cfg.data.source == "pku_saferlhf"
    rm = cfg.eval.reward_model
    assert rm.prompt_format == "beaver" and (rm.shift, rm.scale) == (0.0, 1.0)
    models = {m.name_or_path: m for m in rm.models}
    assert models["PKU-Alignment/beaver-7b-v1.0-reward"].heads == {"better": 0}
    cost = models["PKU-Alignment/beaver-7b-v1.0-cost"]
    assert cost.heads == {"safer": 0} and cost.sign == {"safer": -1.0}


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((REPO / "configs" / "accelerate").glob("*.yaml")):
        assert path.read_text().startswith("#")
        kinds[path.stem] = str(load_config_from_file(str(path)).distributed_type).rsplit(".", 1)[-1]
    assert kinds == {"ddp_cpu": "MULTI_GPU", "ddp": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED",
                     "deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP"}
