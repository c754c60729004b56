"""``sipo compare`` (several runs on one reference point) and the figure's projections, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipo.cli import main
from sipo.compare import combine_reports, run_labels
from sipo.config import WeightGrid, weight_grid
from sipo.errors import DataError
from sipo.records import ScoreRow
from sipo.report.build import build_report, make_report
from sipo.report.plot import plot_fronts, projected_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rows(objectives, shift: float, methods=("mod", "sipo")) -> list[ScoreRow]:
    out = []
    for method in methods:
        bonus = shift + (0.1 if method == "sipo" else 0.0)
        for w in weight_grid(objectives, WeightGrid(resolution=2)):
            for p in range(3):
                out.append(ScoreRow(method=method, weights=w, prompt_id=str(p), response="",
                                    scores={o: 0.5 * w[o] + bonus + 0.01 * p for o in objectives}))
    return out


def finished_run(root: Path, shift: float, objectives=("a", "b"), judge="oracle") -> Path:
    build_report(rows(list(objectives), shift), list(objectives), judge=judge, out_dir=root / "report",
                 reference_point=[0.0] * len(objectives))
    return root


def test_runs_share_one_reference_point():
    objectives = ["a", "b"]
    one = make_report(rows(objectives, 0.0), objectives, judge="oracle", reference_point=[0, 0])
    two = make_report(rows(objectives, 0.2), objectives, judge="oracle", reference_point=[0.1, 0.1])
    combined = combine_reports([one, two], ["one", "two"], reference_point=[0.0, 0.0])
    assert set(combined["methods"]) == {"one/mod", "one/sipo", "two/mod", "two/sipo"}
    assert combined["reference_point"] == [0.0, 0.0]
    # one's numbers are unchanged (same reference point); two's are recomputed against (0, 0), not (0.1, 0.1)
    assert combined["methods"]["one/sipo"]["hypervolume"] == pytest.approx(one["methods"]["sipo"]["hypervolume"])
    assert combined["methods"]["two/sipo"]["hypervolume"] > two["methods"]["sipo"]["hypervolume"]
    assert combined["methods"]["two/sipo"]["hypervolume"] > combined["methods"]["one/sipo"]["hypervolume"]
    default = combine_reports([one, two], ["one", "two"])
    worst = min(p["scores"]["a"] for r in (one, two) for e in r["methods"].values() for p in e["points"])
    assert default["reference_point"][0] < worst


def test_runs_that_are_not_comparable_are_refused():
    ab = make_report(rows(["a", "b"], 0.0), ["a", "b"], judge="oracle")
    ba = make_report(rows(["b", "a"], 0.0), ["b", "a"], judge="oracle")
    with pytest.raises(DataError, match="objectives"):
        combine_reports([ab, ba], ["x", "y"])
    other_judge = make_report(rows(["a", "b"], 0.0), ["a", "b"], judge="length")
    with pytest.raises(DataError, match="judged by 'length'"):
        combine_reports([ab, other_judge], ["x", "y"])


def test_a_judge_whose_scores_are_per_run_is_flagged_in_compare_md():
    """The implicit judge scores each run with its own adapters (``JudgeDef.shared_scale``): compare.md says so."""
    from sipo.compare import compare_markdown

    def markdown(judge):
        reports = [make_report(rows(["a", "b"], s), ["a", "b"], judge=judge) for s in (0.0, 0.2)]
        return compare_markdown(combine_reports(reports, ["one", "two"]), ["runs/one", "runs/two"])

    assert ("> The `implicit` judge scores each run with its own round-1 adapters, so the runs' scores are not on "
            "one scale; prefer a shared judge (`oracle`, `reward_model`, `length`) to compare runs.") in markdown("implicit")
    assert "not on one scale" not in markdown("oracle")


def test_labels_are_unique():
    assert run_labels(["runs/a", "runs/b"]) == ["a", "b"]
    assert run_labels(["x/seed0", "y/seed0"]) == ["x/seed0", "y/seed0"]


def test_compare_command_writes_one_table_and_one_figure(tmp_path, capsys):
    """The runs here are report folders without the rest of a run: compare refuses them (nothing to check the
    report against) unless --allow-stale, and then compare.md says so."""
    one, two = finished_run(tmp_path / "one", 0.0), finished_run(tmp_path / "two", 0.2)
    out = tmp_path / "cmp"
    assert main(["compare", str(one), str(two), "--out", str(out), "--reference-point", "0,0"]) == 2
    assert f"{one / 'config.yaml'}: not found" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()
    assert main(["compare", str(one), str(two), "--out", str(out), "--reference-point", "0,0",
                 "--allow-stale"]) == 0
    assert main(["compare", str(one), str(two), "--out", str(out), "--reference-point", "nan,0",
                 "--allow-stale"]) == 2
    assert "not a finite number" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png"]
    table = (out / "compare.md").read_text()
    assert table.count("| method | hypervolume |") == 1
    assert all(f"| {name} |" in table for name in ("one/mod", "one/sipo", "two/mod", "two/sipo"))
    assert json.loads((out / "compare.json").read_text())["reference_point"] == [0.0, 0.0]
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
    assert table.count("stale run (--allow-stale)") == 2
    assert main(["compare", str(one), str(tmp_path / "missing"), "--out", str(out), "--allow-stale"]) == 2
    assert "missing/config.yaml: not found" in capsys.readouterr().err.strip().splitlines()[-1]


def test_projected_front():
    xs, ys = [0.0, 0.5, 1.0, 0.4, 0.2], [1.0, 0.5, 0.0, 0.4, 0.9]
    assert projected_front(xs, ys) == [0, 4, 1, 2]  # (0.4, 0.4) is beaten by (0.5, 0.5)
    assert projected_front([1.0, 1.0], [2.0, 2.0]) == [0, 1]  # ties are both kept


def test_three_objective_figure(tmp_path):
    objectives = ["a", "b", "c"]
    report = make_report(rows(objectives, 0.0, methods=("mod", "dpo_soups", "sipo")), objectives, judge="oracle",
                         reference_point=[0, 0, 0])
    path = plot_fronts(report, tmp_path / "p.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 20_000
