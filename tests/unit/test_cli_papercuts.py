"""The command line's small promises: options anywhere, ``--version``, overriding ``objectives`` on a preset,
small hypervolumes that stay visible."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipo.cli import build_parser, main, parse_args
from sipo.configure import load_config
from sipo.errors import ConfigError
from sipo.report.build import format_hypervolume, markdown_table

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.mark.parametrize("argv, overrides", [
    (["run", "cfg.yaml", "--dry-run", "dpo.beta=0.2"], ["dpo.beta=0.2"]),
    (["run", "cfg.yaml", "a=1", "--dry-run", "b=2"], ["a=1", "b=2"]),
    (["run", "--dry-run", "cfg.yaml", "a=1"], ["a=1"]),
    (["run", "cfg.yaml", "--force", "dpo", "a=1", "b=2"], ["a=1", "b=2"]),
])
def test_options_go_anywhere_on_the_line(argv, overrides):
    args = parse_args(build_parser(), argv)
    assert args.config == "cfg.yaml" and args.overrides == overrides
    assert args.dry_run or args.force == ["dpo"]


def test_prompts_after_options_are_prompts():
    args = parse_args(build_parser(), ["generate", "runs/x", "first", "--weights", "0.5,0.5", "second"])
    assert args.prompts == ["first", "second"] and args.weights == "0.5,0.5"


def test_an_unknown_option_is_still_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(build_parser(), ["run", "cfg.yaml", "--dryrun", "a=1"])
    assert info.value.code == 2 and "--dryrun" in capsys.readouterr().err


def test_version(capsys):
    from sipo import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"sipo {__version__}"


def test_dry_run_with_an_override_after_the_option(tmp_path, capsys):
    data = ROOT / "tests" / "fixtures" / "helpsteer_smoke.jsonl"
    assert main(["run", str(SMOKE), "--dry-run", f"run_dir={tmp_path / 'run'}", f"data.path={data}"]) == 0
    assert "config is valid" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_overriding_objectives_drops_the_presets_other_descriptions():
    cfg = load_config(SMOKE, ["objectives=[correctness,helpfulness]"])
    assert cfg.objectives == ["correctness", "helpfulness"]
    assert cfg.objective_descriptions == {"correctness": "every statement in the response is true"}
    cfg = load_config(SMOKE, ["objectives=[a,b]", "objective_descriptions.b=bee"])
    assert cfg.objective_descriptions == {"b": "bee"}
    with pytest.raises(ConfigError, match="objective_descriptions"):  # a typo on the command line is still caught
        load_config(SMOKE, ["objective_descriptions.verbosty=x"])


def test_small_hypervolumes_print_in_scientific_notation():
    assert format_hypervolume(3.2e-06) == "3.200e-06"
    assert format_hypervolume(-4e-5) == "-4.000e-05"
    assert format_hypervolume(0.0) == "0.0000"
    assert format_hypervolume(0.84917) == "0.8492"
    report = {"objectives": ["a", "b"], "methods": {
        "sipo": {"hypervolume": 3.2e-06, "best": {"a": 0.1, "b": 0.2}, "points": [{"n": 4}]}}}
    assert "3.2e-06" in markdown_table(report)


def test_report_log_line_shows_a_small_hypervolume(tmp_path, caplog):
    import logging

    from sipo.artifacts import RunDir
    from sipo.records import ScoreRow, write_jsonl
    from sipo.stages.report import write_report

    cfg = load_config(SMOKE, [f"run_dir={tmp_path}", "eval.reference_point=[0,0]"])
    rows = [ScoreRow(method="mod", weights={"correctness": 1.0, "verbosity": 0.0}, prompt_id="p", response="r",
                     scores={"correctness": 2e-3, "verbosity": 1e-3})]
    write_jsonl(tmp_path / "evaluate" / "scores.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="sipo"):
        write_report(cfg, RunDir(tmp_path))
    assert "hypervolume 2.000e-06" in caplog.text


# Papercuts of issue 24: each gets one clear line.

def test_a_list_key_takes_comma_separated_values_as_the_shell_writes_them():
    cfg = load_config(SMOKE, ["run_dir=unused", "objectives=correctness,verbosity", "methods=sft,mod"])
    assert cfg.objectives == ["correctness", "verbosity"] and cfg.methods == ["sft", "mod"]
    assert load_config(SMOKE, ["run_dir=unused", "methods=sft"]).methods == ["sft"]
    cfg = load_config(SMOKE, ["run_dir=unused", "objectives=[correctness,verbosity]", "eval.reference_point=0,0"])
    assert cfg.eval.reference_point == [0.0, 0.0]


def test_a_misspelled_objective_is_named_with_a_guess():
    base = ["run_dir=unused", "data.source=jsonl", "data.path={helpful: a.jsonl, harmless: b.jsonl}",
            "model.name_or_path=random"]
    with pytest.raises(ConfigError, match=r"^config key 'objectives': 'harmles' has no dataset in data\.path "
                                          r"\(its keys: helpful, harmless\); did you mean 'harmless'\?$"):
        load_config(None, [*base, "objectives=[helpful,harmles]"])
    from sipo.data.helpsteer import check_objectives

    with pytest.raises(ConfigError, match=r"'correctnes' is not a HelpSteer score column .*did you mean "
                                          r"'correctness'\?"):
        check_objectives(["correctnes", "verbosity"])


def test_a_mapping_without_a_space_after_the_colon_says_so():
    with pytest.raises(ConfigError, match=r"'helpful:/x' reads as one key without a value: put a space after the "
                                          r"colon, e\.g\. \{helpful: /x\}"):
        load_config(None, ["run_dir=unused", "data.source=jsonl", "data.path={helpful:/x, harmless: /y}",
                           "objectives=[helpful,harmless]", "model.name_or_path=random"])


def test_a_missing_relative_data_path_names_what_it_was_resolved_against(tmp_path, monkeypatch):
    from sipo.data.readers import check_path
    from sipo.errors import DataError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"data/rows\.jsonl: no such file or folder \(data\.path; a relative path is "
                                        rf"read from the current folder {tmp_path}, not from the preset's folder"):
        check_path("data/rows.jsonl")
    with pytest.raises(DataError, match=r"^/nonexistent/rows\.jsonl: no such file or folder \(data\.path\)$"):
        check_path("/nonexistent/rows.jsonl")


def test_score_rows_carry_the_prompt_text(tmp_path):
    from sipo.records import ScoreRow, write_jsonl
    from sipo.report.build import load_score_rows
    from sipo.stages.evaluate import SplitScoreRow

    row = SplitScoreRow(method="mod", weights={"a": 1.0}, prompt_id="p", response="r", scores={"a": 1.0},
                        prompt="Name a colour.", split="test")
    assert row.score_row().prompt == "Name a colour."
    write_jsonl(tmp_path / "scores.jsonl", [row.score_row(), ScoreRow("sft", {}, "q", "r", {"a": 0.0})])
    first, second = load_score_rows(tmp_path / "scores.jsonl")
    assert first.prompt == "Name a colour." and second.prompt == ""
