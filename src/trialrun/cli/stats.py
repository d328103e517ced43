"""`trialrun stats`."""

from __future__ import annotations

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option
from trialrun.cli.stats_output import print_report
from trialrun.stats import ProportionMethod

CI_METHODS: dict[str, ProportionMethod] = {"wilson": "wilson", "exact": "clopper-pearson"}

metric_option = click.option(
    "--metric",
    metavar="M",
    help="A score name (correct), or a judge field: judge.answer=pass, judge.coherent, "
    "judges.NAME.FIELD[=VALUE]. Default: the first score, else the first judge field.",
)
by_option = click.option(
    "--by",
    multiple=True,
    metavar="FIELD",
    help="Split each group by an item field (item.category); repeatable.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the documented JSON.")
fdr_option = click.option(
    "--fdr",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.10,
    show_default=True,
    help="Mark comparisons whose BH q-value is at most this.",
)
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the paired bootstrap."
)
ci_option = click.option(
    "--ci-method",
    type=click.Choice(sorted(CI_METHODS)),
    default="wilson",
    show_default=True,
    help="Interval for a rate (with repeats the CI is clustered by item instead).",
)


@click.command("stats")
@click.argument("run", required=False)
@metric_option
@by_option
@click.option(
    "--compare",
    metavar="FIELD",
    help="Paired comparisons: model (each pair of models per grid cell and stratum) or "
    "grid.NAME (each pair of that grid key's values per model).",
)
@fdr_option
@json_option
@seed_option
@ci_option
@runs_dir_option
def command(
    run: str | None,
    metric: str | None,
    by: tuple[str, ...],
    compare: str | None,
    fdr: float,
    as_json: bool,
    seed: int,
    ci_method: str,
    runs_dir: str,
) -> None:
    """Rates (or means) with CIs per model × grid cell, and paired comparisons.

    Each group shows n, the missing (failed trials, null scores, judge errors: counted,
    never dropped), successes, the rate with a Wilson (or exact) 95% CI; with repeats the
    CI is clustered by item. --compare pairs records by item id and repeat: McNemar
    (exact binomial below 25 discordant pairs, else chi-square with continuity
    correction), the difference with a seeded paired-bootstrap CI, Cohen's h, and
    Benjamini-Hochberg q-values over every comparison shown; with repeats, the clustered
    McNemar (Durkalski 2003) and a bootstrap of whole items. Numeric metrics get means,
    normal CIs and a paired t-test.

    \b
    Examples:
      trialrun stats                                   # the latest run, default metric
      trialrun stats RUN --metric correct --by item.category
      trialrun stats RUN --metric judge.answer=pass --compare model --json
    """
    options = api.StatsOptions(
        metric=metric,
        by=by,
        compare=compare,
        ci_method=CI_METHODS[ci_method],
        seed=seed,
    )
    report = api.run_stats(api.open_run(run, runs_dir), options)
    print_report(report, as_json=as_json, fdr=fdr)
