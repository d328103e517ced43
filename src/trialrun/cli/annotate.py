"""`trialrun annotate`: blinded sheets for human coders, their labels, and agreement."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout


@click.group("annotate")
def command() -> None:
    """Human annotation: blinded sheets out, labels in, agreement between raters.

    \b
    Typical round:
      trialrun annotate export RUN --coders 2 --n 200 --overlap 50 --seed 1
      trialrun annotate import RUN runs/RUN/annotation/coder1-1.csv
      trialrun annotate import RUN runs/RUN/annotation/coder2-1.csv
      trialrun annotate disagreements RUN      # a sheet for adjudication
      trialrun annotate import RUN runs/RUN/annotation/adjudicated-1.csv
      trialrun annotate agreement RUN          # kappa, confusion tables, judge vs humans
    """


@command.command("export")
@click.argument("run")
@click.option(
    "--coders", default="2", show_default=True, metavar="N|A,B",
    help="How many coders (named coder1, coder2, ...), or their names.",
)  # fmt: skip
@click.option("--n", "n", type=int, required=True, help="Distinct done trials to sample.")
@click.option(
    "--overlap", type=int, default=0, show_default=True,
    help="Of the N, how many every coder labels (for agreement); the rest are split evenly.",
)  # fmt: skip
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds the sample and the order."
)
@click.option("--judge", metavar="NAME", help="Take the label columns from this judge's schema.")
@click.option("--schema", metavar="YAML", help="The label columns, e.g. '{answer: [pass, fail]}'.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the sheets [default: RUN/annotation].",
)
@runs_dir_option
def export_command(
    run: str, coders: str, n: int, overlap: int, seed: int, judge: str | None,
    schema: str | None, output: Path | None, runs_dir: str,
) -> None:  # fmt: skip
    """Write one blinded sheet per coder (CSV, and the same rows as JSONL) and codebook.md.

    N distinct done trials are drawn with SEED; OVERLAP of them go to every coder (the
    trials agreement is measured on), the other N - OVERLAP are split evenly among the
    coders (dealt in turn, so sheets differ by one row at most). Each sheet shows the item (its id and fields) and each turn's response, then
    an empty column per label field (from the run's judge schema, --judge NAME, or
    --schema); codebook.md lists each field's allowed values. The model, grid values,
    judge verdicts and trial ids are never written; rows are shuffled per coder and
    numbered per sheet (r0001, ...), and the row -> trial map is kept only in the run's
    database (sheets are named CODER-K, e.g. coder1-1).
    """
    target = api.open_run(run, runs_dir)
    summary = api.export_sheets(
        target, coders=coders, n=n, overlap=overlap, seed=seed, judge=judge, schema=schema,
        output=output,
    )  # fmt: skip
    console = stdout()
    for name, coder, rows in summary.sheets:
        console.print(f"sheet {name}: {rows} rows for {coder}")
    console.print(f"{summary.trials} trials sampled; files in {summary.files[0].parent}")


@command.command("import")
@click.argument("run")
@click.argument("sheet_file", metavar="SHEET", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--coder", metavar="NAME", help="Whose labels these are [default: the sheet's coder]."
)
@click.option(
    "--sheet", "sheet_name", metavar="NAME", help="The sheet's name, when the file was renamed."
)
@runs_dir_option
def import_command(
    run: str, sheet_file: Path, coder: str | None, sheet_name: str | None, runs_dir: str
) -> None:
    """Read a filled sheet (CSV or JSONL) and store its labels, all of them or none.

    Every label is checked against the sheet's schema (true/false for a bool, a whole
    number for an int, an enum's value exactly). A bad row stops the import with one line
    naming the row and column, and nothing is stored. Rows with every label empty are
    skipped. Importing again replaces that coder's labels for the rows it labels. Import
    a disagreements sheet the same way: its labels are stored as coder `adjudicated`.
    """
    target = api.open_run(run, runs_dir)
    summary = api.import_sheet(target, sheet_file, coder=coder, sheet=sheet_name)
    stdout().print(
        f"sheet {summary.sheet}: {summary.imported} rows imported for {summary.coder}, "
        f"{summary.skipped} empty rows skipped"
    )


@command.command("disagreements")
@click.argument("run")
@click.option("--coders", metavar="A,B", help="Coders to compare [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the row order.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The sheet's CSV file [default: RUN/annotation/adjudicated-K.csv].",
)
@runs_dir_option
def disagreements_command(
    run: str, coders: str | None, seed: int, output: Path | None, runs_dir: str
) -> None:
    """Write the trials the coders labelled differently as a sheet for adjudication.

    Blinded like the coders' sheets; each coder's labels are shown (FIELD.CODER columns)
    beside empty label columns. Fill those and import the sheet: the labels are stored
    as coder `adjudicated`, beside the coders'.
    """
    target = api.open_run(run, runs_dir)
    summary = api.export_disagreements(target, coders=coders, output=output, seed=seed)
    console = stdout()
    if not summary.sheets:
        console.print("no disagreements: nothing to adjudicate")
        return
    name, _, rows = summary.sheets[0]
    console.print(f"sheet {name}: {rows} disagreements to adjudicate, in {summary.files[0]}")


@command.command("agreement")
@click.argument("run")
@click.option("--field", metavar="F", help="Only this label field.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see docs/guide.md).")
@runs_dir_option
def agreement_command(run: str, field: str | None, seed: int, as_json: bool, runs_dir: str) -> None:
    """Agreement of every pair of raters: coders, `adjudicated` and each judge (judge:NAME).

    On the trials both labelled: n, percent agreement, Cohen's kappa with a 95% CI
    (Fleiss-Cohen-Everitt SE) and the confusion table, for each enum, bool and int field.
    For a binary field, each judge against each human rater: sensitivity, specificity,
    the judged rate and the Rogan-Gladen corrected rate with a bootstrap CI; the positive
    class is the first enum value (or true).
    """
    target = api.open_run(run, runs_dir)
    report = api.agreement(target, field=field, seed=seed)
    console = stdout()
    if as_json:
        console.print_json(json.dumps(report.to_json()))
        return
    _print_pairs(report)
    _print_judges(report)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_pairs(report: api.AgreementReport) -> None:
    console = stdout()
    if not report.pairs:
        console.print("no two raters labelled the same trials yet")
    table = Table("field", "rater A", "rater B", "n", "agree", "kappa", "95% CI", title="Agreement")
    for p in report.pairs:
        ci = "-" if p.kappa_low is None else f"[{p.kappa_low:.3f}, {p.kappa_high:.3f}]"
        table.add_row(p.field, p.a, p.b, str(p.n), f"{p.percent_agreement:.1%}", _num(p.kappa), ci)
    if report.pairs:
        console.print(table)
    for p in report.pairs:
        confusion = Table(f"{p.a} \\ {p.b}", *p.labels, title=f"{p.field}: {p.a} vs {p.b}")
        for label, row in zip(p.labels, p.table, strict=True):
            confusion.add_row(label, *(str(c) for c in row))
        console.print(confusion)
    if report.skipped_fields:
        console.print(
            f"not compared (free text or real numbers): {', '.join(report.skipped_fields)}"
        )


def _print_judges(report: api.AgreementReport) -> None:
    if not report.judges:
        return
    table = Table(
        "field", "judge", "vs", "positive", "n", "sens", "spec", "judged rate",
        "corrected rate", "95% CI", title="Judge vs humans (Rogan-Gladen)",
    )  # fmt: skip
    for j in report.judges:
        ci = "-" if j.corrected_low is None else f"[{j.corrected_low:.3f}, {j.corrected_high:.3f}]"
        table.add_row(
            j.field, j.judge, j.reference, j.positive, str(j.n), _num(j.sensitivity),
            _num(j.specificity), f"{_num(j.judged_rate)} (n={j.judged_n})",
            _num(j.corrected_rate), ci,
        )  # fmt: skip
    stdout().print(table)
