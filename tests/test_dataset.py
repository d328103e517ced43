"""Unit tests of dataset.py: JSON list, JSONL, CSV and inline items, and their errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trialrun.config import DatasetConfig
from trialrun.dataset import load_dataset
from trialrun.errors import DatasetError, UsageError
from trialrun.hashing import content_hash

ROWS = [
    {"id": "q1", "prompt": "Is the sky blue?", "category": "easy", "score": 0.5},
    {"id": "q2", "prompt": "Is 7 prime?", "category": "math", "tags": ["a", "b"]},
    {"id": "q3", "prompt": "Ünïcödé ✓", "category": "text", "meta": {"source": "x", "n": 3}},
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, name: str, **options: Any) -> list[dict[str, Any]]:
    return list(load_dataset(DatasetConfig(path=name, **options), tmp_path, "exp.yaml"))


def dataset_error(tmp_path: Path, name: str, **options: Any) -> str:
    with pytest.raises(DatasetError) as info:
        load(tmp_path, name, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- formats


def test_json_list_keeps_every_field(tmp_path: Path) -> None:
    write(tmp_path, "items.json", json.dumps(ROWS, indent=2))
    assert load(tmp_path, "items.json") == ROWS


def test_jsonl_skips_blank_lines_and_keeps_order(tmp_path: Path) -> None:
    text = "\n" + "\n\n".join(json.dumps(row) for row in ROWS) + "\n  \n"
    write(tmp_path, "items.jsonl", text)
    assert load(tmp_path, "items.jsonl") == ROWS


def test_ndjson_extension_reads_as_jsonl(tmp_path: Path) -> None:
    write(tmp_path, "items.ndjson", "\n".join(json.dumps(row) for row in ROWS))
    assert [item["id"] for item in load(tmp_path, "items.ndjson")] == ["q1", "q2", "q3"]


def test_csv_rows_become_items_of_strings(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", 'id,prompt,category\nq1,"Hello, world",a\nq2,Bye,b\n')
    assert load(tmp_path, "items.csv") == [
        {"id": "q1", "prompt": "Hello, world", "category": "a"},
        {"id": "q2", "prompt": "Bye", "category": "b"},
    ]


def test_csv_quoted_field_keeps_its_line_breaks(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", 'id,prompt\nq1,"first line\nsecond line"\nq2,one\n')
    assert load(tmp_path, "items.csv") == [
        {"id": "q1", "prompt": "first line\nsecond line"},
        {"id": "q2", "prompt": "one"},
    ]


def test_csv_with_byte_order_mark_still_finds_the_id_column(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes("id,prompt\nq1,x\n".encode("utf-8-sig"))
    assert load(tmp_path, "bom.csv") == [{"id": "q1", "prompt": "x"}]


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    write(tmp_path, "ITEMS.JSONL", json.dumps(ROWS[0]) + "\n")
    assert load(tmp_path, "ITEMS.JSONL") == [ROWS[0]]


def test_format_option_overrides_the_extension(tmp_path: Path) -> None:
    write(tmp_path, "items.txt", "\n".join(json.dumps(row) for row in ROWS))
    assert load(tmp_path, "items.txt", format="jsonl") == ROWS


def test_inline_items_keep_every_field() -> None:
    items = list(load_dataset(DatasetConfig(items=ROWS), Path("/nonexistent"), "exp.yaml"))
    assert items == ROWS


def test_relative_path_starts_at_the_base_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path, "data/items.jsonl", json.dumps(ROWS[0]))
    assert load(tmp_path, "data/items.jsonl") == [ROWS[0]]


def test_absolute_path_is_used_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, "items.json", json.dumps(ROWS))
    items = list(load_dataset(DatasetConfig(path=str(path)), Path("/nonexistent"), "exp.yaml"))
    assert items == ROWS


# ---------------------------------------------------------------- ids and limit


def test_custom_id_field_is_used_and_becomes_a_string(tmp_path: Path) -> None:
    rows = [{"prompt_id": 10, "prompt": "a"}, {"prompt_id": 11, "prompt": "b"}]
    write(tmp_path, "items.json", json.dumps(rows))
    items = load(tmp_path, "items.json", id="prompt_id")
    assert items == [{"prompt_id": "10", "prompt": "a"}, {"prompt_id": "11", "prompt": "b"}]


def test_custom_id_field_leaves_an_id_column_alone(tmp_path: Path) -> None:
    rows = [{"key": "k1", "id": 5}, {"key": "k2", "id": 5}]
    write(tmp_path, "items.json", json.dumps(rows))
    assert load(tmp_path, "items.json", id="key") == [
        {"key": "k1", "id": 5},
        {"key": "k2", "id": 5},
    ]


def test_limit_keeps_the_first_items_in_order(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", "\n".join(json.dumps({"id": f"i{n}"}) for n in range(10)))
    items = load(tmp_path, "items.jsonl", limit=3)
    assert [item["id"] for item in items] == ["i0", "i1", "i2"]


def test_limit_larger_than_the_dataset_keeps_everything(tmp_path: Path) -> None:
    write(tmp_path, "items.json", json.dumps(ROWS))
    assert load(tmp_path, "items.json", limit=100) == ROWS


def test_limit_applies_to_inline_items() -> None:
    items = list(load_dataset(DatasetConfig(items=ROWS, limit=2), Path("."), "exp.yaml"))
    assert [item["id"] for item in items] == ["q1", "q2"]


# ---------------------------------------------------------------- errors


def test_missing_file_is_named(tmp_path: Path) -> None:
    message = dataset_error(tmp_path, "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in message
    assert "not found" in message


def test_dataset_error_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load(tmp_path, "nope.jsonl")
    assert info.value.exit_code == 2


def test_invalid_jsonl_line_names_its_line_number_counting_blank_lines(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a"}\n\n{"id": "b"}\n{"id": "c", oops}\n')
    message = dataset_error(tmp_path, "items.jsonl")
    assert message.startswith(f"{tmp_path / 'items.jsonl'}:4: invalid JSON")


def test_invalid_json_list_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "items.json", '[\n  {"id": "a"},\n  {"id": "b",}\n]\n')
    message = dataset_error(tmp_path, "items.json")
    assert message.startswith(f"{tmp_path / 'items.json'}:3: invalid JSON")


def test_json_file_that_is_not_a_list_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "items.json", '{"id": "a"}')
    assert "expected a JSON list of objects" in dataset_error(tmp_path, "items.json")


def test_jsonl_row_without_the_id_field_names_the_line_and_field(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a"}\n{"key": "b"}\n')
    message = dataset_error(tmp_path, "items.jsonl")
    assert message.startswith(f"{tmp_path / 'items.jsonl'}:2:")
    assert "no id field 'id'" in message
    assert "dataset.id" in message


@pytest.mark.parametrize("value", ["null", '""'])
def test_empty_or_null_id_counts_as_missing(tmp_path: Path, value: str) -> None:
    write(tmp_path, "items.jsonl", f'{{"id": {value}}}\n')
    assert "no id field 'id'" in dataset_error(tmp_path, "items.jsonl")


def test_custom_id_field_missing_is_named(tmp_path: Path) -> None:
    write(tmp_path, "items.json", json.dumps(ROWS))
    assert "no id field 'prompt_id'" in dataset_error(tmp_path, "items.json", id="prompt_id")


def test_csv_row_without_id_names_its_line(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", "id,prompt\na,x\n,y\n")
    message = dataset_error(tmp_path, "items.csv")
    assert message.startswith(f"{tmp_path / 'items.csv'}:3:")
    assert "no id field 'id'" in message


def test_csv_error_line_counts_blank_lines(tmp_path: Path) -> None:
    """The line named is the file's line: blank lines before the bad row still count."""
    write(tmp_path, "items.csv", "id,prompt\na,x\n\nb,y\n\n,z\n")
    message = dataset_error(tmp_path, "items.csv")
    assert message.startswith(f"{tmp_path / 'items.csv'}:6:")


def test_csv_error_line_counts_multiline_fields(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", 'id,prompt\na,"two\nlines"\n,z\n')
    message = dataset_error(tmp_path, "items.csv")
    assert message.startswith(f"{tmp_path / 'items.csv'}:4:")


def test_csv_row_with_more_cells_than_columns_is_rejected(tmp_path: Path) -> None:
    """A row wider than the header would give an item a `None` key; name the line instead."""
    write(tmp_path, "items.csv", "id,prompt\na,x\nb,y,extra\n")
    message = dataset_error(tmp_path, "items.csv")
    assert message.startswith(f"{tmp_path / 'items.csv'}:3:")


def test_duplicate_ids_name_both_places_in_jsonl(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a"}\n{"id": "b"}\n\n{"id": "a"}\n')
    path = tmp_path / "items.jsonl"
    message = dataset_error(tmp_path, "items.jsonl")
    assert message.startswith(f"{path}:4: duplicate item id 'a'")
    assert f"first at {path}:1" in message


def test_ids_that_differ_only_in_type_are_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "items.json", '[{"id": 1}, {"id": "1"}]')
    message = dataset_error(tmp_path, "items.json")
    assert "duplicate item id '1'" in message
    assert "item 1" in message
    assert "item 0" in message


def test_duplicate_inline_ids_name_both_items() -> None:
    cfg = DatasetConfig(items=[{"id": "a"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(DatasetError) as info:
        list(load_dataset(cfg, Path("."), "exp.yaml"))
    message = str(info.value)
    assert "exp.yaml: dataset.items[2]: duplicate item id 'a'" in message
    assert "first at exp.yaml: dataset.items[0]" in message


def test_duplicate_beyond_the_limit_is_still_an_error(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    assert "duplicate item id 'a'" in dataset_error(tmp_path, "items.jsonl", limit=1)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("items.jsonl", ""),
        ("items.jsonl", "\n\n  \n"),
        ("items.json", "[]"),
        ("items.csv", "id,prompt\n"),
        ("items.csv", ""),
    ],
)
def test_empty_dataset_is_rejected(tmp_path: Path, name: str, text: str) -> None:
    write(tmp_path, name, text)
    message = dataset_error(tmp_path, name)
    assert message.startswith(str(tmp_path / name))
    assert "no items" in message


def test_empty_inline_items_are_rejected() -> None:
    with pytest.raises(DatasetError, match=r"exp\.yaml: dataset\.items: the dataset has no items"):
        list(load_dataset(DatasetConfig(items=[]), Path("."), "exp.yaml"))


@pytest.mark.parametrize(("line", "kind"), [("[1, 2]", "list"), ("5", "int"), ('"text"', "str")])
def test_row_that_is_not_an_object_names_line_and_type(
    tmp_path: Path, line: str, kind: str
) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a"}\n' + line + "\n")
    message = dataset_error(tmp_path, "items.jsonl")
    assert message.startswith(f"{tmp_path / 'items.jsonl'}:2:")
    assert f"expected an object with fields, got {kind}" in message


def test_json_list_entry_that_is_not_an_object_names_its_index(tmp_path: Path) -> None:
    write(tmp_path, "items.json", '[{"id": "a"}, null]')
    message = dataset_error(tmp_path, "items.json")
    assert "item 1" in message
    assert "got NoneType" in message


def test_unknown_extension_is_rejected_with_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "items.txt", '{"id": "a"}\n')
    message = dataset_error(tmp_path, "items.txt")
    assert message.startswith(str(tmp_path / "items.txt"))
    assert "'.txt'" in message
    assert ".jsonl" in message
    assert "dataset.format" in message


def test_undecodable_file_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_bytes(b'{"id": "\xff\xfe"}\n')
    message = dataset_error(tmp_path, "items.jsonl")
    assert "cannot read dataset" in message


# ---------------------------------------------------------------- held compactly


def test_content_hash_is_the_hash_of_the_item_list(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", "\n".join(json.dumps(row) for row in ROWS))
    dataset = load_dataset(DatasetConfig(path="items.jsonl"), tmp_path, "exp.yaml")
    assert dataset.content_hash() == content_hash(ROWS)
    assert dataset.ids == ["q1", "q2", "q3"]
    assert [json.loads(text) for _, text in dataset.encoded()] == ROWS


def test_values_json_reads_but_orjson_does_not_survive(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a", "big": 123456789012345678901234567890, "x": NaN}\n')
    (item,) = load(tmp_path, "items.jsonl")
    assert item["big"] == 123456789012345678901234567890
    assert item["x"] != item["x"]  # NaN


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    row = {"id": "a", "prompt": "one\u2028two\u0085three\x1cfour"}
    write(tmp_path, "items.jsonl", json.dumps(row, ensure_ascii=False) + "\n")
    assert load(tmp_path, "items.jsonl") == [row]


def test_each_kept_item_is_checked_with_where_it_was_read(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"id": "a"}\n\n{"id": "b"}\n')
    seen: list[tuple[str, str]] = []
    load_dataset(
        DatasetConfig(path="items.jsonl"),
        tmp_path,
        "exp.yaml",
        lambda item, where: seen.append((item["id"], where)),
    )
    path = tmp_path / "items.jsonl"
    assert seen == [("a", f"{path}:1"), ("b", f"{path}:3")]


def test_release_drops_the_rows(tmp_path: Path) -> None:
    dataset = load_dataset(DatasetConfig(items=ROWS), tmp_path, "exp.yaml")
    dataset.release()
    assert len(dataset) == 0
    assert list(dataset) == []
