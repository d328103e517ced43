"""`trialrun check-data`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import stdout
from trialrun.display import plain


@click.command("check-data")
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--against", "against", multiple=True, metavar="FILE",
    help="Compare each FILE with this dataset (repeatable); without it, FILEs with each other.",
)  # fmt: skip
@click.option(
    "--field", "fields", multiple=True, metavar="NAME",
    help="Item fields whose text is compared (repeatable); default: every string field but the id.",
)  # fmt: skip
@click.option("--id", "id_field", default="id", show_default=True, help="Field holding item ids.")
@click.option(
    "--near", type=float, default=0.8, show_default=True,
    help="Jaccard threshold over word 5-shingles for near duplicates and near overlap.",
)  # fmt: skip
@click.option(
    "--ngram", type=int, default=13, show_default=True,
    help="Words per n-gram for the shared n-gram count between datasets.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def command(
    files: tuple[str, ...],
    against: tuple[str, ...],
    fields: tuple[str, ...],
    id_field: str,
    near: float,
    ngram: int,
    as_json: bool,
) -> None:
    """Duplicates within datasets and overlap between them (JSON, JSONL or CSV files, read
    as a run reads them).

    \b
    Texts are normalised first: Unicode NFKC, case-folded, whitespace collapsed.
    Exact: equal normalised texts. Near: MinHash (128 permutations) over word
    5-shingles with LSH banding finds candidates; a pair counts when its exact
    Jaccard similarity is at least --near. Overlap: items of FILE whose text is in
    the other dataset (exact, or near), and the distinct --ngram word n-grams both
    hold. Exits 1 when anything is found, 0 when the data are clean.
    """
    report = api.check_data(
        [Path(f) for f in files],
        [Path(f) for f in against],
        fields=list(fields) or None,
        id_field=id_field,
        near=near,
        n=ngram,
    )
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print(report)
    if api.found_anything(report):
        raise click.exceptions.Exit(1)


def _print(report: dict[str, Any]) -> None:
    console = stdout()
    near = report["near"]
    console.print(
        plain(
            f"normalised: {report['normalisation']}; fields: {_fields(report['fields'])}; near: "
            f"Jaccard >= {near['threshold']} over word {near['shingle_words']}-shingles "
            f"(MinHash, {near['num_perm']} permutations)"
        )
    )
    table = Table(title="within each file", title_justify="left")
    for column in ("file", "items", "exact duplicates", "groups", "near-duplicate pairs"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for f in report["files"]:
        table.add_row(
            plain(f["file"]), f"{f['items']:,}", f"{f['exact']['count']:,}",
            f"{f['exact']['groups']:,}", f"{f['near']['count']:,}",
        )  # fmt: skip
    console.print(table)
    for f in report["files"]:
        _examples(f"{f['file']}: exact duplicate", f["exact"]["examples"])
        _examples(f"{f['file']}: near duplicate", f["near"]["examples"])
    if not report["overlaps"]:
        return
    table = Table(title="between files", title_justify="left")
    n = report["overlaps"][0]["ngrams"]["n"]
    for column in ("file", "against", "exact", "near", f"shared {n}-grams", "items with one"):
        table.add_column(column, justify="left" if column in ("file", "against") else "right")
    for o in report["overlaps"]:
        table.add_row(
            plain(o["file"]), plain(o["against"]), f"{o['exact']['count']:,}",
            f"{o['near']['count']:,}", f"{o['ngrams']['shared']:,}",
            f"{o['ngrams']['items']['count']:,}",
        )  # fmt: skip
    console.print(table)
    for o in report["overlaps"]:
        label = f"{o['file']} in {o['against']}"
        _examples(f"{label}: exact", o["exact"]["examples"])
        _examples(f"{label}: near", o["near"]["examples"])
        _examples(f"{label}: shared {n}-gram", o["ngrams"]["items"]["examples"])


def _fields(fields: Any) -> str:
    return ", ".join(fields) if isinstance(fields, list) else str(fields)


def _examples(label: str, examples: list[list[Any]]) -> None:
    console = stdout()
    for example in examples:
        console.print(plain(f"  {label}: " + " ~ ".join(str(part) for part in example)))
