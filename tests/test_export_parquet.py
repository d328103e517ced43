"""`export --format parquet`, `--partition-by FIELD` and `Run.to_pandas()`: a round trip of
every record with scores and verdicts as typed columns, one file per value, and one-line
refusals (no pyarrow, no such column, no output)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult, only_run, read_results
from trialrun import api

pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is in the dev extra")
pd = pytest.importorskip("pandas", reason="pandas comes with the dev extra")

Cli = Callable[..., CliResult]


def _run(cli: Cli, write_config: Callable[..., Path], tmp_path: Path) -> Path:
    items = [
        {"id": f"q{i}", "prompt": f"What is {i} + 1?" + (" [[mock:refuse]]" if i == 2 else ""),
         "answer": str(i + 1), "concept": "fruit/apple" if i % 2 else "tree"}
        for i in range(10)
    ]  # fmt: skip
    write_config(
        dataset={"items": items},
        models=[{"model": "mock/alpha"}, {"model": "mock/beta", "options": {"accuracy": 0.4}}],
        grid={"layer": [1, 2]},
        followups=[],
        messages=[{"role": "user", "content": "{{ item.prompt }}"}],
        mock={"answer": "{{ item.answer }}", "accuracy": 0.7},
        scores={"exact": {"equals": "{{ item.answer }}"}},
        judge={"model": "mock/judge", "prompt": "Grade: {{ response }}",
               "schema": {"answer": ["pass", "fail"], "confidence": "float"}},
    )  # fmt: skip
    assert cli("run", "exp.yaml").code == 3  # the refused item fails
    return only_run(tmp_path / "runs")


def test_parquet_round_trip_keeps_every_record_with_typed_scores_and_verdicts(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    records = read_results(run)
    result = cli("export", str(run), "--format", "parquet", "-o", "out.parquet")
    assert result.code == 0, result.err
    table = pq.read_table(tmp_path / "out.parquet")
    types = {field.name: str(field.type) for field in table.schema}
    assert types["scores.exact"] == "bool" and types["grid.layer"] == "int64"
    assert types["judge.answer"] == "string" and types["judge.confidence"] == "double"
    assert types["cost_usd"] == "double" and types["input_tokens"] == "int64"
    rows = table.to_pylist()
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in records]
    for row, record in zip(rows, records, strict=True):
        assert row["status"] == record["status"]
        assert row["scores.exact"] == record["scores"]["exact"]
        verdict = record["judge"] or {}
        assert row["judge.answer"] == verdict.get("answer")
        assert row["judge.confidence"] == verdict.get("confidence")
        assert row["item.concept"] == record["item"]["concept"]
    assert any(r["status"] == "failed" and r["scores.exact"] is None for r in rows)


def test_to_pandas_is_the_parquet_table(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    assert cli("export", str(run), "--format", "parquet", "-o", "out.parquet").code == 0
    frame = api.open_run(run).to_pandas()
    assert len(frame) == len(read_results(run))
    pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "out.parquet"))
    assert frame.groupby("model")["scores.exact"].count().to_dict() == {
        "mock/alpha": 18, "mock/beta": 18,
    }  # fmt: skip  # 20 trials each, 2 failed: null


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_partition_by_writes_one_file_per_value(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, fmt: str
) -> None:
    run = _run(cli, write_config, tmp_path)
    records = read_results(run)
    result = cli("export", str(run), "--format", fmt, "--partition-by", "item.concept",
                 "-o", "parts")  # fmt: skip
    assert result.code == 0, result.err
    files = sorted(p.name for p in (tmp_path / "parts").iterdir())
    assert files == [f"fruit_apple.{fmt}", f"tree.{fmt}"]  # "/" made safe; no temp left
    seen: list[str] = []
    for name, concept in ((files[0], "fruit/apple"), (files[1], "tree")):
        path = tmp_path / "parts" / name
        if fmt == "jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert {r["item"]["concept"] for r in rows} == {concept}
        elif fmt == "csv":
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert {r["item.concept"] for r in rows} == {concept}
        else:
            rows = pq.read_table(path).to_pylist()
            assert {r["item.concept"] for r in rows} == {concept}
        seen += [r["trial_id"] for r in rows]
    assert sorted(seen) == sorted(r["trial_id"] for r in records)


def test_export_refusals_are_one_line(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(cli, write_config, tmp_path)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("--format", "parquet"), "give -o FILE"),
        (("--partition-by", "grid.nope", "-o", "p"), "--partition-by grid.nope: no such column"),
        (("--partition-by", "model"), "give -o FOLDER"),
    ]
    for args, message in cases:
        result = cli("export", str(run), *args)
        assert result.code == 2 and message in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    result = cli("export", str(run), "--format", "parquet", "-o", "x.parquet")
    assert result.code == 2 and "pip install 'trialrun[parquet]'" in result.err
    assert not (tmp_path / "x.parquet").exists()
