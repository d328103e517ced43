"""`trialrun report`."""

from __future__ import annotations

from pathlib import Path

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.cli.stats_output import print_report
from trialrun.display import print_summary


@click.command("report")
@click.argument("run", required=False)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the HTML report here (default: RUN/report.html).",
)
@click.option("--no-html", is_flag=True, help="Print the tables only; write no HTML file.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="M",
    help="A metric as `stats` takes it; repeatable. Default: every score and judge field "
    f"(the first {api.REPORT_MAX_METRICS}).",
)
@click.option(
    "--compare",
    metavar="FIELD",
    help="Paired comparisons: model or grid.NAME. Default: model with two models or more, "
    "else the first grid key with two values or more.",
)
@click.option(
    "--max-trials",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Trials in the HTML trial table at most (an even sample beyond; 0: none).",
)
@click.option(
    "--fdr",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.10,
    show_default=True,
    help="Mark comparisons whose BH q-value is at most this.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@runs_dir_option
def command(
    run: str | None,
    html_path: str | None,
    no_html: bool,
    metrics: tuple[str, ...],
    compare: str | None,
    max_trials: int,
    fdr: float,
    seed: int,
    runs_dir: str,
) -> None:
    """Statistics and plots: the tables here, and one self-contained HTML file.

    Prints the run's summary, its judges, and for each metric the groups with 95% CIs
    and the paired comparisons (as `trialrun stats` does). Writes RUN/report.html (or
    --html PATH): rates with CI bars, a heatmap for each pair of grid axes, lines over
    numeric grid axes, a forest plot of paired differences with q-values, judge coverage
    and agreement, scores, tokens/cost/latency/errors per model, a searchable trial table
    whose rows open the conversation, and the manifest. The file opens offline.

    \b
    Examples:
      trialrun report                          # the latest run → RUN/report.html
      trialrun report RUN --html out/r.html --metric judge.answer=pass
      trialrun report RUN --no-html --compare grid.temperature
    """
    target = api.open_run(run, runs_dir)
    options = api.ReportOptions(
        metrics=metrics, compare=compare, max_trials=max_trials, fdr=fdr, seed=seed
    )
    console = stdout()
    if no_html:
        data = api.build_report(target, options)
        path = None
    else:
        data, path = api.write_report(target, Path(html_path) if html_path else None, options)
    print_summary(target, console)
    for note in data.stats_notes:
        console.print(f"note: {note}", markup=False)
    for report in data.stats:
        print_report(report, as_json=False, fdr=fdr)
    if path is not None:
        shown = len(data.trials.bounded())
        console.print(
            f"report → {path} ({path.stat().st_size / 1e6:.1f} MB; {shown:,} of "
            f"{data.records:,} trials in its table)",
            markup=False,
        )
