"""`trialrun report`: a run's statistics, judges, usage, trials and provenance as one
self-contained HTML file (no CDN, no script library: inline SVG charts, inline CSS, a few
lines of inline JavaScript), and the same numbers for the terminal.

- `data.py`: read the run into a `ReportData` (statistics through `trialrun.analysis`).
- `trials.py`: the bounded, evenly sampled trial table with conversations.
- `charts.py`, `svg.py`: bars with CIs, heatmaps, line plots, a forest plot.
- `html.py`: the page.
"""

from __future__ import annotations

from pathlib import Path

from trialrun.export import write_atomic
from trialrun.report.data import MAX_METRICS, ReportData, ReportOptions, build_report
from trialrun.report.html import render
from trialrun.runs import Run

REPORT_NAME = "report.html"
REPORT_MAX_METRICS = MAX_METRICS

__all__ = [
    "REPORT_MAX_METRICS",
    "REPORT_NAME",
    "ReportData",
    "ReportOptions",
    "build_report",
    "render",
    "write_report",
]


def write_report(
    run: Run, path: Path | None = None, options: ReportOptions | None = None
) -> tuple[ReportData, Path]:
    """Build `run`'s report and write its HTML to `path` (default: RUN/report.html), whole
    or not at all; returns the data (for the terminal) and the path written."""
    data = build_report(run, options)
    target = path if path is not None else run.path / REPORT_NAME
    write_atomic(target, [render(data)])
    return data, target
