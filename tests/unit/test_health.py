"""Pipeline health: the funnel of each round, the warnings when SIPO did nothing, and where they are shown."""

from __future__ import annotations

from sipo.records import ScoreRow
from sipo.report import make_report, report_markdown
from sipo.report.health import funnel_markdown, health_warnings, round_funnel, same_points

OBJ = ["helpful", "harmless"]


def manifest_counts(selected: int, steps: int, prompts: int = 4) -> dict:
    realign = {"selected": selected, "pairs": 2 * selected}
    if selected:
        realign.update({f"metrics_{o}": {"steps": steps, "final_loss": 0.5} for o in OBJ})
    return {
        "r1/sample": {"prompts": prompts, "weight_vectors": 4, "candidates": 4 * prompts},
        "r1/combine": {"candidates": 4 * prompts, "rewrites": 4 * prompts, "replaced": 5},
        "r1/filter": {"prompts": prompts, "selected": selected, "candidates": 4 * prompts},
        "r1/realign": realign,
    }


def test_round_funnel_reads_the_manifests():
    (entry,) = round_funnel(manifest_counts(selected=3, steps=2), OBJ, rounds=1)
    assert entry == {"round": 1, "conflicting_prompts": 4, "candidates": 16, "rewrites": 16, "rewrites_kept": 5,
                     "filter_survivors": 3, "realign_pairs": 6, "optimizer_steps": {"helpful": 2, "harmless": 2}}
    missing = round_funnel({}, OBJ, rounds=2)
    assert [e["round"] for e in missing] == [1, 2] and missing[1]["filter_survivors"] == 0


def points(method: str, shift: float) -> list[ScoreRow]:
    return [ScoreRow(method=method, weights={"helpful": w, "harmless": 1 - w}, prompt_id=f"p{k}", response="r",
                     scores={"helpful": w + shift + k, "harmless": 1 - w + k})
            for w in (0.0, 0.5, 1.0) for k in range(2)]


def test_a_healthy_run_has_no_warning():
    report = make_report(points("mod", 0.0) + points("sipo", 0.25), OBJ, judge="implicit")
    funnel = round_funnel(manifest_counts(selected=3, steps=2), OBJ, rounds=1)
    assert health_warnings(funnel, report["methods"]) == []


def test_each_sign_of_doing_nothing_warns():
    same = make_report(points("mod", 0.0) + points("sipo", 0.0), OBJ, judge="implicit")["methods"]
    assert same_points(same["sipo"], same["mod"])
    nothing = health_warnings(round_funnel(manifest_counts(selected=0, steps=0), OBJ, 1), same)
    assert len(nothing) == 3
    assert nothing[0].startswith("round 1: the filter kept no response (0 of 4 conflicting prompts")
    assert nothing[1].startswith("round 1: re-alignment trained nothing (0 pairs")
    assert nothing[2].startswith("sipo's points equal mod's")
    no_steps = health_warnings(round_funnel(manifest_counts(selected=2, steps=0), OBJ, 1))
    assert no_steps == ["round 1: re-alignment trained nothing (4 pairs, optimizer steps {'helpful': 0, "
                        "'harmless': 0}): the adapters are carried over unchanged"]
    no_prompts = health_warnings(round_funnel(manifest_counts(selected=0, steps=0, prompts=0), OBJ, 1))
    assert no_prompts[0].startswith("round 1: no conflicting prompt to self-improve on")


def test_report_md_puts_the_warnings_on_top_and_the_funnel_in_a_table():
    report = make_report(points("mod", 0.0) + points("sipo", 0.0), OBJ, judge="implicit")
    funnel = round_funnel(manifest_counts(selected=0, steps=0), OBJ, rounds=1)
    report["pipeline"] = {"funnel": funnel, "warnings": health_warnings(funnel, report["methods"])}
    text = report_markdown(report, figure=None)
    head = text.split("- Judge:")[0]
    assert "Warning: SIPO's self-improvement did nothing useful" in head
    assert "the filter kept no response" in head
    assert "| 1 | 4 | 16 | 5 of 16 | 0 | 0 | helpful 0, harmless 0 |" in text
    assert funnel_markdown(funnel) in text
    report["pipeline"]["warnings"] = []
    assert "Warning" not in report_markdown(report, figure=None)


def test_identical_fronts_that_differ_by_float_noise_count_as_equal():
    """Implicit-reward means of about 1e-3 that differ by 2e-8 (the same front decoded in other batches) are the
    same points; a real difference of 1 % of the spread is not."""
    base = make_report(points("mod", 0.0), OBJ, judge="implicit")["methods"]["mod"]

    def scaled(entry, factor, shift=0.0):
        return {"points": [{**p, "scores": {o: v * factor + shift for o, v in p["scores"].items()}}
                           for p in entry["points"]]}

    mod = scaled(base, 1e-3)
    assert same_points(scaled(base, 1e-3, 2e-8), mod)
    assert not same_points(scaled(base, 1e-3, 2e-5), mod)
    assert not same_points(scaled(base, 1.0, 0.01), scaled(base, 1.0))


def test_the_summary_table_bolds_both_of_two_equal_values():
    from sipo.report.build import markdown_table

    rows = points("mod", 0.0) + [ScoreRow(method="sipo", weights=r.weights, prompt_id=r.prompt_id, response="r",
                                          scores={o: v + 2e-9 for o, v in r.scores.items()})
                                 for r in points("mod", 0.0)]
    table = markdown_table(make_report(rows, OBJ, judge="implicit"))
    sipo_row = next(line for line in table.splitlines() if line.startswith("| sipo"))
    mod_row = next(line for line in table.splitlines() if line.startswith("| mod"))
    assert sipo_row.count("**") == mod_row.count("**") == 6  # hypervolume and both best scores, in both rows


def test_the_diagnosis_names_the_bottleneck_with_its_numbers_and_settings():
    from sipo.report.health import diagnosis

    counts = manifest_counts(selected=0, steps=0)
    counts["prepare"] = {"conflicting_pairs": 5, "train_conflict_prompts": 4, "train_conflict_prompts_available": 5,
                         "conflict_ties": {"max_ties": 0, "pairs_lost": 3, "prompts_lost": 1}}
    counts["r1/filter"].update({"surviving_candidates": 0, "judges": 3,
                                "survival_per_judge": {"r0_helpful": 9, "r0_harmless": 0, "soup": 2}})
    settings = {"data.max_conflict_prompts": 4, "filter.soups": True, "realign.train.batch_size": 2,
                "realign.train.gradient_accumulation_steps": 1, "realign.train.epochs": 1.0}
    funnel = round_funnel(counts, OBJ, 1)
    text = "\n".join(diagnosis(funnel, counts, settings))
    assert "4 sampled of 4 chosen from the 5 train prompts with a conflicting pair" in text
    assert "data.max_conflict_prompts=4" in text and "raise data.max_conflict_prompts (null takes all 5)" in text
    assert "3 more lost to data.conflict_max_ties=0" in text
    assert "16 (4 prompts × 4 weight vectors of sample.grid)" in text
    assert "r0_helpful 9, r0_harmless 0, soup 2 (the strictest: r0_harmless)" in text
    assert "filter.soups=false" in text
    assert "**Re-alignment**: 0 pairs" in text
    healthy = round_funnel(manifest_counts(selected=3, steps=2), OBJ, 1)
    assert diagnosis(healthy, manifest_counts(selected=3, steps=2), settings) == []
    assert diagnosis(healthy, manifest_counts(selected=3, steps=2), settings, ["sipo's points equal mod's"])


def test_report_md_shows_what_to_change():
    report = make_report(points("mod", 0.0) + points("sipo", 0.0), OBJ, judge="implicit")
    funnel = round_funnel(manifest_counts(selected=0, steps=0), OBJ, rounds=1)
    report["pipeline"] = {"funnel": funnel, "warnings": health_warnings(funnel, report["methods"]),
                          "diagnosis": ["Round 1:", "- **Filter**: 0 of 4 prompts kept"]}
    text = report_markdown(report, figure=None)
    assert "## What to change" in text and "- **Filter**: 0 of 4 prompts kept" in text
    assert "*What to change*" in text.split("- Judge:")[0]


def test_the_dpo_mixture_warns_when_it_uses_under_half_of_the_usable_pairs():
    from sipo.report.health import mixture_warnings

    counts = {"train_pairs": {"a": 8, "b": 20},
              "train_available": {"a": {"conflicting": 5, "non_conflicting": 19},
                                  "b": {"conflicting": 5, "non_conflicting": 19}}}
    (warning,) = mixture_warnings(counts, 0.6)
    assert warning.startswith("dpo: objective a trains on 8 of its 24 usable pairs (5 conflicting)")
    assert "data.conflict_fraction=0.6" in warning and "(0.21)" in warning
    assert mixture_warnings(counts, 0.6, max_train_pairs=8) == []  # the user's own cap


def test_the_report_stage_reads_the_diagnosis_input_from_the_manifests(tmp_path):
    from pathlib import Path

    from sipo.artifacts import RunDir
    from sipo.configure import load_config
    from sipo.stages.report import data_counts, diagnosis_input

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "smoke.yaml", [f"run_dir={tmp_path / 'run'}", "data.max_conflict_prompts=4"])
    run_dir = RunDir(tmp_path / "run")
    run_dir.write_manifest("prepare", {"counts": {"train_conflict_prompts_available": 5, "train_pairs": {"a": 8},
                                                  "train_available": {"a": {"conflicting": 5, "non_conflicting": 19}}}})
    run_dir.write_manifest("r1/filter", {"counts": {"survival_per_judge": {"r0_a": 1}}})
    counts, settings = diagnosis_input(cfg, run_dir)
    assert counts["prepare"]["train_conflict_prompts_available"] == 5
    assert counts["r1/filter"]["survival_per_judge"] == {"r0_a": 1}
    assert settings["data.max_conflict_prompts"] == 4 and "filter.soups" in settings
    assert data_counts(run_dir, cfg)["mixture_warnings"][0].startswith("dpo: objective a trains on 8 of its 24")
