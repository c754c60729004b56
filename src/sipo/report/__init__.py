"""The evaluation report: aggregation into Pareto points, hypervolume, tables and the figure.

See :mod:`sipo.report.build` for the files written and the ``report.json`` layout.
"""

from sipo.report.build import (
    REPORT_FILES,
    build_report,
    load_score_rows,
    make_report,
    markdown_table,
    method_key,
    read_report,
    report_markdown,
    summary_csv,
)
from sipo.report.plot import FIGURE_NAME, ordered_methods, plot_fronts, weights_label

__all__ = [
    "FIGURE_NAME",
    "REPORT_FILES",
    "build_report",
    "load_score_rows",
    "make_report",
    "markdown_table",
    "method_key",
    "ordered_methods",
    "plot_fronts",
    "read_report",
    "report_markdown",
    "summary_csv",
    "weights_label",
]
