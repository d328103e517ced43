"""Human annotation: blinded sheets out, labels in (all or nothing), agreement out.

The round trip runs a graded mock with a mock judge, fills the exported sheets in code
(a coder who marks a response `pass` when it equals the item's answer), imports them and
checks the agreement against counts made here from the files and the run's records, and
kappa against statsmodels and a textbook table.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa

from conftest import CliResult, only_run, read_results
from trialrun.annotation import rogan_gladen
from trialrun.annotation.agreement import accuracy
from trialrun.runs import Run
from trialrun.verdicts import VerdictField

Cli = Callable[..., CliResult]
JUDGE = {
    "model": "mock/judge",
    "prompt": "Grade: {{ response }}",
    "schema": {"answer": ["pass", "fail"]},
}
RICH = "{answer: [pass, fail], coherent: bool, score: {type: int, min: 1, max: 5}, note: str}"


def make_run(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, *, items: int = 60, **changes: Any
) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(items)
    ]
    config: dict[str, Any] = {
        "dataset": {"items": rows},
        "models": [{"model": "mock/alpha"}],
        "grid": {"temperature": [0.3]},
        "followups": [],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "mock": {"answer": "{{ item.answer }}", "accuracy": 0.7},
        "cache": {"enabled": False},
        **changes,
    }
    write_config(**config)
    result = cli("run", "exp.yaml")
    assert result.code == 0, result.err
    return only_run(tmp_path / "runs")


def read_sheet(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_sheet(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> None:
    names = columns or list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def fill(path: Path, label: Callable[[dict[str, str]], dict[str, str]]) -> list[dict[str, str]]:
    """Fill a CSV sheet's label columns with `label(row)`; returns the filled rows."""
    rows = read_sheet(path)
    for row in rows:
        row.update(label(row))
    write_sheet(path, rows)
    return rows


def truth(row: dict[str, str]) -> dict[str, str]:
    """A careful coder: pass when the response is the item's answer."""
    return {"answer": "pass" if row["turn_1_response"] == row["item.answer"] else "fail"}


def sloppy(row: dict[str, str]) -> dict[str, str]:
    """A coder who gets the items whose number ends in 3 or 7 the wrong way round."""
    right = truth(row)["answer"]
    flipped = {"pass": "fail", "fail": "pass"}[right]
    return {"answer": flipped if row["item_id"][-1] in "37" else right}


def sheet_key(run: Path, sheet: str) -> dict[str, str]:
    """The sheet's row id -> trial id map, read from the store (the test may look)."""
    with Run(run).store() as store:
        found = store.sheet(sheet)
    assert found is not None
    return found.rows


def annotations(run: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run / "trialrun.db") as conn:
        return conn.execute(
            "SELECT trial_id, coder, sheet, row_id, labels FROM annotations ORDER BY coder, trial_id"
        ).fetchall()


def one_line_error(result: CliResult) -> str:
    assert result.code == 2, (result.out, result.err)
    assert len(result.err.strip().splitlines()) == 1, result.err
    return result.err


# ---------------------------------------------------------------- the round trip


def test_round_trip_export_fill_import_agreement_with_the_mock_judge(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, judge=JUDGE)
    result = cli(
        "annotate",
        "export",
        str(run),
        "--coders",
        "2",
        "--n",
        "40",
        "--overlap",
        "20",
        "--seed",
        "5",
    )
    assert result.code == 0, result.err
    folder = run / "annotation"
    one, two = folder / "coder1-1.csv", folder / "coder2-1.csv"
    assert len(read_sheet(one)) == len(read_sheet(two)) == 20 + 10  # overlap + half the rest
    keys = {name: sheet_key(run, name) for name in ("coder1-1", "coder2-1")}
    assert len(set(keys["coder1-1"].values()) | set(keys["coder2-1"].values())) == 40
    shared = set(keys["coder1-1"].values()) & set(keys["coder2-1"].values())
    assert len(shared) == 20
    rows1, rows2 = fill(one, truth), fill(two, sloppy)

    assert cli("annotate", "import", str(run), str(one)).code == 0
    imported = cli("annotate", "import", str(run), str(two), "--coder", "coder2")
    assert imported.code == 0 and "30 rows imported" in imported.out

    report = json.loads(cli("annotate", "agreement", str(run), "--json").out)
    assert report["raters"] == {"coder1": 30, "coder2": 30, "judge:judge": 60}
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    humans = pairs[("coder1", "coder2")]
    by_trial = [
        {keys[sheet][r["row_id"]]: r["answer"] for r in rows}
        for sheet, rows in (("coder1-1", rows1), ("coder2-1", rows2))
    ]
    table = [[0, 0], [0, 0]]
    for trial in shared:
        table[["pass", "fail"].index(by_trial[0][trial])][
            ["pass", "fail"].index(by_trial[1][trial])
        ] += 1
    assert humans["n"] == 20 and humans["labels"] == ["pass", "fail"] and humans["table"] == table
    oracle = sm_cohens_kappa(np.array(table))
    assert humans["kappa"] == pytest.approx(oracle.kappa)
    assert humans["kappa_low"] == pytest.approx(oracle.kappa_low)
    assert humans["kappa_high"] == pytest.approx(oracle.kappa_upp)
    assert humans["percent_agreement"] == pytest.approx((table[0][0] + table[1][1]) / 20)

    # the judge against coder1, counted here from the records
    verdicts = {r["trial_id"]: r["judges"]["judge"]["answer"] for r in read_results(run)}
    judged = [
        j for j in report["judges"] if j["judge"] == "judge:judge" and j["reference"] == "coder1"
    ]
    assert len(judged) == 1
    j = judged[0]
    human = by_trial[0]
    tp = sum(human[t] == "pass" and verdicts[t] == "pass" for t in human)
    fn = sum(human[t] == "pass" and verdicts[t] == "fail" for t in human)
    fp = sum(human[t] == "fail" and verdicts[t] == "pass" for t in human)
    tn = sum(human[t] == "fail" and verdicts[t] == "fail" for t in human)
    assert (j["true_positive"], j["false_negative"], j["false_positive"], j["true_negative"]) == (
        tp,
        fn,
        fp,
        tn,
    )
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    rate = sum(v == "pass" for v in verdicts.values()) / len(verdicts)
    assert j["positive"] == "pass" and j["sensitivity"] == pytest.approx(sens)
    assert j["specificity"] == pytest.approx(spec)
    assert j["judged_rate"] == pytest.approx(rate) and j["judged_n"] == 60
    expected = None if sens + spec <= 1 else min(1, max(0, (rate + spec - 1) / (sens + spec - 1)))
    assert j["corrected_rate"] == (None if expected is None else pytest.approx(expected))

    text = cli("annotate", "agreement", str(run))
    assert text.code == 0 and "coder1" in text.out and "Rogan-Gladen" in text.out


def test_the_schema_comes_from_the_option_when_the_run_has_no_judge(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=10)
    result = cli(
        "annotate",
        "export",
        str(run),
        "--coders",
        "alice,bob",
        "--n",
        "6",
        "--overlap",
        "2",
        "--schema",
        RICH,
    )
    assert result.code == 0, result.err
    header = read_sheet(run / "annotation" / "alice-1.csv")[0]
    assert list(header)[-4:] == ["answer", "coherent", "score", "note"]
    codebook = (run / "annotation" / "codebook.md").read_text()
    assert "pass, fail" in codebook and "true, false" in codebook and "from 1 to 5" in codebook
    jsonl = [
        json.loads(line) for line in (run / "annotation" / "bob-1.jsonl").read_text().splitlines()
    ]
    assert [r["row_id"] for r in jsonl] == [
        r["row_id"] for r in read_sheet(run / "annotation" / "bob-1.csv")
    ]
    assert len(jsonl) == 2 + 2 and all(r["answer"] is None for r in jsonl)


# ---------------------------------------------------------------- blinding


def test_sheets_are_blinded_and_shuffled_per_coder(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, judge=JUDGE, grid={"temperature": [0.3, 0.9]})
    assert (
        cli(
            "annotate",
            "export",
            str(run),
            "--coders",
            "3",
            "--n",
            "30",
            "--overlap",
            "30",
            "--seed",
            "1",
        ).code
        == 0
    )
    records = read_results(run)
    texts = {p.name: p.read_text() for p in (run / "annotation").iterdir()}
    assert sorted(texts) == sorted(
        ["codebook.md", *(f"coder{k}-1.{ext}" for k in (1, 2, 3) for ext in ("csv", "jsonl"))]
    )
    for name, text in texts.items():
        for record in records:
            assert record["trial_id"] not in text, name
        for secret in ("mock/alpha", "alpha", "temperature", "0.9", "judge", "seed"):
            assert secret not in text, (name, secret)
    columns = list(read_sheet(run / "annotation" / "coder1-1.csv")[0])
    assert columns == [
        "row_id",
        "item_id",
        "item.answer",
        "item.prompt",
        "turn_1_response",
        "answer",
    ]
    orders = []
    for k in (1, 2, 3):
        rows = read_sheet(run / "annotation" / f"coder{k}-1.csv")
        assert [r["row_id"] for r in rows] == [f"r{i:04d}" for i in range(1, 31)]
        key = sheet_key(run, f"coder{k}-1")
        orders.append([key[r["row_id"]] for r in rows])
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2])  # all overlap
    assert orders[0] != orders[1] and orders[1] != orders[2]
    # the same seed draws the same trials again (a second export, new sheet names)
    assert (
        cli(
            "annotate",
            "export",
            str(run),
            "--coders",
            "3",
            "--n",
            "30",
            "--overlap",
            "30",
            "--seed",
            "1",
        ).code
        == 0
    )
    again = sheet_key(run, "coder1-2")
    assert [again[f"r{i:04d}"] for i in range(1, 31)] == orders[0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda rows: rows[2].update(answer="Pass"), "column 'answer': expected pass, fail"),
        (
            lambda rows: rows[2].update(coherent="yes"),
            "column 'coherent': expected true or false, not 'yes'",
        ),
        (
            lambda rows: rows[2].update(score="6"),
            "column 'score': expected a whole number from 1 to 5",
        ),
        (lambda rows: rows[2].update(score="2.5"), "column 'score': expected a whole number"),
        (
            lambda rows: rows[2].update(row_id="r9999"),
            "row r9999 (line 4), column 'row_id': not a row",
        ),
        (lambda rows: rows[2].update(coherent=""), "column 'coherent': empty"),
        (lambda rows: rows[3].update(row_id=rows[0]["row_id"]), "row_id given twice"),
    ],
)
def test_a_bad_row_stops_the_import_naming_row_and_column_and_stores_nothing(
    cli: Cli,
    write_config: Callable[..., Path],
    tmp_path: Path,
    change: Callable[[list[dict[str, str]]], None],
    expected: str,
) -> None:
    run = make_run(cli, write_config, tmp_path, items=12)
    assert (
        cli("annotate", "export", str(run), "--n", "8", "--overlap", "8", "--schema", RICH).code
        == 0
    )
    good = {"answer": "pass", "coherent": "TRUE", "score": " 3 ", "note": ""}
    fill(run / "annotation" / "coder2-1.csv", lambda row: good)
    assert cli("annotate", "import", str(run), str(run / "annotation" / "coder2-1.csv")).code == 0
    before = annotations(run)
    assert len(before) == 8 and json.loads(before[0][4]) == {
        "answer": "pass",
        "coherent": True,
        "score": 3,
        "note": "",
    }

    path = run / "annotation" / "coder1-1.csv"
    rows = fill(path, lambda row: good)
    change(rows)
    write_sheet(path, rows)
    err = one_line_error(cli("annotate", "import", str(run), str(path)))
    assert str(path) in err and expected in err
    if "r9999" not in expected and "twice" not in expected:
        assert f"row {rows[2]['row_id']} (line 4)" in err
    assert annotations(run) == before


def test_a_missing_label_column_or_a_jsonl_missing_key_is_refused(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=6)
    assert (
        cli("annotate", "export", str(run), "--n", "4", "--overlap", "4", "--schema", RICH).code
        == 0
    )
    path = run / "annotation" / "coder1-1.csv"
    rows = fill(path, lambda row: {"answer": "fail", "coherent": "false", "score": "1"})
    write_sheet(path, rows, [c for c in rows[0] if c != "coherent"])
    err = one_line_error(cli("annotate", "import", str(run), str(path)))
    assert "missing column 'coherent'" in err
    jsonl = run / "annotation" / "coder1-1.jsonl"
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    del lines[1]["score"]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    err = one_line_error(cli("annotate", "import", str(run), str(jsonl)))
    assert f"row {lines[1]['row_id']} (line 2), column 'score': missing" in err
    assert annotations(run) == []


def test_export_refuses_impossible_requests_and_writes_nothing(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=5)
    schema = ["--schema", "{answer: [pass, fail]}"]
    cases = [
        (["--n", "6", *schema], "--n: 6 is more than the run's 5 done trials"),
        (["--n", "3", "--overlap", "4", *schema], "--overlap: 4 must be between 0 and --n (3)"),
        (["--n", "3", "--coders", "0", *schema], "--coders: 0 coders"),
        (["--n", "3"], "has no judge to take the label fields from"),
        (
            ["--n", "3", "--schema", "{answer: [pass]}"],
            "--schema.answer: an enum needs at least two",
        ),
        (["--n", "3", "--coders", "a,adjudicated", *schema], "kept for adjudicated labels"),
    ]
    for args, expected in cases:
        err = one_line_error(cli("annotate", "export", str(run), *args))
        assert expected in err
    assert not (run / "annotation").exists()
    with Run(run).store() as store:
        assert store.sheets() == []


def test_an_unknown_sheet_is_refused(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=4)
    stray = tmp_path / "labels.csv"
    stray.write_text("row_id,answer\nr0001,pass\n")
    assert "no sheet named 'labels'" in one_line_error(
        cli("annotate", "import", str(run), str(stray))
    )


# ---------------------------------------------------------------- re-import, adjudication


def test_importing_again_replaces_that_coders_labels(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=10)
    assert (
        cli(
            "annotate",
            "export",
            str(run),
            "--n",
            "6",
            "--overlap",
            "6",
            "--schema",
            "{answer: [pass, fail]}",
        ).code
        == 0
    )
    path = run / "annotation" / "coder1-1.csv"
    fill(path, lambda row: {"answer": "pass"})
    assert cli("annotate", "import", str(run), str(path)).code == 0
    fill(path, lambda row: {"answer": "fail" if row["row_id"] in ("r0001", "r0002") else ""})
    result = cli("annotate", "import", str(run), str(path))
    assert (
        result.code == 0
        and "2 rows imported" in result.out
        and "4 empty rows skipped" in result.out
    )
    stored = {row[3]: json.loads(row[4])["answer"] for row in annotations(run)}
    assert len(annotations(run)) == 6  # replaced, not added; skipped rows keep their labels
    assert stored == {f"r000{k}": "fail" if k <= 2 else "pass" for k in range(1, 7)}


def test_disagreements_go_to_adjudication_and_come_back_beside_the_coders(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=30)
    assert (
        cli(
            "annotate",
            "export",
            str(run),
            "--n",
            "30",
            "--overlap",
            "30",
            "--schema",
            "{answer: [pass, fail]}",
        ).code
        == 0
    )
    folder = run / "annotation"
    fill(folder / "coder1-1.csv", truth)
    fill(folder / "coder2-1.csv", sloppy)
    for k in (1, 2):
        assert cli("annotate", "import", str(run), str(folder / f"coder{k}-1.csv")).code == 0
    result = cli("annotate", "disagreements", str(run), "--coders", "coder1,coder2")
    assert result.code == 0, result.err
    sheet = folder / "adjudicated-1.csv"
    rows = read_sheet(sheet)
    flipped = [r for r in read_results(run) if r["item_id"][-1] in "37"]
    key = sheet_key(run, "adjudicated-1")
    assert sorted(key.values()) == sorted(r["trial_id"] for r in flipped)
    assert list(rows[0])[-3:] == ["answer.coder1", "answer.coder2", "answer"]
    assert all(r["answer.coder1"] != r["answer.coder2"] and r["answer"] == "" for r in rows)
    assert not any(t in sheet.read_text() for t in key.values())
    fill(sheet, truth)
    assert cli("annotate", "import", str(run), str(sheet)).code == 0
    stored = [row for row in annotations(run) if row[1] == "adjudicated"]
    assert len(stored) == len(flipped)
    report = json.loads(cli("annotate", "agreement", str(run), "--json").out)
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert pairs[("coder1", "adjudicated")]["percent_agreement"] == 1.0
    assert pairs[("coder2", "adjudicated")]["percent_agreement"] == 0.0
    assert pairs[("coder1", "coder2")]["n"] == 30


# ---------------------------------------------------------------- the statistics


def test_kappa_through_the_pipeline_matches_the_textbook_table(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # Wikipedia, "Cohen's kappa", worked example: 50 proposals read by A and B;
    # yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4.
    run = make_run(cli, write_config, tmp_path, items=50)
    assert (
        cli(
            "annotate",
            "export",
            str(run),
            "--n",
            "50",
            "--overlap",
            "50",
            "--schema",
            "{read: ['yes', 'no']}",
        ).code
        == 0
    )
    cells = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    trials = sorted(sheet_key(run, "coder1-1").values())
    wanted = dict(zip(trials, cells, strict=True))
    for k in (1, 2):
        key = sheet_key(run, f"coder{k}-1")
        fill(
            run / "annotation" / f"coder{k}-1.csv",
            lambda row, k=k, key=key: {"read": wanted[key[row["row_id"]]][k - 1]},
        )
        assert (
            cli("annotate", "import", str(run), str(run / "annotation" / f"coder{k}-1.csv")).code
            == 0
        )
    pair = json.loads(cli("annotate", "agreement", str(run), "--json", "--field", "read").out)[
        "pairs"
    ][0]
    assert pair["table"] == [[20, 5], [10, 15]]
    assert pair["kappa"] == pytest.approx(0.4) and pair["percent_agreement"] == pytest.approx(0.7)
    oracle = sm_cohens_kappa(np.array(pair["table"]))
    assert pair["kappa_se"] == pytest.approx(oracle.std_kappa)
    assert (pair["kappa_low"], pair["kappa_high"]) == pytest.approx(
        (oracle.kappa_low, oracle.kappa_upp)
    )


def test_rogan_gladen_against_a_hand_computation() -> None:
    # judged rate 0.3, sensitivity 0.9, specificity 0.8: (0.3 + 0.8 - 1) / (0.9 + 0.8 - 1)
    assert rogan_gladen(0.3, 0.9, 0.8) == pytest.approx(0.1 / 0.7)
    assert rogan_gladen(0.1, 0.9, 0.8) == 0.0  # (0.1 - 0.2) / 0.7 < 0: clipped
    assert rogan_gladen(0.99, 0.6, 0.99) == 1.0  # (0.98) / 0.59 > 1: clipped
    assert rogan_gladen(0.5, 0.5, 0.5) is None  # a judge no better than chance


def test_judge_accuracy_counts_and_its_seeded_bootstrap() -> None:
    field = VerdictField("ok", "bool")
    # 10 labelled trials: humans say true for t0..t3; the judge says true for t0..t2 and t4
    human = {f"t{i}": {"ok": i < 4} for i in range(10)}
    judge = {f"t{i}": {"ok": i in (0, 1, 2, 4)} for i in range(10)}
    judge.update({f"u{i}": {"ok": i < 6} for i in range(30)})  # judged only: 10 of 40 true
    found = accuracy(field, "judge:j", judge, "alice", human, seed=3, resamples=500)
    assert (
        found.true_positive,
        found.false_negative,
        found.false_positive,
        found.true_negative,
    ) == (3, 1, 1, 5)
    assert found.sensitivity == pytest.approx(0.75) and found.specificity == pytest.approx(5 / 6)
    assert found.judged_rate == pytest.approx(10 / 40) and found.judged_n == 40
    assert found.corrected_rate == pytest.approx((0.25 + 5 / 6 - 1) / (0.75 + 5 / 6 - 1))
    assert found.corrected_low is not None and found.corrected_high is not None
    assert 0 <= found.corrected_low <= found.corrected_rate <= found.corrected_high <= 1
    again = accuracy(field, "judge:j", judge, "alice", human, seed=3, resamples=500)
    assert (again.corrected_low, again.corrected_high) == (
        found.corrected_low,
        found.corrected_high,
    )


def test_a_renamed_sheet_imports_with_sheet_and_disagreements_go_where_asked(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(cli, write_config, tmp_path, items=20)
    schema = "{answer: [pass, fail], note: str}"
    assert (
        cli("annotate", "export", str(run), "--n", "20", "--overlap", "20", "--schema", schema).code
        == 0
    )
    folder = run / "annotation"
    renamed = tmp_path / "alice-labels.csv"
    fill(folder / "coder1-1.csv", lambda row: {**truth(row), "note": "seen"})
    (folder / "coder1-1.csv").rename(renamed)
    assert "no sheet named 'alice-labels'" in one_line_error(
        cli("annotate", "import", str(run), str(renamed))
    )
    assert cli("annotate", "import", str(run), str(renamed), "--sheet", "coder1-1").code == 0
    fill(folder / "coder2-1.csv", lambda row: {**truth(row), "note": "other words"})
    assert cli("annotate", "import", str(run), str(folder / "coder2-1.csv")).code == 0
    # free text differs on every row, but only categories count as disagreements
    none = cli("annotate", "disagreements", str(run))
    assert none.code == 0 and "no disagreements" in none.out
    fill(folder / "coder2-1.csv", lambda row: {**sloppy(row), "note": ""})
    assert cli("annotate", "import", str(run), str(folder / "coder2-1.csv")).code == 0
    target = tmp_path / "to-adjudicate.csv"
    assert cli("annotate", "disagreements", str(run), "-o", str(target)).code == 0
    assert target.exists() and (tmp_path / "to-adjudicate.jsonl").exists()
    assert len(read_sheet(target)) == len(sheet_key(run, "to-adjudicate")) == 4  # q3, q7, q13, q17
    err = one_line_error(cli("annotate", "agreement", str(run), "--field", "nope"))
    assert "--field: no field 'nope'" in err
    report = json.loads(cli("annotate", "agreement", str(run), "--json").out)
    assert report["skipped_fields"] == ["note"] and [f["name"] for f in report["fields"]] == [
        "answer"
    ]
