"""The summaries of scripts/demo_seeds.py and scripts/realign_sensitivity.py (pure parts, no runs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def report(mod: float, oracle: float, sipo: float, skill_ok: bool = True) -> dict:
    from sipo.report.validity import validity_conditions

    validation = {"mod": mod, "sipo_oracle_filter": oracle, "sipo": sipo}
    skill = {"corrected_share": 0.5 if skill_ok else 0.0, "wrong_change_share": 0.1}
    share = (sipo - mod) / (oracle - mod) if oracle > mod else None
    return {"reference_point": [0.0, 0.0],
            "methods": {m: {"hypervolume": v} for m, v in validation.items()},
            "validation": {"prompts": 9, "methods": {m: {"hypervolume": v} for m, v in validation.items()}},
            "validity": validity_conditions(validation, [0.0, 0.0], skill),
            "oracle_gain_share": {"all": {"value": share}, "validation": {"value": share}}}


def test_demo_seeds_states_the_validity_conditions_and_the_share():
    demo_seeds = load_script("demo_seeds")
    reports = {10: report(0.6, 0.7, 0.65), 11: report(0.62, 0.71, 0.7, skill_ok=False), 12: report(0.6, 0.72, 0.6)}
    diags = {s: {"hypervolume": {m: e["hypervolume"] for m, e in r["methods"].items()}} for s, r in reports.items()}
    summary, markdown = demo_seeds.summarise(diags, {s: 1.0 for s in reports}, {s: [] for s in reports}, reports)
    validity = summary["validity"]
    assert validity["per_seed"][11]["review_skill"]["holds"] is False
    assert validity["oracle_bound_over_seeds"]["holds"] is True and validity["oracle_bound_over_seeds"]["n"] == 3
    assert validity["oracle_gain_share"]["all"]["mean"] == pytest.approx((0.5 + 8 / 9 + 0) / 3)
    assert markdown.index("## Validity conditions") < markdown.index("Hypervolume above")
    assert "seed 11: No review skill" in markdown and "share of the oracle's gain" in markdown
    # the existing outputs stay
    assert set(summary) >= {"seeds", "hypervolume", "paired_differences", "diagnostics", "seconds", "environments"}


def test_demo_seeds_without_reports_keeps_its_old_summary():
    demo_seeds = load_script("demo_seeds")
    diags = {10: {"hypervolume": {"mod": 0.5, "sipo": 0.4}}, 11: {"hypervolume": {"mod": 0.6, "sipo": 0.5}}}
    summary, markdown = demo_seeds.summarise(diags, {10: 1.0, 11: 1.0}, {10: [], 11: []})
    assert "validity" not in summary and "Validity" not in markdown


def test_demo_seeds_lists_each_seeds_review_probe_and_funnel():
    demo_seeds = load_script("demo_seeds")
    reports = {60: report(0.6, 0.7, 0.65), 61: report(0.6, 0.7, 0.65)}
    reports[60]["review_probe"] = {
        "in_distribution": {"reviews": 32, "wrong_facts": 20, "corrected_share": 0.5, "changes": 12,
                            "wrong_change_share": 0.25, "missing": 10, "added_share": 0.4},
        "transfer": {"reviews": 32, "wrong_facts": 30, "corrected_share": 0.0, "changes": 3,
                     "wrong_change_share": 1.0, "missing": 8, "added_share": 0.625}}
    reports[61]["pipeline"] = {"funnel": [{"round": 1, "conflicting_prompts": 24, "candidates": 96, "rewrites": 96,
                                           "rewrites_kept": 51, "filter_survivors": 7, "realign_pairs": 4,
                                           "optimizer_steps": {}}]}
    diags = {s: {"hypervolume": {m: e["hypervolume"] for m, e in r["methods"].items()}} for s, r in reports.items()}
    _, markdown = demo_seeds.summarise(diags, {60: 1.0, 61: 1.0}, {60: [], 61: []}, reports, title="World")
    assert markdown.startswith("# World over seeds")
    assert "| 60 | transfer | 32 | 0.000 of 30 | 1.000 of 3 | 0.625 of 8 |" in markdown
    assert "| 60 | in-distribution | 32 | 0.500 of 20 |" in markdown
    assert "| 61 | 1 | 24 | 96 | 51 of 96 | 7 | 4 |" in markdown
    assert "| 61 | transfer" not in markdown and "| 60 | 1 |" not in markdown


def test_realign_sensitivity_expects_only_realignment_and_what_follows_to_rerun():
    sens = load_script("realign_sensitivity")
    for stage in ("r1/realign", "sipo_oracle_filter", "nll_control", "sipo_no_filter", "evaluate", "report",
                  "r2/sample", "r2/realign"):
        assert sens.may_rerun(stage), stage
    for stage in ("prepare", "sft", "dpo", "r1/sample", "r1/review", "r1/rewrite", "r1/combine", "r1/filter",
                  "dpo_lw", "modpo"):
        assert not sens.may_rerun(stage), stage
    base = {"dpo": {"fingerprint": "a", "finished_at": "t"}, "r1/realign": {"fingerprint": "b", "finished_at": "t"}}
    copy = {"dpo": {"fingerprint": "a", "finished_at": "t"}, "r1/realign": {"fingerprint": "c", "finished_at": "u"}}
    assert sens.upstream_reruns(base, copy) == []
    assert sens.upstream_reruns(base, {**copy, "dpo": {"fingerprint": "a", "finished_at": "later"}}) == ["dpo"]
    assert sens.upstream_reruns(base, {"r1/realign": copy["r1/realign"]}) == ["dpo"]


def test_realign_sensitivity_reads_and_prints_only_validation_numbers(tmp_path):
    import json

    sens = load_script("realign_sensitivity")
    run = tmp_path / "rate0.01"
    (run / "report").mkdir(parents=True)
    (run / "report" / "report.json").write_text(json.dumps({
        "methods": {m: {"hypervolume": 0.999} for m in sens.METHODS},
        "test_sets": {"transfer": {"methods": {m: {"hypervolume": 0.998} for m in sens.METHODS}}},
        "validation": {"prompts": 4, "methods": {"mod": {"hypervolume": 0.5}, "sipo": {"hypervolume": 0.4},
                                                 "sipo_oracle_filter": {"hypervolume": 0.625}, "sft": {"hypervolume": 0.1}}}}))
    hvs = sens.validation_hypervolumes(run)
    assert hvs == {"mod": 0.5, "sipo": 0.4, "sipo_oracle_filter": 0.625}
    assert sens.validation_hypervolumes(tmp_path / "missing") is None
    text = sens.table({10: {"rate0.01": hvs, "rate1": None}}, {0.01: 2e-5, 1.0: 2e-3}, 2e-3, 2e-3)
    assert "0.999" not in text and "0.998" not in text
    assert "| 10 | 0.01 | 2e-05 | 0.5000 | – | 0.4000 | 0.6250 | – | +0.1250 |" in text  # no dpo_soups here
    assert "| 10 | 1 | 0.002 | – | – | – | – | – | – |" in text
    assert sens.rate_name(0.001) == "rate0.001"


def test_realign_sensitivity_hides_the_runs_test_hypervolumes_from_its_console():
    sens = load_script("realign_sensitivity")
    line = "23:30:33 report: sipo_oracle_filter hypervolume 0.8572\n"
    hidden = sens.without_test_numbers(line)
    assert "0.8572" not in hidden and hidden.startswith("23:30:33 report: ") and hidden.endswith("\n")
    for kept in ("23:30:33 report       done in 1.1s: methods=5, health_warnings=0\n",
                 "23:30:36 report: wrote /runs/x/report (5 methods, 20 points, 1440 rows)\n",
                 "23:22:40 prepare: 720 pairs, 96 conflicting prompts\n"):
        assert sens.without_test_numbers(kept) == kept


def test_realign_sensitivity_means_over_seeds():
    sens = load_script("realign_sensitivity")
    hvs = {10: {"rate1": {"mod": 0.5, "sipo_oracle_filter": 0.6}}, 11: {"rate1": {"mod": 0.7, "sipo_oracle_filter": 0.6}}}
    text = sens.table(hvs, {1.0: 2e-3}, 2e-3, 2e-3)
    row = [line for line in text.splitlines() if line.startswith("| 1 | 0.6000")][0]
    # columns mod, dpo_soups, sipo, sipo_oracle_filter, nll_control, oracle − mod (t(0.975, 1) = 12.706)
    assert row == ("| 1 | 0.6000 [-0.6706, 1.8706] | – | – | 0.6000 [0.6000, 0.6000] | – | "
                   "0.0000 [-1.2706, 1.2706] |")
