"""Data integrity: duplicates and overlap on crafted data with known pairs, and a run's
`integrity:` (disjoint_from refuses, canaries are flagged and counted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import CliResult, base_config, read_results
from trialrun.integrity import check_data, jaccard, normalise, shingles

WORDS = [f"w{i}" for i in range(60)]
LONG = " ".join(WORDS)  # 60 words: 56 five-shingles, 48 thirteen-grams
LONG_B = " ".join([*WORDS[:-1], "other"])  # differs in its last word: Jaccard 55/57
LONG_C = " ".join([*WORDS[:-1], "third"])
SHORT = "The quick brown fox jumps over the lazy dog near the river bank today"  # 14 words
TAIL = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu"  # 13 words


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    a = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"id": "a1", "prompt": SHORT},
            {
                "id": "a2",
                "prompt": "  the QUICK brown fox jumps over\tthe lazy dog near the river bank TODAY ",
            },
            {"id": "a3", "prompt": LONG},
            {"id": "a4", "prompt": LONG_B},
            {"id": "a5", "prompt": f"one two three {TAIL} four five six seven"},
            {
                "id": "a6",
                "prompt": "Ｈｅｌｌｏ  ﬁne world",
            },  # NFKC: full-width letters, the fi ligature
            {"id": "a7", "prompt": "hello fine world"},
        ],
    )
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"id": "b1", "prompt": SHORT.upper()},
            {"id": "b2", "prompt": LONG_C},
            {"id": "b3", "prompt": f"nothing alike here {TAIL} and then something else entirely"},
            {"id": "b4", "prompt": "an unrelated question"},
        ],
    )
    return a, b


def test_normalisation_is_nfkc_casefold_and_whitespace() -> None:
    assert normalise("  Ｈｅｌｌｏ\t ﬁne\nWORLD ") == "hello fine world"
    assert normalise("Straße") == normalise("STRASSE")
    assert jaccard(shingles(LONG), shingles(LONG_B)) == pytest.approx(55 / 57)


def test_duplicates_exact_and_near_on_known_pairs(crafted: tuple[Path, Path]) -> None:
    a, _ = crafted
    report = check_data([a])
    found = report["files"][0]
    assert found["items"] == 7
    assert found["exact"]["count"] == 2  # a2 repeats a1, a7 repeats a6
    assert found["exact"]["groups"] == 2
    assert sorted(map(tuple, found["exact"]["examples"])) == [
        ("a.jsonl:a1", "a.jsonl:a2"),
        ("a.jsonl:a6", "a.jsonl:a7"),
    ]
    assert found["near"]["count"] == 1  # a3 ~ a4 only
    assert found["near"]["examples"][0] == ["a.jsonl:a3", "a.jsonl:a4", round(55 / 57, 3)]
    assert report["overlaps"] == []


def test_a_higher_threshold_drops_the_near_pair(crafted: tuple[Path, Path]) -> None:
    a, _ = crafted
    assert check_data([a], near=0.97)["files"][0]["near"]["count"] == 0


def test_overlap_exact_near_and_shared_ngrams(crafted: tuple[Path, Path]) -> None:
    a, b = crafted
    overlap = check_data([a], [b])["overlaps"][0]
    assert overlap["exact"]["count"] == 2  # a1 and a2 are b1
    assert overlap["near"]["count"] == 2  # a3 and a4 are each 55/57 like b2
    ngrams = overlap["ngrams"]
    # a1/a2 with b1: 2 thirteen-grams; a3/a4 with b2: the 47 before the last word; a5 with b3: 1
    assert ngrams["n"] == 13 and ngrams["shared"] == 2 + 47 + 1
    assert ngrams["items"]["count"] == 5  # a1..a5; a6 and a7 are shorter than 13 words
    assert check_data([a], [b], n=14)["overlaps"][0]["ngrams"]["shared"] == 1 + 46


def test_fields_choose_the_compared_text(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "q": "same", "label": "x"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "2", "q": "same", "label": "y"}])
    assert check_data([a], [b])["overlaps"][0]["exact"]["count"] == 0  # q and label differ
    assert check_data([a], [b], fields=["q"])["overlaps"][0]["exact"]["count"] == 1


def test_cli_check_data_table_json_and_exit_codes(
    crafted: tuple[Path, Path], tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    a, b = crafted
    result = cli("check-data", str(a), "--against", str(b))
    assert result.code == 1
    assert "exact duplicate: a.jsonl:a1 ~ a.jsonl:a2" in result.out
    assert "shared 13-grams" in result.out
    result = cli("check-data", str(a), "--against", str(b), "--json")
    report = json.loads(result.out)
    assert report["overlaps"][0]["exact"]["count"] == 2
    assert report["near"] == {"shingle_words": 5, "num_perm": 128, "threshold": 0.8}
    clean = write_jsonl(tmp_path / "clean.csv", [])
    clean.write_text("id,prompt\n1,first question here\n2,a second different one\n")
    assert cli("check-data", str(clean)).code == 0


def test_check_data_bad_input_is_one_line_exit_2(
    crafted: tuple[Path, Path], tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    a, _ = crafted
    result = cli("check-data", str(tmp_path / "nope.jsonl"))
    assert result.code == 2
    assert "nope.jsonl: no such dataset file" in result.err
    assert len(result.err.strip().splitlines()) == 1
    result = cli("check-data", str(a), "--near", "1.5")
    assert result.code == 2 and "--near 1.5" in result.err
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{oops\n')
    result = cli("check-data", str(tmp_path / "bad.jsonl"))
    assert result.code == 2 and "bad.jsonl:2: invalid JSON" in result.err


# ------------------------------------------------------------------ a run's integrity


def test_a_run_overlapping_disjoint_from_refuses_and_writes_nothing(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"id": "t1", "prompt": "IS CLAIM 2   true?"}])
    config = base_config(
        followups=[], integrity={"disjoint_from": ["train.jsonl"], "fields": ["prompt"]}
    )
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", "exp.yaml")
    assert result.code == 2
    assert "integrity.disjoint_from: 1 of 4 items overlap" in result.err
    assert "train.jsonl" in result.err and "'q2'" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "t1", "prompt": "Other"}) + "\n")
    assert cli("run", "exp.yaml", "-q").code == 0


def test_integrity_bad_input_is_one_line_exit_2(
    tmp_path: Path, cli: Callable[..., CliResult], write_config: Callable[..., Path]
) -> None:
    write_config(integrity={"disjoint_from": ["missing.jsonl"]})
    result = cli("run", "exp.yaml")
    assert result.code == 2
    assert "integrity.disjoint_from" in result.err and "missing.jsonl" in result.err
    for canaries in ([12345], [None], "CANARY", [""]):
        write_config(integrity={"canaries": canaries})
        result = cli("run", "exp.yaml")
        assert result.code == 2, canaries
        assert "integrity.canaries" in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_canaries_are_flagged_in_records_and_counted_in_status(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    # A graded mock answers item.answer exactly, so the canary reaches the response.
    items = [
        {"id": "q0", "prompt": "What is it?", "answer": "It is BIG-BENCH-CANARY-42 here"},
        {"id": "q1", "prompt": "And this?", "answer": "nothing to see"},
    ]
    config = base_config(
        dataset={"items": items},
        grid={},
        followups=[],
        mock={"answer": "{{ item.answer }}"},
        integrity={"canaries": ["BIG-BENCH-CANARY-42", "never-said"]},
    )
    run = trialrun.run(config)
    by_item = {r["item_id"]: r for r in read_results(run.path)}
    assert len(by_item) == 2
    records = read_results(run.path)
    flagged = [r for r in records if r["canaries"]]
    assert {r["item_id"] for r in flagged} == {"q0"}
    assert all(r["canaries"] == ["BIG-BENCH-CANARY-42"] for r in flagged)
    assert run.status()["canaries"] == 2  # q0 under each of the two mock models
    result = cli("status", str(run.path))
    assert "canaries: 2 records with a canary in a response" in result.out
    assert trialrun.run(base_config()).status()["canaries"] is None
