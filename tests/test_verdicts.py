"""Verdict schemas: the compact form, its wire forms for OpenAI and Gemini, and replies checked."""

from __future__ import annotations

import json
import keyword
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialrun.errors import ConfigError, TrialrunError
from trialrun.verdicts import (
    VerdictError,
    VerdictField,
    VerdictSchema,
    extract_json,
    parse_verdict,
)

SPEC: dict[str, Any] = {
    "answer": ["pass", "fail"],
    "coherent": "bool",
    "detected_concept": "str",
    "reasoning": "str",
    "confidence": {"type": "float", "min": 0, "max": 1},
    "score": {"type": "int", "min": 1, "max": 5},
}
GOOD: dict[str, Any] = {
    "answer": "pass",
    "coherent": True,
    "detected_concept": "bread",
    "reasoning": "it says bread",
    "confidence": 0.9,
    "score": 4,
}
FAST = settings(max_examples=80, deadline=None)


def schema(spec: dict[str, Any] | None = None) -> VerdictSchema:
    return VerdictSchema.parse(SPEC if spec is None else spec, "judge")


def reason(value: Any, spec: dict[str, Any] | None = None) -> str:
    with pytest.raises(VerdictError) as caught:
        schema(spec).validate(value)
    return str(caught.value)


def config_error(spec: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        VerdictSchema.parse(spec, "judge")
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the compact form


def test_every_field_kind_parses_in_the_order_given() -> None:
    parsed = schema({**SPEC, "label": {"enum": ["a", "b", "c"]}, "n": {"type": "int"}})
    assert parsed.fields == (
        VerdictField("answer", "enum", choices=("pass", "fail")),
        VerdictField("coherent", "bool"),
        VerdictField("detected_concept", "str"),
        VerdictField("reasoning", "str"),
        VerdictField("confidence", "float", minimum=0, maximum=1),
        VerdictField("score", "int", minimum=1, maximum=5),
        VerdictField("label", "enum", choices=("a", "b", "c")),
        VerdictField("n", "int"),
    )


def test_a_bound_may_be_left_out_and_min_may_equal_max() -> None:
    parsed = schema({"x": {"type": "float", "min": 0.5}, "y": {"type": "int", "min": 3, "max": 3}})
    assert parsed.fields[0] == VerdictField("x", "float", minimum=0.5)
    assert parsed.validate({"x": 7, "y": 3}) == {"x": 7.0, "y": 3}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "judge.schema: is empty; give at least one field"),
        (["answer"], "judge.schema: expected a mapping of field names to types"),
        ({"answer": "string"}, "judge.schema.answer: unknown type 'string'; use one of bool, str,"),
        ({"answer": None}, "judge.schema.answer: no type given; use one of bool, str, int, float"),
        ({"answer": 5}, "judge.schema.answer: 5 is not a type; use one of bool"),
        ({"answer": ["pass"]}, "judge.schema.answer: an enum needs at least two choices"),
        ({"answer": []}, "judge.schema.answer: an enum needs at least two choices"),
        ({"answer": ["pass", "pass"]}, "judge.schema.answer: choice 'pass' is listed twice"),
        ({"answer": [True, False]}, "judge.schema.answer: choice true is not a string"),
        ({"answer": [1, 2]}, "judge.schema.answer: choice 1 is not a string"),
        ({"answer": {"enum": ["a"]}}, "judge.schema.answer: an enum needs at least two"),
        ({"answer": {"enum": "a, b"}}, "judge.schema.answer.enum: expected a list of strings"),
        ({"answer": {"enum": ["a", "b"], "min": 1}}, "judge.schema.answer: an enum takes no type"),
        ({"answer": {"enum": ["a", "b"], "type": "int"}}, "judge.schema.answer: an enum takes no"),
        (
            {"score": {"type": "int", "min": 5, "max": 1}},
            "judge.schema.score: min 5 is above max 1",
        ),
        ({"score": {"type": "number"}}, "judge.schema.score.type: unknown type 'number'; use one"),
        ({"score": {"min": 1}}, "judge.schema.score.type: no type given; use one of bool, str"),
        ({"score": {"type": "int", "minimum": 1}}, "judge.schema.score: unknown key 'minimum'"),
        ({"score": {"type": "int", "min": 0.5}}, "judge.schema.score.min: expected a whole number"),
        ({"score": {"type": "float", "max": "1"}}, "judge.schema.score.max: expected a number"),
        ({"score": {"type": "float", "max": True}}, "judge.schema.score.max: expected a number"),
        ({"score": {"type": "float", "max": float("inf")}}, "judge.schema.score.max: expected a"),
        ({"ok": {"type": "bool", "min": 0}}, "judge.schema.ok: min and max are for int and float"),
        ({"my field": "str"}, "judge.schema: 'my field' is not a field name; use letters"),
        ({"1st": "str"}, "judge.schema: '1st' is not a field name"),
        ({3: "str"}, "judge.schema: 3 is not a field name"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_key(spec: Any, expected: str) -> None:
    assert config_error(spec).startswith(expected)


def test_an_unknown_type_lists_the_known_ones() -> None:
    message = config_error({"answer": "boolean"})
    assert "bool, str, int, float, a list of choices such as [pass, fail]" in message


def test_yaml_yes_no_turned_into_booleans_says_to_quote_them() -> None:
    assert "quote yes, no" in config_error({"answer": [True, False]})


def test_a_multiline_name_or_choice_stays_one_line() -> None:
    assert "'a\\nb'" in config_error({"a\nb": "str"})
    assert config_error({"answer": {"type": "in\nt"}}).count("\n") == 0


# ---------------------------------------------------------------- wire forms


OPENAI_KEYWORDS = {
    "object": {"type", "properties", "required", "additionalProperties", "description"},
    "string": {"type", "enum", "description", "pattern", "format"},
    "boolean": {"type", "description"},
    "integer": {"type", "enum", "description", "minimum", "maximum"},
    "number": {"type", "enum", "description", "minimum", "maximum"},
}


def openai_strict_problems(node: dict[str, Any], path: str = "$") -> list[str]:
    """What OpenAI's strict structured outputs would refuse in a schema (its rules as documented)."""
    kind = node.get("type")
    if kind not in OPENAI_KEYWORDS:
        return [f"{path}: type {kind!r} is not one strict mode supports"]
    problems = [f"{path}: unsupported keyword {key}" for key in set(node) - OPENAI_KEYWORDS[kind]]
    if kind == "object":
        if node.get("additionalProperties") is not False:
            problems.append(f"{path}: additionalProperties is not false")
        if sorted(node.get("required", [])) != sorted(node["properties"]):
            problems.append(f"{path}: not every property is required")
        for name, child in node["properties"].items():
            problems += openai_strict_problems(child, f"{path}.{name}")
    if "enum" in node and not all(isinstance(value, str) for value in node["enum"]):
        problems.append(f"{path}: enum values of a string are not all strings")
    return problems


def test_json_schema_is_the_expected_object() -> None:
    assert schema().json_schema() == {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["pass", "fail"]},
            "coherent": {"type": "boolean"},
            "detected_concept": {"type": "string"},
            "reasoning": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["answer", "coherent", "detected_concept", "reasoning", "confidence", "score"],
        "additionalProperties": False,
    }


def test_json_schema_meets_openai_strict_rules() -> None:
    assert openai_strict_problems(schema().json_schema()) == []


def test_the_strict_rule_walker_catches_what_it_should() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string", "minLength": 1}}}
    assert sorted(openai_strict_problems(loose)) == [
        "$.a: unsupported keyword minLength",
        "$: additionalProperties is not false",
        "$: not every property is required",
    ]


def test_json_schema_is_valid_json_schema() -> None:
    produced = schema().json_schema()
    jsonschema.Draft202012Validator.check_schema(produced)
    jsonschema.validate(GOOD, produced)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, "score": 7}, produced)


def test_gemini_schema_is_the_openapi_subset() -> None:
    assert schema().gemini_schema() == {
        "type": "OBJECT",
        "properties": {
            "answer": {"type": "STRING", "format": "enum", "enum": ["pass", "fail"]},
            "coherent": {"type": "BOOLEAN"},
            "detected_concept": {"type": "STRING"},
            "reasoning": {"type": "STRING"},
            "confidence": {"type": "NUMBER", "minimum": 0, "maximum": 1},
            "score": {"type": "INTEGER", "minimum": 1, "maximum": 5},
        },
        "required": ["answer", "coherent", "detected_concept", "reasoning", "confidence", "score"],
        "propertyOrdering": [
            "answer",
            "coherent",
            "detected_concept",
            "reasoning",
            "confidence",
            "score",
        ],
    }


def test_the_wire_forms_are_fresh_dicts_json_can_write() -> None:
    parsed = schema()
    parsed.json_schema()["properties"]["answer"]["enum"].append("maybe")
    assert parsed.json_schema()["properties"]["answer"]["enum"] == ["pass", "fail"]
    json.dumps(parsed.gemini_schema(), allow_nan=False)


# ---------------------------------------------------------------- validate


def test_a_matching_verdict_comes_back_in_schema_order() -> None:
    shuffled = dict(reversed(GOOD.items()))
    assert list(schema().validate(shuffled)) == list(SPEC)
    assert schema().validate(shuffled) == GOOD


def test_an_int_is_accepted_for_a_float_field_as_a_float() -> None:
    verdict = schema().validate({**GOOD, "confidence": 1})
    assert verdict["confidence"] == 1.0 and isinstance(verdict["confidence"], float)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"answer": "maybe"}, "field 'answer': 'maybe' is not one of pass, fail"),
        ({"answer": "PASS"}, "field 'answer': 'PASS' is not one of pass, fail"),
        ({"answer": 1}, "field 'answer': 1 is not one of pass, fail"),
        ({"answer": None}, "field 'answer': null is not one of pass, fail"),
        ({"coherent": "yes"}, "field 'coherent': 'yes' is not true or false"),
        ({"coherent": 1}, "field 'coherent': 1 is not true or false"),
        ({"reasoning": 3}, "field 'reasoning': 3 is not a string"),
        ({"reasoning": ["a"]}, "field 'reasoning': [\"a\"] is not a string"),
        ({"score": 7}, "field 'score': 7 is above the maximum 5"),
        ({"score": 0}, "field 'score': 0 is below the minimum 1"),
        ({"score": 4.0}, "field 'score': 4.0 is not an integer"),
        ({"score": "4"}, "field 'score': '4' is not an integer"),
        ({"score": True}, "field 'score': true is not an integer"),
        ({"confidence": True}, "field 'confidence': true is not a number"),
        ({"confidence": "0.9"}, "field 'confidence': '0.9' is not a number"),
        ({"confidence": 1.5}, "field 'confidence': 1.5 is above the maximum 1"),
        ({"confidence": -0.1}, "field 'confidence': -0.1 is below the minimum 0"),
        ({"confidence": float("nan")}, "field 'confidence': nan is not a finite number"),
    ],
)
def test_a_schema_violating_field_is_named_with_its_value(
    change: dict[str, Any], expected: str
) -> None:
    assert reason({**GOOD, **change}) == expected


def test_a_partial_verdict_names_each_missing_field() -> None:
    partial = {"answer": "pass", "coherent": True, "detected_concept": "x", "score": 3}
    assert reason(partial) == "missing field 'reasoning'; missing field 'confidence'"


def test_an_extra_field_is_refused() -> None:
    assert reason({**GOOD, "extra": 1}) == "unexpected field 'extra'"


def test_every_problem_is_named_at_once() -> None:
    bad = {**GOOD, "answer": "maybe", "score": 7, "extra": 1}
    del bad["reasoning"]
    assert reason(bad) == (
        "missing field 'reasoning'; field 'answer': 'maybe' is not one of pass, fail; "
        "field 'score': 7 is above the maximum 5; unexpected field 'extra'"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([GOOD], "the reply is an array, not a JSON object"),
        ("pass", "the reply is a string, not a JSON object"),
        (4, "the reply is a number, not a JSON object"),
        (None, "the reply is null, not a JSON object"),
        (True, "the reply is true, not a JSON object"),
    ],
)
def test_a_reply_that_is_not_an_object_is_refused(value: Any, expected: str) -> None:
    assert reason(value) == expected


def test_a_long_value_is_cut_in_the_reason() -> None:
    message = reason({**GOOD, "answer": "x" * 500})
    assert len(message) < 120 and "…" in message


def test_verdict_error_is_a_trialrun_error() -> None:
    assert issubclass(VerdictError, TrialrunError)


# ---------------------------------------------------------------- extract_json and parse_verdict


@pytest.mark.parametrize(
    "text",
    [
        '{"answer": "pass"}',
        '  \n{"answer": "pass"}\n',
        'Here is my verdict:\n```json\n{"answer": "pass"}\n```\nThanks.',
        'Verdict:\n```JSON\n{"answer": "pass"}\n```',
        'Verdict:\n```\n{"answer": "pass"}\n```',
        '```json {"answer": "pass"}```',
        'I think {"answer": "pass"} is right.',
        'Reasoning {not json} first, then {"answer": "pass"}.',
        '{"answer": "pass"} and {"answer": "fail"}',
    ],
)
def test_the_json_is_found_wherever_it_sits(text: str) -> None:
    assert extract_json(text) == {"answer": "pass"}


def test_braces_and_quotes_inside_strings_do_not_end_the_object() -> None:
    text = (
        'My verdict: {"reasoning": "use {x} and \\"}\\" here", "nested": {"a": [1, {"b": "}"}]}}!'
    )
    assert extract_json(text) == {
        "reasoning": 'use {x} and "}" here',
        "nested": {"a": [1, {"b": "}"}]},
    }


def test_an_inner_object_is_never_taken_for_a_broken_outer_one() -> None:
    with pytest.raises(VerdictError, match=r"^the reply's JSON does not parse: "):
        extract_json('{"verdict": {"answer": "pass"}, oops}')


def test_a_whole_reply_that_is_json_but_no_object_comes_back_as_is() -> None:
    assert extract_json('[{"answer": "pass"}]') == [{"answer": "pass"}]
    assert extract_json('"pass"') == "pass"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"answer": "pa', "the reply's JSON does not parse: Unterminated string"),
        ('Sure: {"answer": "pass", "score": ', "the reply's JSON does not parse: Expecting value"),
        ('{"answer": "pass",}', "the reply's JSON does not parse: "),  # wording varies by Python
        ("```json\n{answer: pass}\n```", "the reply's JSON does not parse: Expecting property"),
        ('{"answer": "pass", "answer": "fail"}', "the reply's JSON does not parse: key 'answer'"),
        ("The answer is pass.", "no JSON object in the reply"),
        ("", "no JSON object in the reply"),
        ("[pass] it is", "no JSON object in the reply"),
        ("}{", "the reply's JSON does not parse: "),
    ],
)
def test_a_reply_without_usable_json_says_why(text: str, expected: str) -> None:
    with pytest.raises(VerdictError) as caught:
        extract_json(text)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_parse_verdict_extracts_then_validates() -> None:
    text = f"Thinking...\n```json\n{json.dumps(GOOD)}\n```"
    assert parse_verdict(text, schema()) == GOOD
    with pytest.raises(VerdictError, match=r"^missing field 'score'$"):
        parse_verdict(json.dumps({k: v for k, v in GOOD.items() if k != "score"}), schema())
    with pytest.raises(VerdictError, match=r"^no JSON object in the reply$"):
        parse_verdict("pass", schema())


# ---------------------------------------------------------------- properties

names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name)
)
choices = st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=5, unique=True)
bounds = st.one_of(st.none(), st.integers(-100, 100))


@st.composite
def field_specs(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["enum", "enum_map", "bool", "str", "int", "float", "ranged"]))
    if kind == "enum":
        return draw(choices)
    if kind == "enum_map":
        return {"enum": draw(choices)}
    if kind != "ranged":
        return kind
    low, high = sorted([draw(st.integers(-100, 100)), draw(st.integers(-100, 100))])
    spec: dict[str, Any] = {"type": draw(st.sampled_from(["int", "float"]))}
    if draw(st.booleans()):
        spec["min"] = low
    if draw(st.booleans()):
        spec["max"] = high
    return spec


specs = st.dictionaries(names, field_specs(), min_size=1, max_size=6)


def value_for(field: VerdictField, data: st.DataObject) -> Any:
    low = field.minimum if field.minimum is not None else -1000
    high = field.maximum if field.maximum is not None else 1000
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "enum": st.sampled_from(field.choices),
        "bool": st.booleans(),
        "str": st.text(max_size=20),
        "int": st.integers(int(low), int(high)),
        "float": st.one_of(st.floats(low, high, allow_nan=False), st.integers(int(low), int(high))),
    }
    return data.draw(strategies[field.kind])


@FAST
@given(specs, st.data(), st.sampled_from(["{}", "```json\n{}\n```", "Verdict: {} Done."]))
def test_any_verdict_of_a_schema_validates_and_round_trips(
    spec: dict[str, Any], data: st.DataObject, wrapper: str
) -> None:
    parsed = VerdictSchema.parse(spec, "judge")
    verdict = {field.name: value_for(field, data) for field in parsed.fields}
    assert parsed.validate(verdict) == verdict
    text = wrapper.replace("{}", json.dumps(verdict, ensure_ascii=data.draw(st.booleans())))
    assert parse_verdict(text, parsed) == verdict
    assert openai_strict_problems(parsed.json_schema()) == []


@FAST
@given(specs, st.data())
def test_a_verdict_with_one_field_missing_or_extra_never_validates(
    spec: dict[str, Any], data: st.DataObject
) -> None:
    parsed = VerdictSchema.parse(spec, "judge")
    verdict = {field.name: value_for(field, data) for field in parsed.fields}
    name = data.draw(st.sampled_from(parsed.names))
    with pytest.raises(VerdictError, match=f"^missing field '{name}'$"):
        parsed.validate({key: value for key, value in verdict.items() if key != name})
    with pytest.raises(VerdictError, match=r"^unexpected field 'zz_extra'$"):
        parsed.validate({**verdict, "zz_extra": 0})
