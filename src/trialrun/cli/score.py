"""`trialrun score`."""

from __future__ import annotations

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout


@click.command("score", context_settings={"ignore_unknown_options": True})
@click.argument("run")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE...]")
@runs_dir_option
def command(run: str, overrides: tuple[str, ...], runs_dir: str) -> None:
    """Add or recompute RUN's scores from its records, with no model call.

    KEY=VALUE overrides change the run's `scores:` (one scorer's key, or a whole new
    scorer); the records, results.jsonl and the run's stored config are updated
    together, or not at all when an override is wrong.

    \b
    Examples:
      trialrun score RUN                                   # recompute the config's scores
      trialrun score RUN 'scores.exact={equals: "{{ item.answer }}"}'
      trialrun score RUN 'scores.yes.regex=^(?i)yes'
    """
    target = api.open_run(run, runs_dir)
    summaries = api.score_run(target, overrides)
    table = Table("score", "n", "true", "false", "null", "mean")
    for s in summaries:
        mean = "" if s.mean is None else f"{s.mean:.4g}"
        table.add_row(s.name, str(s.n), str(s.true), str(s.false), str(s.null), mean)
    console = stdout()
    console.print(table if summaries else "no scores: add one, e.g. scores.exact.equals=...")
