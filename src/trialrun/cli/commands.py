"""The command group; one module per command registers itself here."""

from __future__ import annotations

import click

from trialrun import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="trialrun")
def cli() -> None:
    """Run large LLM experiments fire-and-forget.

    One config describes models × items × a parameter grid × repeats; trialrun expands
    it into trials, runs them with rate limits, retries and a response cache, keeps
    every result in a crash-safe run folder, and resumes after any stop.

    \b
    Start here:
      trialrun plan examples/quickstart.yaml      # what would run, nothing sent
      trialrun run examples/quickstart.yaml       # run it (mock models: offline)
      trialrun run my.yaml --mock                 # dry-run any config offline
      trialrun status                             # progress of the latest run
      trialrun resume                             # finish a stopped or crashed run
      trialrun collect --wait                     # batch mode: collect until finished
    """


def register() -> None:
    from trialrun.cli import (
        annotate,
        check_data,
        collect,
        compare,
        doctor,
        export,
        judge,
        ls,
        merge,
        plan,
        power,
        report,
        resume,
        run,
        score,
        stats,
        status,
        stop,
        verify,
        view,
    )

    for module in (
        run,
        plan,
        status,
        resume,
        stop,
        collect,
        judge,
        score,
        stats,
        compare,
        power,
        report,
        view,
        export,
        merge,
        ls,
        doctor,
        verify,
        check_data,
    ):
        cli.add_command(module.command)
    cli.add_command(annotate.command)


register()
