"""The report: aggregation of ScoreRows into points, hypervolume per method, and the five files written."""

from __future__ import annotations

import csv
import json
import os

import pytest

from sipo.errors import DataError
from sipo.records import ScoreRow
from sipo.report import (
    REPORT_FILES,
    build_report,
    load_score_rows,
    make_report,
    markdown_table,
    method_key,
    ordered_methods,
    plot_fronts,
    read_report,
    summary_csv,
    weights_label,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OBJ = ["c", "v"]
W10, W55, W01 = {"c": 1.0, "v": 0.0}, {"c": 0.5, "v": 0.5}, {"c": 0.0, "v": 1.0}


def rows_for(method, weights, per_prompt, round_=1):
    return [
        ScoreRow(method=method, weights=dict(weights), prompt_id=f"p{i}", response=f"{method} says {i}",
                 scores=dict(zip(OBJ, scores)), round=round_)
        for i, scores in enumerate(per_prompt)
    ]


def two_objective_rows():
    """Two prompts per point.

    sft      (no weights): (0.2,0.2), (0.4,0.4) -> mean (0.3,0.3), stderr = stdev(0.2,0.4)/sqrt 2 = 0.1414/1.414 = 0.1
    mod      (1,0) -> (0.8,0.2); (.5,.5) -> (0.5,0.5); (0,1) -> (0.2,0.8)         (both prompts equal, stderr 0)
    sipo r2  (1,0) -> (0.9,0.3); (.5,.5) -> (0.6,0.6); (0,1) -> (0.3,0.9)
    sipo r1  (1,0) -> (0.8,0.2); (.5,.5) -> (0.5,0.5); (0,1) -> (0.4,0.4)  (the last is dominated by the middle)

    Hypervolume against (0,0), sweeping points by c descending:
    mod:     0.8*0.2 + 0.5*(0.5-0.2) + 0.2*(0.8-0.5) = 0.16 + 0.15 + 0.06 = 0.37
    sipo r2: 0.9*0.3 + 0.6*(0.6-0.3) + 0.3*(0.9-0.6) = 0.27 + 0.18 + 0.09 = 0.54
    sipo r1: 0.16 + 0.15 = 0.31 (the dominated point adds nothing)
    sft:     0.3*0.3 = 0.09
    """
    rows = rows_for("sft", {}, [(0.2, 0.2), (0.4, 0.4)])
    for method, round_, pts in [
        ("mod", 1, [(0.8, 0.2), (0.5, 0.5), (0.2, 0.8)]),
        ("sipo", 2, [(0.9, 0.3), (0.6, 0.6), (0.3, 0.9)]),
        ("sipo", 1, [(0.8, 0.2), (0.5, 0.5), (0.4, 0.4)]),
    ]:
        # Deliberately not in weight order, to check the sorting.
        for weights, point in reversed(list(zip([W10, W55, W01], pts))):
            rows += rows_for(method, weights, [point, point], round_)
    return rows


def test_make_report_points_hypervolume_and_rounds():
    report = make_report(two_objective_rows(), OBJ, judge="oracle", reference_point=[0.0, 0.0], title="t")
    assert {"objectives", "judge", "reference_point", "methods"} <= set(report)
    assert report["objectives"] == OBJ and report["judge"] == "oracle" and report["reference_point"] == [0, 0]
    methods = report["methods"]
    assert list(methods) == ["sft", "mod", "sipo", "sipo@r1"]
    assert (methods["sipo"]["method"], methods["sipo"]["round"]) == ("sipo", 2)
    assert (methods["sipo@r1"]["method"], methods["sipo@r1"]["round"]) == ("sipo", 1)
    expected_hv = {"mod": 0.37, "sipo": 0.54, "sipo@r1": 0.31, "sft": 0.09}
    for name, hv in expected_hv.items():
        assert methods[name]["hypervolume"] == pytest.approx(hv), name
    assert methods["sipo@r1"]["front"] == [0, 1]
    assert methods["mod"]["front"] == [0, 1, 2]
    assert [p["weights"] for p in methods["mod"]["points"]] == [W10, W55, W01]
    assert methods["sipo"]["best"] == pytest.approx({"c": 0.9, "v": 0.9})
    (sft_point,) = methods["sft"]["points"]
    assert sft_point["n"] == 2 and sft_point["weights"] == {}
    assert sft_point["scores"] == pytest.approx({"c": 0.3, "v": 0.3})
    assert sft_point["stderr"] == pytest.approx({"c": 0.1, "v": 0.1})
    assert methods["mod"]["points"][0]["stderr"] == {"c": 0.0, "v": 0.0}


def test_default_reference_point_is_shared_by_all_methods():
    """Over all ten points c and v both range 0.2..0.9 -> reference 0.2 - 0.05*0.7 = 0.165 on each;
    sft's hypervolume is then (0.3 - 0.165)^2 = 0.018225."""
    report = make_report(two_objective_rows(), OBJ, judge="oracle")
    assert report["reference_point"] == pytest.approx([0.165, 0.165])
    assert report["methods"]["sft"]["hypervolume"] == pytest.approx(0.018225)
    assert "worst" in report["reference_point_rule"]


def test_single_prompt_has_no_stderr():
    report = make_report(rows_for("sft", {}, [(0.5, 0.5)]), OBJ, judge="oracle")
    assert report["methods"]["sft"]["points"][0]["stderr"] == {"c": None, "v": None}


def test_build_report_writes_the_five_files_atomically(tmp_path):
    out = tmp_path / "report"
    rows = two_objective_rows()
    report = build_report(rows, OBJ, judge="oracle", out_dir=out, reference_point=[0.0, 0.0], title="demo")

    assert sorted(os.listdir(out)) == sorted(REPORT_FILES)  # nothing half-written or temporary is left

    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk) >= {"objectives", "judge", "reference_point", "methods"}
    assert on_disk["methods"]["sipo"]["hypervolume"] == pytest.approx(0.54)
    assert on_disk["methods"]["sft"]["points"][0]["n"] == 2
    assert set(on_disk["methods"]["mod"]) >= {"points", "hypervolume", "front", "best"}
    assert set(on_disk["methods"]["mod"]["points"][0]) == {"weights", "scores", "stderr", "n"}

    loaded = load_score_rows(out / "scores.jsonl")
    assert len(loaded) == 20  # 2 prompts x (1 sft + 3 mod + 3 sipo + 3 sipo@r1) points
    assert sorted(loaded, key=repr) == sorted(rows, key=repr)

    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 10
    assert list(summary[0]) == ["method", "round", "weights", "c_mean", "c_stderr", "v_mean", "v_stderr", "n",
                                "on_front"]
    first_sipo_r1 = next(r for r in summary if r["method"] == "sipo@r1")
    assert first_sipo_r1["round"] == "1" and first_sipo_r1["weights"] == "c1-v0"
    assert float(first_sipo_r1["c_mean"]) == pytest.approx(0.8) and first_sipo_r1["on_front"] == "True"
    assert [r["on_front"] for r in summary if r["method"] == "sipo@r1"] == ["True", "True", "False"]

    assert (out / "pareto.png").read_bytes()[:8] == PNG_MAGIC

    md = (out / "report.md").read_text()
    assert "`oracle`" in md and "Reference point: (0, 0)" in md and "![Pareto fronts](pareto.png)" in md
    table = markdown_table(report)
    assert table in md
    data_rows = [line for line in table.splitlines()[2:]]
    assert [line.split("|")[1].strip() for line in data_rows] == ["sipo", "mod", "sipo@r1", "sft"]
    assert data_rows[0].startswith("| sipo | **0.54** | **0.9** | **0.9** | 3 | 2 |")


def test_views_of_a_loaded_report_match_the_built_one(tmp_path):
    """report.json has sorted keys on disk; the table, summary and method order must not depend on that."""
    report = build_report(two_objective_rows(), OBJ, judge="oracle", out_dir=tmp_path, reference_point=[0, 0])
    loaded = read_report(tmp_path)
    assert list(loaded["methods"]) == ["mod", "sft", "sipo", "sipo@r1"]
    assert ordered_methods(loaded) == ["sft", "mod", "sipo", "sipo@r1"]
    assert markdown_table(loaded) == markdown_table(report)
    assert summary_csv(loaded) == (tmp_path / "summary.csv").read_text()


def test_build_report_overwrites_previous_report(tmp_path):
    build_report(rows_for("sft", {}, [(0.5, 0.5)]), OBJ, judge="oracle", out_dir=tmp_path)
    build_report(two_objective_rows(), OBJ, judge="oracle", out_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(REPORT_FILES)
    assert "mod" in read_report(tmp_path / "report.json")["methods"]


def test_three_objectives_report_and_plot(tmp_path):
    """mod: (0.5,0.5,0.5) and (1,0.2,0.2) against (0,0,0): 0.125 + 1*0.2*0.2 - 0.5*0.2*0.2 = 0.145."""
    objs = ["a", "b", "c"]

    def row(method, weights, scores, pid="p0"):
        return ScoreRow(method=method, weights=weights, prompt_id=pid, response="r", scores=dict(zip(objs, scores)))

    rows = [
        row("sft", {}, (0.1, 0.1, 0.1)),
        row("mod", {"a": 1.0, "b": 0.0, "c": 0.0}, (1.0, 0.2, 0.2)),
        row("mod", {"a": 0.4, "b": 0.3, "c": 0.3}, (0.5, 0.5, 0.5)),
        row("custom", {"a": 0.4, "b": 0.3, "c": 0.3}, (0.6, 0.6, 0.6)),
    ]
    report = build_report(rows, objs, judge="implicit", out_dir=tmp_path, reference_point=[0.0, 0.0, 0.0])
    assert report["methods"]["mod"]["hypervolume"] == pytest.approx(0.145)
    assert report["methods"]["custom"]["hypervolume"] == pytest.approx(0.216)
    assert list(report["methods"]) == ["sft", "mod", "custom"]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(os.listdir(tmp_path)) == sorted(REPORT_FILES)


def test_plot_single_objective(tmp_path):
    rows = [ScoreRow(method="sft", weights={}, prompt_id="p", response="r", scores={"a": 0.3}),
            ScoreRow(method="mod", weights={"a": 1.0}, prompt_id="p", response="r", scores={"a": 0.7})]
    report = make_report(rows, ["a"], judge="oracle")
    path = plot_fronts(report, tmp_path / "one.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(tmp_path) == ["one.png"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "no score rows"),
        ([ScoreRow(method="m", weights={}, prompt_id="p", response="", scores={"c": 1.0})], "objective 'v'"),
        ([ScoreRow(method="m", weights={}, prompt_id="p", response="", scores={"c": 1.0, "v": float("nan")})],
         "non-finite"),
        (rows_for("m", W10, [(1, 1)]) * 2, "duplicate score row"),
    ],
)
def test_make_report_rejects_bad_rows(rows, message):
    with pytest.raises(DataError, match=message):
        make_report(rows, OBJ, judge="oracle")


def test_make_report_rejects_reference_point_of_wrong_length():
    with pytest.raises(DataError, match="one value per objective"):
        make_report(two_objective_rows(), OBJ, judge="oracle", reference_point=[0.0])


def test_load_score_rows_names_the_bad_line(tmp_path):
    path = tmp_path / "scores.jsonl"
    good = {"method": "m", "weights": {"c": 1.0}, "prompt_id": "p", "response": "r", "scores": {"c": 1}}
    bad = dict(good, scores={"c": "high"})
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"scores.jsonl:3: 'scores.c' must be a number"):
        load_score_rows(path)
    path.write_text(json.dumps(good) + "\n")
    (row,) = load_score_rows(path)
    assert row == ScoreRow(method="m", weights={"c": 1.0}, prompt_id="p", response="r", scores={"c": 1.0})
    with pytest.raises(DataError, match="file not found"):
        load_score_rows(tmp_path / "missing.jsonl")


def test_read_report_rejects_non_reports(tmp_path):
    (tmp_path / "report.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="not a sipo report"):
        read_report(tmp_path)


def test_names_and_labels():
    assert method_key("sipo", 2, 2) == "sipo"
    assert method_key("sipo", 1, 2) == "sipo@r1"
    assert weights_label({"c": 0.8, "v": 0.2}, OBJ) == "(0.8, 0.2)"
    assert weights_label({}, OBJ) == "–"
    assert weights_label({"x": 0.5, "y": 0.5}, OBJ) == "x0.5-y0.5"
