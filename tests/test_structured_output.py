"""Structured output (issue 12's judges): a request's `response_schema` goes out through each
provider's own mechanism, over real HTTP through the official SDKs against the fake
servers, and the verdict read back matches the schema; the mock answers schema-valid
verdicts, deterministically, and its `[[mock:verdict-...]]` markers make the answers a
judge must cope with (invalid, not JSON, refused, cut off)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from trialrun.hashing import canonical
from trialrun.providers import create
from trialrun.providers.google import gemini_schema
from trialrun.testing import FakeServer
from trialrun.types import Request, Response

KINDS = ["openai", "anthropic", "google"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string"},
        "verdict": {"type": "string", "enum": ["correct", "partial", "incorrect"]},
        "hallucinated": {"type": "boolean"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0.25, "maximum": 0.75},
    },
    "required": ["reasoning", "verdict", "hallucinated", "score", "confidence"],
    "additionalProperties": False,
}


def check_verdict(text: str) -> dict[str, Any]:
    """The verdict in `text`, checked against SCHEMA by hand."""
    verdict = json.loads(text)
    assert isinstance(verdict, dict)
    assert set(verdict) == set(SCHEMA["required"])
    assert isinstance(verdict["reasoning"], str) and verdict["reasoning"]
    assert verdict["verdict"] in ("correct", "partial", "incorrect")
    assert isinstance(verdict["hallucinated"], bool)
    score = verdict["score"]
    assert isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 5
    assert isinstance(verdict["confidence"], int | float)
    assert 0.25 <= verdict["confidence"] <= 0.75
    return verdict


def judge_request(prompt: str = "Grade: 2 + 2 = 4. Answer: 4.", **params: Any) -> Request:
    messages = [
        {"role": "system", "content": "You are a strict grader."},
        {"role": "user", "content": prompt},
    ]
    return Request("fake-model", messages, params, response_schema=SCHEMA, schema_name="grade")


def ask(server: FakeServer, request: Request) -> Response:
    async def generate() -> Response:
        provider = create(server.kind, api_key="sk-test", base_url=server.url)
        try:
            return await provider.generate(request)
        finally:
            await provider.aclose()

    return asyncio.run(generate())


def sent_body(server: FakeServer) -> dict[str, Any]:
    (sent,) = [r for r in server.requests if not r["path"].endswith("/models")]
    body: dict[str, Any] = sent["body"]
    return body


# ------------------------------------------------------------------ each provider's mechanism


def test_openai_sends_a_strict_json_schema_and_reads_the_content() -> None:
    with FakeServer("openai") as server:
        response = ask(server, judge_request())
        body = sent_body(server)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "grade", "schema": SCHEMA, "strict": True},
    }
    check_verdict(response.text)
    assert response.finish_reason == "stop" and response.refusal is None


def test_anthropic_forces_a_tool_and_reads_its_input() -> None:
    with FakeServer("anthropic") as server:
        response = ask(server, judge_request())
        body = sent_body(server)
    assert body["tools"] == [
        {"name": "grade", "description": "Record the verdict.", "input_schema": SCHEMA}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "grade"}
    assert body["system"] == "You are a strict grader."
    check_verdict(response.text)
    assert response.text == canonical(json.loads(response.text))
    assert response.finish_reason == "stop" and response.refusal is None


def test_google_sends_its_response_schema_and_reads_the_candidate_text() -> None:
    with FakeServer("google") as server:
        response = ask(server, judge_request())
        body = sent_body(server)
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    sent = config["responseSchema"]
    assert sent["type"] == "OBJECT" and "additionalProperties" not in sent
    assert sent["required"] == SCHEMA["required"]
    assert sent["properties"]["verdict"] == {
        "type": "STRING",
        "enum": ["correct", "partial", "incorrect"],
    }
    assert sent["properties"]["hallucinated"] == {"type": "BOOLEAN"}
    assert sent["properties"]["score"]["type"] == "INTEGER"
    assert sent["properties"]["confidence"]["type"] == "NUMBER"
    check_verdict(response.text)
    assert response.finish_reason == "stop"


def test_gemini_schema_is_the_openapi_subset() -> None:
    nested = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["a", "b"], "description": "which"},
            "points": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
        "required": ["label", "points"],
        "additionalProperties": False,
    }
    assert gemini_schema(nested) == {
        "type": "OBJECT",
        "properties": {
            "label": {"type": "STRING", "enum": ["a", "b"], "description": "which"},
            "points": {"type": "ARRAY", "items": {"type": "INTEGER", "minimum": 0}},
        },
        "required": ["label", "points"],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_the_verdict_through_each_server_is_the_mocks(kind: str) -> None:
    request = judge_request()
    expected = create("mock").generate(request)
    with FakeServer(kind) as server:
        response = ask(server, request)
    assert json.loads(response.text) == json.loads(asyncio.run(expected).text)


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_without_a_schema_asks_for_none(kind: str) -> None:
    with FakeServer(kind) as server:
        response = ask(server, Request("fake-model", [{"role": "user", "content": "Hi?"}], {}))
        body = sent_body(server)
    assert not {"response_format", "tools", "tool_choice"} & set(body)
    assert "responseSchema" not in body.get("generationConfig", {})
    assert response.refusal is None and "refusal" not in response.to_json()


def test_batch_entries_carry_the_schema() -> None:
    openai, anthropic = create("openai", api_key="k"), create("anthropic", api_key="k")
    entry = openai.batch_entry("c1", judge_request())
    assert entry["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
    params = anthropic.batch_entry("c1", judge_request())["params"]
    assert params["tool_choice"] == {"type": "tool", "name": "grade"}
    assert params["tools"][0]["input_schema"] == SCHEMA
    plain = Request("m", [{"role": "user", "content": "Hi?"}], {})
    assert "response_format" not in openai.batch_entry("c2", plain)["body"]
    assert "tools" not in anthropic.batch_entry("c2", plain)["params"]


def test_the_mock_batch_answers_verdicts(tmp_path: Path) -> None:
    mock = create("mock", batch_dir=str(tmp_path))
    plain = Request("m", [{"role": "user", "content": "Hi?"}], {})
    assert "response_schema" not in mock.batch_entry("p", plain)

    async def run_batch() -> list[Any]:
        entries = [mock.batch_entry("j", judge_request()), mock.batch_entry("p", plain)]
        batch_id = await mock.submit_batch(entries, {"trialrun_tag": "t"})
        return [outcome async for outcome in mock.batch_results(batch_id)]

    judged, answered = asyncio.run(run_batch())
    check_verdict(judged.response.text)
    assert answered.response.text == asyncio.run(mock.generate(plain)).text


# ------------------------------------------------------------------ the mock's verdicts


def mock_answer(request: Request) -> Response:
    return asyncio.run(create("mock").generate(request))


def test_mock_verdicts_are_deterministic_and_schema_valid_over_many_requests() -> None:
    requests = [judge_request(f"Grade answer {n}.", seed=n % 3) for n in range(300)]
    verdicts = [check_verdict(mock_answer(r).text) for r in requests]
    again = [json.loads(mock_answer(r).text) for r in requests]
    assert verdicts == again
    assert set(Counter(v["verdict"] for v in verdicts)) == {"correct", "partial", "incorrect"}
    assert {v["hallucinated"] for v in verdicts} == {True, False}
    assert {v["score"] for v in verdicts} == {1, 2, 3, 4, 5}
    assert len({v["reasoning"] for v in verdicts}) > 1
    # The seed is part of the request: another seed may give another verdict.
    seeds = {mock_answer(judge_request("Same.", seed=s)).text for s in range(20)}
    assert len(seeds) > 1


def test_mock_verdict_is_cut_off_by_max_tokens() -> None:
    response = mock_answer(judge_request(max_tokens=5))
    assert response.finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(response.text)


MARKED = {
    "invalid": "[[mock:verdict-invalid]]",
    "garbage": "[[mock:verdict-garbage]]",
    "refuse": "[[mock:verdict-refuse]]",
    "truncate": "[[mock:verdict-truncate]]",
}


def check_marked(marker: str, response: Response, kind: str = "mock") -> None:
    """What each marker's answer reads back as (a forced Anthropic tool that was not used
    reads as empty text)."""
    no_tool = kind == "anthropic"
    if marker == "invalid":
        verdict = json.loads(response.text)
        assert verdict["verdict"] not in ("correct", "partial", "incorrect")
        assert response.finish_reason == "stop" and response.refusal is None
    elif marker == "garbage":
        if no_tool:
            assert response.text == ""
        else:
            with pytest.raises(ValueError):
                json.loads(response.text)
        assert response.finish_reason == "stop"
    elif marker == "refuse":
        assert response.text == ""
        if kind == "google":  # Gemini blocks: a content filter, no refusal text
            assert response.finish_reason == "content_filter"
        else:
            assert response.refusal
    else:
        assert response.finish_reason == "length"
        if no_tool:
            assert response.text == ""
        else:
            assert response.text.startswith("{")
            with pytest.raises(ValueError):
                json.loads(response.text)


@pytest.mark.parametrize("marker", MARKED)
def test_mock_markers(marker: str) -> None:
    response = mock_answer(judge_request(f"Grade this. {MARKED[marker]}"))
    check_marked(marker, response)
    if marker == "refuse":
        assert response.to_json()["refusal"] == response.refusal
        assert Response.from_json(response.to_json()) == response


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("marker", MARKED)
def test_markers_through_each_server(kind: str, marker: str) -> None:
    with FakeServer(kind) as server:
        response = ask(server, judge_request(f"Grade this. {MARKED[marker]}"))
    check_marked(marker, response, kind)


def test_openai_refusal_is_on_the_wire_as_openai_sends_it() -> None:
    with FakeServer("openai") as server:
        response = ask(server, judge_request(MARKED["refuse"]))
        (sent,) = server.requests
    message = sent["response"]["choices"][0]["message"]
    assert message["content"] is None and message["refusal"] == response.refusal


def test_a_record_without_refusal_reads_as_none() -> None:
    record = Response("yes").to_json()
    assert "refusal" not in record
    assert Response.from_json(record).refusal is None
