"""The synthetic benchmark's validity conditions and the oracle-gain share (sipo.report.validity), and how the
report states them (report.json ``validation``, ``oracle_gain_share``, ``validity``; report.md's top lines)."""

from __future__ import annotations

import pytest

from sipo.records import ScoreRow
from sipo.report import make_report
from sipo.report.build import report_markdown
from sipo.report.validity import (
    HEADROOM_LIMIT,
    NO_ORACLE_GAIN,
    REVIEW_CORRECTED_MIN,
    REVIEW_WRONG_CHANGE_MAX,
    failure_lines,
    headroom,
    ideal_hypervolume,
    oracle_bound,
    oracle_gain_share,
    review_skill_condition,
    validity_conditions,
)

GOOD_SKILL = {"corrected_share": 0.5, "wrong_change_share": 0.1, "wrong_facts": 10, "changes": 6}


def test_thresholds_are_the_issue_s():
    assert (HEADROOM_LIMIT, REVIEW_CORRECTED_MIN, REVIEW_WRONG_CHANGE_MAX) == (0.85, 0.30, 0.30)


def test_ideal_hypervolume():
    assert ideal_hypervolume([0.0, 0.0]) == 1.0
    assert ideal_hypervolume([0.5, 0.0, 0.5]) == pytest.approx(0.25)
    assert ideal_hypervolume([1.0, 0.0]) == 0.0 and ideal_hypervolume([2.0, 0.0]) == 0.0


def test_oracle_gain_share():
    share = oracle_gain_share({"sipo": 0.6, "mod": 0.5, "sipo_oracle_filter": 0.9, "dpo": 0.1})
    assert share["value"] == pytest.approx(0.25) and share["reason"] is None
    assert share["oracle_gain"] == pytest.approx(0.4)
    assert oracle_gain_share({"sipo": 0.4, "mod": 0.5, "sipo_oracle_filter": 0.7})["value"] == pytest.approx(-0.5)


@pytest.mark.parametrize("oracle", [0.5, 0.4])
def test_oracle_gain_share_is_null_when_the_oracle_does_not_beat_mod(oracle):
    share = oracle_gain_share({"sipo": 0.6, "mod": 0.5, "sipo_oracle_filter": oracle})
    assert share["value"] is None and share["reason"] == NO_ORACLE_GAIN


@pytest.mark.parametrize("missing", ["sipo", "mod", "sipo_oracle_filter"])
def test_oracle_gain_share_needs_all_three_methods(missing):
    hvs = {"sipo": 0.6, "mod": 0.5, "sipo_oracle_filter": 0.9}
    del hvs[missing]
    assert oracle_gain_share(hvs) is None


def test_headroom_counts_only_the_baselines_that_ran():
    # sipo_oracle_filter and sipo are above the limit, but they are no baselines
    cond = headroom({"mod": 0.80, "dpo_soups": 0.7, "sipo": 0.99, "sipo_oracle_filter": 0.99, "sft": 0.95},
                    [0.0, 0.0])
    assert cond["holds"] is True and cond["value"] == pytest.approx(0.80) and cond["best_baseline"] == "mod"
    assert cond["threshold"] == HEADROOM_LIMIT and cond["reason"] is None
    cond = headroom({"mod": 0.80, "modpo": 0.94}, [0.0, 0.0])
    assert cond["holds"] is False and cond["best_baseline"] == "modpo"
    assert cond["reason"] == ("No headroom: MODPO reaches 0.94 of the ideal on validation (limit 0.85), so a method "
                              "cannot be seen to beat it.")
    assert headroom({"mod": 0.85}, [0.0, 0.0])["holds"] is True  # at most the limit
    # relative to the ideal above the reference point: 0.2 / (0.5 * 0.5)
    assert headroom({"dpo": 0.2}, [0.5, 0.5])["value"] == pytest.approx(0.8)


def test_headroom_without_baselines_or_validation_is_not_checked():
    assert headroom({"sipo": 0.5}, [0.0, 0.0])["holds"] is None
    cond = headroom(None, [0.0, 0.0])
    assert cond["holds"] is None and "validation" in cond["reason"]


def test_oracle_bound():
    cond = oracle_bound({"mod": 0.5, "sipo_oracle_filter": 0.6})
    assert cond["holds"] is True and cond["value"] == pytest.approx(0.1)
    for oracle in (0.5, 0.45):
        cond = oracle_bound({"mod": 0.5, "sipo_oracle_filter": oracle})
        assert cond["holds"] is False and cond["reason"].startswith("No oracle bound:")
    cond = oracle_bound({"mod": 0.5})
    assert cond["holds"] is None and cond["reason"] == "sipo_oracle_filter did not run"
    assert oracle_bound(None)["holds"] is None


def test_review_skill_condition():
    assert review_skill_condition(GOOD_SKILL)["holds"] is True
    at_limits = {"corrected_share": 0.30, "wrong_change_share": 0.30}
    assert review_skill_condition(at_limits)["holds"] is True
    cond = review_skill_condition({"corrected_share": 0.018, "wrong_change_share": 0.98})
    assert cond["holds"] is False and cond["value"] == {"corrected_share": 0.018, "wrong_change_share": 0.98}
    assert cond["reason"].startswith("No review skill: round-1 reviews correct 2% of the wrong facts")
    assert review_skill_condition({"corrected_share": 0.9, "wrong_change_share": 0.31})["holds"] is False
    assert review_skill_condition({"corrected_share": 0.29, "wrong_change_share": 0.0})["holds"] is False
    assert review_skill_condition({"corrected_share": 0.0, "wrong_change_share": None})["holds"] is False
    assert review_skill_condition({"corrected_share": None, "wrong_change_share": None})["holds"] is None
    assert review_skill_condition(None)["holds"] is None


def test_failure_lines_name_each_failed_or_unchecked_condition():
    validity = validity_conditions({"mod": 0.94, "sipo_oracle_filter": 0.90}, [0.0, 0.0], None)
    assert {k: v["holds"] for k, v in validity.items()} == {"headroom": False, "oracle_bound": False,
                                                             "review_skill": None}
    for condition in validity.values():
        assert set(condition) >= {"value", "threshold", "holds", "reason"}
    lines = failure_lines(validity)
    assert len(lines) == 3
    assert lines[0].startswith("No headroom: MOD reaches 0.94") and lines[1].startswith("No oracle bound")
    assert lines[2] == "Review skill not checked: no round-1 reviews."
    assert failure_lines(validity_conditions({"mod": 0.5, "sipo_oracle_filter": 0.6}, [0, 0], GOOD_SKILL)) == []


# --- in the report ----------------------------------------------------------------------------------------------

OBJ = ["c", "v"]
POINTS = {"mod": (0.5, 0.5), "sipo": (0.6, 0.6), "sipo_oracle_filter": (0.8, 0.8), "dpo": (0.3, 0.3)}


def rows(points, prompts=("p1", "p2")):
    return [ScoreRow(method=m, weights={"c": 0.5, "v": 0.5}, prompt_id=p, response="r", scores=dict(zip(OBJ, s)))
            for m, s in points.items() for p in prompts]


def test_report_has_the_validation_front_the_share_and_the_validity_conditions():
    validation = {**POINTS, "mod": (0.95, 0.95), "sipo_oracle_filter": (0.9, 0.9)}
    report = make_report(rows(POINTS), OBJ, judge="oracle", reference_point=[0.0, 0.0],
                         test_sets={"in_distribution": ["p1"], "transfer": ["p2"]},
                         validation_rows=rows(validation, ("v1", "v2", "v3")), check_validity=True,
                         review_skill=GOOD_SKILL)
    assert report["validation"]["prompts"] == 3
    assert report["validation"]["methods"]["mod"]["hypervolume"] == pytest.approx(0.95 ** 2)
    shares = report["oracle_gain_share"]
    assert set(shares) == {"all", "in_distribution", "transfer", "validation"}
    assert shares["all"]["value"] == pytest.approx((0.36 - 0.25) / (0.64 - 0.25))
    assert shares["validation"]["value"] is None and shares["validation"]["reason"] == NO_ORACLE_GAIN
    validity = report["validity"]
    assert validity["headroom"]["holds"] is False and validity["headroom"]["value"] == pytest.approx(0.9025)
    assert validity["oracle_bound"]["holds"] is False and validity["review_skill"]["holds"] is True
    text = report_markdown(report, figure=None)
    top = text.split("- Judge:")[0]
    assert "No headroom: MOD reaches 0.90 of the ideal" in top and "No oracle bound" in top
    assert "review skill" not in top.lower()
    for section in ("## Validation front", "## Oracle-gain share", "## Validity"):
        assert section in text
    assert f"null ({NO_ORACLE_GAIN})" in text


def test_report_without_validation_share_methods_or_validity_check_leaves_the_keys_out():
    plain = {"mod": (0.5, 0.5), "dpo": (0.3, 0.3)}
    report = make_report(rows(plain), OBJ, judge="implicit")
    assert not {"validation", "oracle_gain_share", "validity"} & set(report)
    report = make_report(rows(plain), OBJ, judge="implicit", validation_rows=rows(plain, ("v1",)))
    assert set(report["validation"]["methods"]) == {"mod", "dpo"} and "oracle_gain_share" not in report
    text = report_markdown(report, figure=None)
    assert "## Validation front" in text and "## Validity" not in text and "cannot test" not in text


# --- over seeds ---------------------------------------------------------------------------------------------------


def test_oracle_bound_over_seeds_is_the_interval_rule():
    from sipo.report.validity import oracle_bound_over_seeds

    above = {s: {"mod": 0.5, "sipo_oracle_filter": 0.6 + 0.01 * s} for s in range(3)}
    result = oracle_bound_over_seeds(above)
    assert result["holds"] is True and result["n"] == 3 and result["low"] > 0
    assert result["values"] == {s: pytest.approx(0.1 + 0.01 * s) for s in range(3)}
    # positive on average, but the interval reaches below 0
    mixed = {0: {"mod": 0.5, "sipo_oracle_filter": 0.7}, 1: {"mod": 0.5, "sipo_oracle_filter": 0.45},
             2: {"mod": 0.5, "sipo_oracle_filter": 0.55}}
    result = oracle_bound_over_seeds(mixed)
    assert result["mean"] > 0 and result["holds"] is False and result["reason"].startswith("No oracle bound")
    # a seed without validation or without the oracle method does not count
    result = oracle_bound_over_seeds({0: above[0], 1: None, 2: {"mod": 0.5}})
    assert result["holds"] is None and result["n"] == 1


def test_shares_over_seeds_skip_null_seeds():
    from sipo.report.validity import shares_over_seeds

    def share(value):
        return {"value": value}

    result = shares_over_seeds({10: {"all": share(0.2), "transfer": share(None)},
                                11: {"all": share(0.4), "transfer": share(0.1)}, 12: None})
    assert result["all"]["mean"] == pytest.approx(0.3) and result["all"]["n"] == 2 and result["all"]["low"] < 0.3
    assert result["all"]["null_seeds"] == []
    assert result["transfer"]["n"] == 1 and result["transfer"]["low"] is None
    assert result["transfer"]["null_seeds"] == [10]
    assert shares_over_seeds({10: None}) == {}


def test_the_conditions_take_their_methods_from_the_definitions_roles():
    """Headroom's baselines and the share's three methods are read from MethodDef.roles, not from names here."""
    import pytest

    from sipo.methods import METHODS, MethodDef, method_label
    from sipo.report.validity import baselines, share_methods

    assert baselines() == ("dpo", "dpo_soups", "mod", "dpo_lw", "modpo")
    assert share_methods() == ("sipo", "mod", "sipo_oracle_filter")
    assert method_label("dpo_lw") == "DPO-LW" and method_label("sipo_no_filter") == "sipo_no_filter"
    with pytest.raises(ValueError, match="roles must be among"):
        MethodDef("x", "", lambda m: [], roles=("judge",))
    toy = METHODS.register(MethodDef("toy_baseline", "", lambda m: [], roles=("baseline",)))
    try:
        assert baselines()[-1] == "toy_baseline"
    finally:
        METHODS.unregister(toy.name)
