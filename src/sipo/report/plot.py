"""Draw the Pareto fronts of a report dict (``report.json``) to a PNG.

One colour and marker per method (the same ones in every report), each method's points joined in weight order
(except ``dpo``, whose per-objective models are separate points, and single-point methods such as ``sft``, drawn
as one large marker), standard-error bars, every point labelled with its weights (above and to the right of its
marker), filled markers for the method's non-dominated points and hollow ones for dominated points. Methods whose
points are identical (sipo when self-improvement changed nothing, and mod) are drawn once, with one legend entry
``sipo = mod``. Earlier self-improvement rounds
(``sipo@r1``) are dashed and paler. Two objectives give one scatter plot; N > 2 objectives give a grid with one
subplot per pair of objectives (projections), where each method's front in that projection is drawn as a line (a
weight lattice has no path order); one objective gives a strip plot per
method. Each method's marks are shifted by a few points so that methods with coinciding points stay visible; in a
``sipo compare`` figure each run has its own line style.

Rendering uses matplotlib's Agg canvas directly (no pyplot, no display, no global figure state); the file is written
atomically.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sipo.artifacts import atomic_path
from sipo.config import weights_tag
from sipo.methods import METHODS, method_order

FIGURE_NAME = "pareto.png"

_EXTRA_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939")
_EXTRA_MARKERS = ("X", "h", "p", "<", ">", "d")
RUN_LINESTYLES = ("-", "--", ":", "-.")
"""Line style of each run in a ``sipo compare`` figure (entries with a ``run_index``)."""


def weights_label(weights: Mapping[str, float], objectives: Sequence[str]) -> str:
    """A short label of a weight vector in objective order, e.g. ``(0.8, 0.2)``; ``–`` for no weights; the full
    tag (``a0.5-b0.5``) when the weights are keyed by something other than the objectives."""
    if not weights:
        return "–"
    if set(weights) <= set(objectives):
        return "(" + ", ".join(f"{float(weights.get(o, 0.0)):g}" for o in objectives) + ")"
    return weights_tag(weights)


def ordered_methods(report: Mapping[str, Any]) -> list[str]:
    """The report's method keys in a stable display order: the method registry's order (other
    methods after it, by name), the last round before earlier ones. ``report.json`` on disk has sorted keys, so
    views of a loaded report use this rather than the dict order."""

    def key(name: str) -> tuple[int, str, int]:
        entry = report["methods"][name]
        base = _base(name, entry)
        return (*method_order(base), -int(entry.get("round", 1)))

    return sorted(report["methods"], key=key)


def _styles(report: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Each method's (colour, marker): its registered ones, else spare ones in name order."""
    styles = {d.name: (d.colour, d.marker) for d in METHODS.values() if d.colour and d.marker}
    bases = sorted({_base(name, entry) for name, entry in report["methods"].items()} - set(styles))
    for i, base in enumerate(bases):
        styles[base] = (_EXTRA_COLOURS[i % len(_EXTRA_COLOURS)], _EXTRA_MARKERS[i % len(_EXTRA_MARKERS)])
    return styles


def _joined(method: str) -> bool:
    return METHODS[method].joined if method in METHODS else True


def _base(name: str, entry: Mapping[str, Any]) -> str:
    return str(entry.get("method", name.split("@", 1)[0]))


def _labelled(points: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[int]:
    """Indices of the points to label with their weights: the two ends of the path for two objectives, the
    vertices of the simplex (one-hot weights) for more."""
    if len(objectives) == 2:
        return sorted({0, len(points) - 1})
    return [i for i, p in enumerate(points) if p["weights"] and math.isclose(max(p["weights"].values()), 1.0)]


def projected_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points not dominated in the (x, y) projection (both maximised), sorted by x. Pure."""
    keep = [i for i in range(len(xs))
            if not any(xs[j] >= xs[i] and ys[j] >= ys[i] and (xs[j] > xs[i] or ys[j] > ys[i])
                       for j in range(len(xs)))]
    return sorted(keep, key=lambda i: (xs[i], -ys[i]))


MARKER_SHIFT_PT = 2.5
"""Each method's marks are shifted by a few points (its position in the legend decides which way), so methods whose
points coincide (e.g. ``mod`` and ``dpo_soups`` at one-hot weights) stay visible side by side."""


def _draw_method(ax: Any, name: str, entry: Mapping[str, Any], objectives: Sequence[str], dims: tuple[int, int],
                 style: tuple[str, str], shift: float = 0.0, seen: set | None = None, label: str | None = None
                 ) -> Any:
    """Draw one method's points on one pair of objectives; returns the legend handle.

    ``seen`` holds the weight labels already drawn on this subplot: each weight vector is labelled once, at the
    first method drawn that has it (the methods' points of one weight vector sit close together, and their labels
    would cover each other). ``shift`` moves every mark of the method by that many points along the x axis (see :data:`MARKER_SHIFT_PT`).
    With two objectives the points are joined in weight order; with more, each projection draws the method's
    front in that projection (its points that no other point of the method beats on both objectives shown) as a
    line. Every point is labelled with its weights (the end points in a larger font), above and to the right of
    its marker. ``label`` is the legend entry (default ``name``; ``sipo = mod`` for identical methods).
    """
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    colour, marker = style
    earlier_round = "@" in name
    alpha = 0.5 if earlier_round else 1.0
    points = entry["points"]
    front = set(entry.get("front", []))
    x_obj, y_obj = objectives[dims[0]], objectives[dims[1]]
    xs = [p["scores"][x_obj] for p in points]
    ys = [p["scores"][y_obj] for p in points]
    single = len(points) == 1
    size = 14 if single and marker == "*" else 10 if single else 6
    transform = offset_copy(ax.transData, fig=ax.figure, x=shift, y=0.0, units="points")
    line = "--" if earlier_round else "-"
    if "run_index" in entry:  # sipo compare: one line style per run
        line = RUN_LINESTYLES[int(entry["run_index"]) % len(RUN_LINESTYLES)]
    joined = len(points) > 1 and _joined(_base(name, entry))
    linestyle = line if joined else "none"
    if joined and len(objectives) == 2:
        ax.plot(xs, ys, linestyle=linestyle, linewidth=1.4, color=colour, alpha=alpha, zorder=2, transform=transform)
    elif joined:
        # A weight grid over N > 2 objectives is a lattice, not a path: draw this projection's front instead.
        order = projected_front(xs, ys)
        ax.plot([xs[i] for i in order], [ys[i] for i in order], linestyle=linestyle, linewidth=1.2, color=colour,
                alpha=0.8 * alpha, zorder=2, transform=transform)
    for index, (x, y) in enumerate(zip(xs, ys)):
        ax.plot([x], [y], linestyle="none", marker=marker, markersize=size, color=colour, alpha=alpha,
                markerfacecolor=colour if index in front else "white", markeredgewidth=1.2, zorder=3,
                transform=transform)
    xerr = [p["stderr"].get(x_obj) for p in points]
    yerr = [p["stderr"].get(y_obj) for p in points]
    if any(e is not None for e in xerr + yerr):
        ax.errorbar(xs, ys, xerr=[e or 0.0 for e in xerr], yerr=[e or 0.0 for e in yerr], fmt="none",
                    ecolor=colour, alpha=0.35 * alpha, elinewidth=0.8, capsize=0, zorder=1, transform=transform)
    if len(points) > 1:
        ends = set(_labelled(points, objectives))
        for index in range(len(points)):
            text = weights_label(points[index]["weights"], objectives)
            key = text
            if seen is not None:
                if key in seen:
                    continue
                seen.add(key)
            # Above and to the right of the marker, clear of it, over every line and marker (zorder 5).
            ax.annotate(text, (xs[index], ys[index]), xycoords=transform, textcoords="offset points",
                        xytext=(size / 2 + 3, size / 2 + 2), ha="left", va="bottom",
                        fontsize=7 if index in ends else 6, color=colour, alpha=alpha, zorder=5,
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7})
    return Line2D([], [], linestyle=linestyle, linewidth=1.4, color=colour, alpha=alpha, marker=marker,
                  markersize=min(size, 10), label=label or name)


def _draw_single_objective(ax: Any, report: Mapping[str, Any], styles: Mapping[str, tuple[str, str]]) -> None:
    objective = report["objectives"][0]
    names = ordered_methods(report)
    for position, name in enumerate(names):
        entry = report["methods"][name]
        colour, marker = styles[_base(name, entry)]
        ys = [p["scores"][objective] for p in entry["points"]]
        ax.plot([position] * len(ys), ys, linestyle="none", marker=marker, color=colour, markersize=8, label=name)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(f"mean {objective}")


def _set_limits(ax: Any, report: Mapping[str, Any], objectives: Sequence[str], dims: tuple[int, int]) -> None:
    """Axis limits from the points and their error bars (marks drawn with a shifted transform do not count in
    matplotlib's autoscaling)."""
    for axis, dim in (("x", dims[0]), ("y", dims[1])):
        objective = objectives[dim]
        lows, highs = [], []
        for entry in report["methods"].values():
            for point in entry["points"]:
                value, err = point["scores"][objective], point["stderr"].get(objective) or 0.0
                lows.append(value - err)
                highs.append(value + err)
        if not lows:
            continue
        low, high = min(lows), max(highs)
        pad = (high - low) * 0.08 or max(abs(high), 1.0) * 0.05
        (ax.set_xlim if axis == "x" else ax.set_ylim)(low - pad, high + pad)


def identical_groups(report: Mapping[str, Any], names: Sequence[str]) -> list[list[str]]:
    """``names`` grouped by identical points (same weight vectors, mean scores equal up to
    :data:`sipo.report.health.POINT_RELATIVE_TOLERANCE` of the scores' spread), in ``names`` order; methods of
    different ``sipo compare`` runs are never grouped. Pure."""
    from sipo.report.health import same_points, score_scales

    scales = score_scales(report["methods"])
    groups: list[list[str]] = []
    for name in names:
        entry = report["methods"][name]
        for group in groups:
            first = report["methods"][group[0]]
            if first.get("run_index") == entry.get("run_index") and same_points(first, entry, scales):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def render_fronts(report: Mapping[str, Any]) -> Any:
    """The figure of the report's fronts (a matplotlib ``Figure`` on an Agg canvas, drawn)."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objectives = list(report["objectives"])
    styles = _styles(report)
    pairs = list(itertools.combinations(range(len(objectives)), 2))
    ncols = min(3, max(1, len(pairs)))
    nrows = max(1, math.ceil(len(pairs) / ncols))
    fig = Figure(figsize=(5.2 * ncols + 1.8, 4.4 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, Any] = {}
    if not pairs:
        _draw_single_objective(axes[0], report, styles)
    # Methods with identical points are drawn once, as the first of them, labelled "sipo = mod".
    groups = identical_groups(report, ordered_methods(report))
    # The method with the most points (the last such in legend order: sipo before its baselines) is drawn first,
    # so that it labels every weight vector; the others label only the weights it lacks.
    most = max(range(len(groups)), key=lambda i: (len(report["methods"][groups[i][0]]["points"]), i), default=0)
    order = [most, *(i for i in range(len(groups)) if i != most)]
    drawn: dict[int, tuple[str, Any]] = {}
    for ax, dims in zip(axes, pairs):
        seen: set = set()
        for position in order:
            group = groups[position]
            name = group[0]
            entry = report["methods"][name]
            shift = (position - (len(groups) - 1) / 2) * MARKER_SHIFT_PT
            label = " = ".join(group)
            drawn[position] = (label, _draw_method(ax, name, entry, objectives, dims, styles[_base(name, entry)],
                                                   shift, seen, label))
        _set_limits(ax, report, objectives, dims)
        ax.set_xlabel(f"mean {objectives[dims[0]]}")
        ax.set_ylabel(f"mean {objectives[dims[1]]}")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(pairs) or 1:]:
        ax.set_visible(False)
    handles.update(drawn[position] for position in sorted(drawn))
    if handles:
        # Below the axes, never under the title (at the top): a long sipo compare legend has room there too.
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8,
                   ncols=min(4, len(handles)), title="filled: on the method's front", title_fontsize=7)
    title = report.get("title") or "Pareto fronts"
    # Wrapped to the figure's width (sipo compare's title names every run).
    width = max(30, int((5.2 * ncols + 1.8) * 72 / (10 * 0.6)))
    fig.suptitle(textwrap.fill(f"{title} (judge: {report['judge']}; higher is better)", width), fontsize=10)
    fig.canvas.draw()
    return fig


def plot_fronts(report: Mapping[str, Any], path: Path) -> Path:
    """Render the report's fronts to the PNG ``path`` (written atomically) and return ``path``."""
    fig = render_fronts(report)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
