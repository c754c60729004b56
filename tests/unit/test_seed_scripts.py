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
