"""`trialrun compare`."""

from __future__ import annotations

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option
from trialrun.cli.stats import (
    CI_METHODS,
    by_option,
    ci_option,
    fdr_option,
    json_option,
    metric_option,
    seed_option,
)
from trialrun.cli.stats_output import print_report


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, metavar="RUN_A RUN_B [RUN...]")
@metric_option
@by_option
@fdr_option
@json_option
@seed_option
@ci_option
@runs_dir_option
def command(
    runs: tuple[str, ...],
    metric: str | None,
    by: tuple[str, ...],
    fdr: float,
    as_json: bool,
    seed: int,
    ci_method: str,
    runs_dir: str,
) -> None:
    """Paired comparisons across runs (a base model's run against an SFT model's).

    Records are matched by item id, grid values and repeat. When each run has one model,
    the runs are the sides and each is labelled by its model; otherwise each model is
    compared with itself across the runs. The statistics are those of `stats --compare`.

    \b
    Examples:
      trialrun compare RUN_A RUN_B --metric correct
      trialrun compare RUN_A RUN_B --by item.category --json
    """
    options = api.StatsOptions(
        metric=metric,
        by=by,
        ci_method=CI_METHODS[ci_method],
        seed=seed,
    )
    found = [api.open_run(ref, runs_dir) for ref in runs]
    print_report(api.compare_runs(found, options), as_json=as_json, fdr=fdr)
