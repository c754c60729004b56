"""What report.md and the figures show: no made-up intervals, identical fronts drawn as one, every weight
labelled beside (not under) its marker, and the legend clear of the title."""

from __future__ import annotations

from sipo.records import ScoreRow
from sipo.report import make_report
from sipo.report.build import interval_table
from sipo.report.plot import identical_groups, ordered_methods, render_fronts

OBJ = ["helpful", "harmless"]
WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def rows(method: str, shift: float = 0.0, noise: float = 0.0, run: str = "") -> list[ScoreRow]:
    """Implicit-reward-sized means (about 1e-3) over two prompts."""
    return [ScoreRow(method=method, weights={"helpful": w, "harmless": 1 - w}, prompt_id=f"{run}p{k}", response="r",
                     scores={"helpful": (w + shift + 0.1 * k) * 1e-3 + noise, "harmless": (1 - w + 0.1 * k) * 1e-3})
            for w in WEIGHTS for k in range(2)]


def test_without_bootstrap_the_interval_table_prints_no_interval_and_no_fake_zero():
    report = make_report(rows("mod") + rows("sipo", 0.1), OBJ, judge="implicit", bootstrap=0,
                         training_steps={"mod": 4, "sipo": 6})
    table = interval_table(report)
    assert "[" not in table and "0.0000" not in table
    assert "no interval: eval.bootstrap=0" in table and "bootstrap interval over" not in table
    with_ci = interval_table(make_report(rows("mod") + rows("sipo", 0.1), OBJ, judge="implicit", bootstrap=20))
    assert "95 % bootstrap interval" in with_ci and "e-0" in with_ci  # small volumes in scientific notation


def test_identical_fronts_are_one_marker_with_one_legend_entry():
    report = make_report(rows("mod") + rows("sipo", noise=2e-9) + rows("dpo_soups", -0.1), OBJ, judge="implicit")
    assert identical_groups(report, ordered_methods(report)) == [["dpo_soups"], ["mod", "sipo"]]
    fig = render_fronts(report)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["dpo_soups", "mod = sipo"]


def test_every_weight_is_labelled_once_above_and_beside_its_marker():
    report = make_report(rows("mod") + rows("dpo_soups", -0.1), OBJ, judge="implicit")
    fig = render_fronts(report)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [a for a in ax.texts]
    assert sorted(a.get_text() for a in labels) == sorted(f"({w:g}, {1 - w:g})" for w in WEIGHTS)
    for label in labels:
        x, y = label.xycoords.transform(label.xy)  # the marker's centre, on screen
        box = label.get_window_extent(renderer)
        assert box.x0 > x and box.y0 > y, label.get_text()  # clear of the marker, never under it
        assert label.get_zorder() > 3  # over the lines and markers


def test_the_compare_legend_is_clear_of_a_long_title():
    report = make_report(rows("mod", run="a") + rows("sipo", 0.1, run="a"), OBJ, judge="implicit")
    entries = {}
    for index, run in enumerate(("runs/hh-helpful-harmless-seed0", "runs/hh-helpful-harmless-seed1", "runs/x")):
        for name, entry in report["methods"].items():
            entries[f"{name} ({run})"] = {**entry, "run_index": index}
    combined = {**report, "methods": entries, "title": "Comparison of runs/hh-helpful-harmless-seed0, "
                "runs/hh-helpful-harmless-seed1, runs/x"}
    fig = render_fronts(combined)
    renderer = fig.canvas.get_renderer()
    legend, title = fig.legends[0].get_window_extent(renderer), fig._suptitle.get_window_extent(renderer)
    assert not legend.overlaps(title)
    assert len(fig.legends[0].get_texts()) == 6  # runs are never merged, even with equal points
