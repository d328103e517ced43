"""`trialrun judge`."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import judge_lines, plain


@click.command("judge", context_settings={"ignore_unknown_options": True})
@click.argument("run", required=False)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE...]")
@click.option(
    "--failed-only", is_flag=True, help="Judge again exactly the trials a judge failed on."
)
@click.option(
    "--judge", "names", multiple=True, metavar="NAME", help="Only this judge (repeatable)."
)
@click.option("--mock", is_flag=True, help="Answer every API judge with the offline mock.")
@runs_dir_option
def command(
    run: str | None,
    overrides: tuple[str, ...],
    failed_only: bool,
    names: tuple[str, ...],
    mock: bool,
    runs_dir: str,
) -> None:
    """Judge RUN's done trials (default: the latest run) that its judges have not judged yet.

    Resumable: it judges only what is missing (a stopped run, a `when: after` judge, a
    judge added later), so the same command continues after Ctrl-C. --failed-only judges
    again exactly the trials a judge left a judge_error on. KEY=VALUE overrides change the
    run's judges (judge.* only); a judge whose model, prompt, schema or params change
    while it has verdicts is added beside the old one as a new judge (`judge-2`), so old
    verdicts are never overwritten. Verdicts land in the records (`judges`), results.jsonl
    and the judgments table.

    \b
    Examples:
      trialrun judge RUN                                  # judge what is missing
      trialrun judge RUN --failed-only                    # retry the judge errors
      trialrun judge RUN judge.model=anthropic/claude-sonnet-4-5   # a second judge
      trialrun judge RUN --mock 'judge={model: openai/gpt-5-mini, prompt: "Grade: {{ response }}", schema: {answer: [pass, fail]}}'
    """
    target = api.open_run(run, runs_dir)
    console = stdout()
    progress = Progress(
        TextColumn("judging"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task("judging", total=None)

    def on_start(plan: api.JudgePass) -> None:
        for note in plan.notes:
            console.print(plain(note))
        console.print(
            f"judging {plan.trials:,} trial{'s' if plan.trials != 1 else ''} with "
            f"{', '.join(plan.judges)}"
        )
        progress.update(task, total=plan.trials)
        progress.start()

    try:
        status = api.judge_run(
            target,
            overrides,
            names=names,
            failed_only=failed_only,
            mock=mock,
            on_start=on_start,
            on_judged=lambda n: progress.advance(task, n),
        )
    finally:
        progress.stop()
    for line in judge_lines(status):
        console.print(line)
    errors = sum(j["errors"] for j in status)
    if errors:
        console.print(
            f"judge errors are kept as errors; retry them: trialrun judge {target.path} --failed-only"
        )
