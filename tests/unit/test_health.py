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
