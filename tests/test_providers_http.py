"""OpenAI, Anthropic and Gemini adapters over real HTTP, through the official SDKs.

Each test starts a fake server of the provider's wire format on 127.0.0.1
(`trialrun.testing.FakeServer`) and runs trialrun against it: answers, usage, costs,
retries under faults, final errors, authentication, timeouts, secrets and `doctor`.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import CliResult, base_config, only_run, read_results
from test_executor import attempts, items, trial_states
from trialrun.errors import RunIncomplete
from trialrun.providers import create
from trialrun.testing import FakeServer, Faults
from trialrun.types import Request

KINDS = ["openai", "anthropic", "google"]
KEY = "sk-trialrun-test-CANARY-7f3e9a1c"
FAST_RETRY = {"attempts": 10, "base_wait_s": 0.001, "max_wait_s": 0.02, "timeout_s": 10}


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer(request.param, api_key=KEY) as fake:
        yield fake


def sweep(server: FakeServer, n: int = 6, **changes: Any) -> dict[str, Any]:
    """n items × 2 temperatures × (question + 1 follow-up) against the fake server's model."""
    entry: dict[str, Any] = {
        "model": f"{server.kind}/fake-model",
        "base_url": server.url,
        "api_key": "${env:FAKE_API_KEY}",
    }
    if server.kind != "anthropic":  # the Messages API has no logprobs
        entry["params"] = {"top_logprobs": 2}
    config = base_config(
        dataset=items(n),
        models=[entry],
        retry=FAST_RETRY,
        prices={f"{server.kind}/fake-model": {"input": 3.0, "output": 15.0}},
        # Off unless a test is about it: Anthropic's two temperature cells send the same
        # request (temperature is left out), and a shared cached answer would make the
        # count of calls the server sees depend on timing.
        cache={"enabled": False},
    )
    config.update(changes)
    return config


class Notes(trialrun.Observer):
    """Keeps the warnings a run gives."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def generate_requests(server: FakeServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if not r["path"].endswith("/models")]


# ------------------------------------------------------------------ answers and accounting


def test_records_hold_what_the_server_answered(server: FakeServer) -> None:
    run = trialrun.run(sweep(server))
    assert run.counts()["done"] == 12, {r["error"] for r in run.records()}
    assert len(generate_requests(server)) == 24  # 12 trials × 2 turns, each answered once
    id_field = "responseId" if server.kind == "google" else "id"
    sent = {r["response"][id_field]: r for r in generate_requests(server)}

    for record in read_results(run.path):
        assert record["error"] is None
        assert len(record["turns"]) == 2
        for turn in record["turns"]:
            answered = sent[turn["request_id"]]["response"]
            text, usage, finish = _wire(server.kind, answered)
            assert turn["response"] == text
            assert (turn["usage"]["input"], turn["usage"]["output"]) == usage
            assert turn["finish_reason"] == finish
            assert turn["served_model"] == "fake-model"
            assert turn["attempts"] == 1
            assert turn["cost_usd"] == pytest.approx((usage[0] * 3.0 + usage[1] * 15.0) / 1e6)
            if server.kind == "anthropic":
                assert turn["logprobs"] is None
            else:
                assert turn["logprobs"] and len(turn["logprobs"][0]["top"]) == 2

    spend = run.status()["spend"]
    records = read_results(run.path)
    assert spend["calls"] == 24
    assert spend["input_tokens"] == sum(t["usage"]["input"] for r in records for t in r["turns"])
    assert spend["cost_usd"] == pytest.approx(
        sum(t["cost_usd"] for r in records for t in r["turns"])
    )


def _wire(kind: str, body: dict[str, Any]) -> tuple[str, tuple[int, int], str]:
    """(text, (input, output) tokens, neutral finish reason) of a wire-format answer."""
    if kind == "openai":
        choice = body["choices"][0]
        usage = body["usage"]
        return (
            choice["message"]["content"],
            (usage["prompt_tokens"], usage["completion_tokens"]),
            choice["finish_reason"],
        )
    if kind == "anthropic":
        usage = body["usage"]
        finish = {"end_turn": "stop", "max_tokens": "length"}[body["stop_reason"]]
        return body["content"][0]["text"], (usage["input_tokens"], usage["output_tokens"]), finish
    candidate = body["candidates"][0]
    usage = body["usageMetadata"]
    finish = {"STOP": "stop", "MAX_TOKENS": "length"}[candidate["finishReason"]]
    return (
        candidate["content"]["parts"][0]["text"],
        (usage["promptTokenCount"], usage["candidatesTokenCount"]),
        finish,
    )


def test_system_prompt_and_history_reach_the_server_in_its_format(server: FakeServer) -> None:
    run = trialrun.run(sweep(server, n=1, grid={}))
    _, second = generate_requests(server)
    answer = read_results(run.path)[0]["turns"][0]["response"]
    if server.kind == "openai":
        roles = [m["role"] for m in second["body"]["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        assert second["body"]["messages"][2]["content"] == answer
        assert second["body"]["max_tokens"] == 32  # a compatible server: the name vLLM reads
    elif server.kind == "anthropic":
        assert second["body"]["system"] == "Be brief."
        assert [m["role"] for m in second["body"]["messages"]] == ["user", "assistant", "user"]
        assert second["body"]["messages"][1]["content"] == answer
        assert second["body"]["max_tokens"] == 32
    else:
        body = second["body"]
        assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["contents"][1]["parts"][0]["text"] == answer
        assert body["generationConfig"]["maxOutputTokens"] == 32


def test_anthropic_sampling_params_are_left_out_with_a_warning_unless_an_old_version_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    notes = Notes()
    warnings = notes.warnings

    with FakeServer("anthropic", api_key=KEY) as fake:
        run = trialrun.run(
            sweep(fake, n=1, params={"max_tokens": 32, "top_p": 0.9}, cache={"enabled": True}),
            observer=notes,
        )
        bodies = [r["body"] for r in generate_requests(fake)]
        assert bodies and not any("temperature" in b or "top_p" in b for b in bodies)
        assert len(warnings) == 1
        assert "temperature, top_p" in warnings[0] and "anthropic_version" in warnings[0]
        records = read_results(run.path)
        assert all(set(r["params"]) == {"max_tokens"} for r in records)
        # The two temperature cells sent the same request on the wire: the same answer.
        assert len({r["trial_id"] for r in records}) == 2
        assert len({r["turns"][0]["response"] for r in records}) == 1

        # The same experiment with an option that changes the wire (temperature is now
        # sent): nothing may come from the cache of the first run.
        fake.reset()
        warnings.clear()
        config = sweep(fake, n=1, params={"max_tokens": 32, "top_p": 0.9}, cache={"enabled": True})
        config["models"][0]["options"] = {"anthropic_version": "2023-06-01"}
        again = trialrun.run(config, observer=notes)
        requests = generate_requests(fake)
        assert len(requests) == 4
        assert {r["body"]["temperature"] for r in requests} == {0.0, 0.7}
        assert {r["headers"]["anthropic-version"] for r in requests} == {"2023-06-01"}
        assert warnings == []
        records = read_results(again.path)
        assert {r["params"]["temperature"] for r in records} == {0.0, 0.7}
        assert not any(t["cache_hit"] for r in records for t in r["turns"])


# ------------------------------------------------------------------ faults and retries


def test_a_ten_percent_fault_mix_still_finishes_every_trial(server: FakeServer) -> None:
    server.set_faults(Faults.mix(0.10, seed=11))
    run = trialrun.run(sweep(server, n=20))
    assert run.counts() == {"pending": 0, "running": 0, "done": 40, "failed": 0}

    outcomes = server.counts()
    faults = sum(n for outcome, n in outcomes.items() if outcome != "ok")
    assert outcomes["ok"] == 80  # every turn answered exactly once
    assert faults >= 4, outcomes  # ~10% of ~90 requests; the seed makes it repeatable
    # Every request the server saw is one attempt in the store, and the retries add up.
    rows = attempts(run)
    assert len(rows) == sum(outcomes.values())
    records = read_results(run.path)
    assert sum(t["attempts"] for r in records for t in r["turns"]) == len(rows)
    assert sum(r["retries"] for r in records) == faults
    assert {row["error_kind"] for row in rows if row["error"]} == {"retryable"}


@pytest.mark.parametrize("kind", KINDS)
def test_timeouts_are_retried_until_an_answer_comes(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer(kind, api_key=KEY, faults=Faults(slow=0.3, slow_s=3.0, seed=2)) as fake:
        # 1.5 s: a slow fault (3 s) always times out; a first SDK call on a busy machine
        # (0.2-0.5 s, more under load) does not
        config = sweep(fake, n=4, retry={**FAST_RETRY, "timeout_s": 1.5})
        run = trialrun.run(config)
        assert run.counts()["done"] == 8
        slow = fake.counts()["slow"]
    assert slow >= 1
    timed_out = attempts(run, "error LIKE '%timed out%'")
    assert len(timed_out) == slow
    assert {row["error_kind"] for row in timed_out} == {"retryable"}


def test_bad_requests_fail_their_trial_at_once_and_the_run_goes_on(server: FakeServer) -> None:
    dataset = items(4)
    dataset["items"][1]["prompt"] = "[[status:400]] malformed"
    dataset["items"][2]["prompt"] = "[[status:404]] no such model"
    run = trialrun.run(sweep(server, dataset=dataset))
    states = Counter(state for states in trial_states(run).values() for state in states)
    assert states == {"done": 4, "failed": 4}
    failed = {r["item_id"]: r for r in read_results(run.path) if r["status"] == "failed"}
    assert set(failed) == {"q1", "q2"}
    for record in failed.values():
        assert record["retries"] == 0
        code = "400" if record["item_id"] == "q1" else "404"
        assert code in record["error"]
    final = attempts(run, "error_kind='final'")
    assert len(final) == 4  # one attempt each, never retried


def test_a_wrong_key_stops_the_provider_with_one_message(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", "sk-wrong-key-0123456789")
    config = sweep(server, n=10, limits={server.kind: {"concurrency": 2}})
    with pytest.raises(RunIncomplete) as info:
        trialrun.run(config)
    assert "401" in str(info.value)
    assert "sk-wrong-key-0123456789" not in str(info.value)
    run = trialrun.open_run()
    assert trial_states(run)[f"{server.kind}/fake-model"] == ["pending"] * 20
    assert 1 <= server.counts()["auth"] <= 2  # the requests in flight, not one per trial

    monkeypatch.setenv("FAKE_API_KEY", KEY)  # fixed: resume finishes the run
    trialrun.resume(run)
    assert run.counts()["done"] == 20


# ------------------------------------------------------------------ response size limit


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_max_response_mb_fails_its_trial_finally_and_the_run_goes_on(
    server: FakeServer, chunked: bool
) -> None:
    marker = ":chunked" if chunked else ""
    dataset = items(3)
    dataset["items"][0]["prompt"] = f"[[size:2000000{marker}]] a huge answer"
    dataset["items"][1]["prompt"] = f"[[size:300000{marker}]] a large answer within the limit"
    run = trialrun.run(
        sweep(server, dataset=dataset, limits={server.kind: {"max_response_mb": 0.5}})
    )

    records = {(r["item_id"], r["grid"]["temperature"]): r for r in read_results(run.path)}
    failed = {key for key, record in records.items() if record["status"] == "failed"}
    assert failed == {("q0", 0.0), ("q0", 0.7)}
    limit = f"response body over limits.{server.kind}.max_response_mb (0.5 MB)"
    for key in failed:
        assert limit in records[key]["error"]
        assert records[key]["retries"] == 0
    over = attempts(run, "error LIKE ?", f"%{limit}%")
    assert len(over) == 2 and {row["error_kind"] for row in over} == {"final"}
    if server.kind != "google":  # the SDKs whose body trialrun reads stop at the limit
        detail = "got more than 524288 bytes" if chunked else "Content-Length is 2000"
        assert all(detail in row["error"] for row in over)
    large = records[("q1", 0.0)]["turns"][0]["response"]
    assert len(large) > 250_000  # bodies under the limit are taken whole


# ------------------------------------------------------------------ connection failures


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("kind", "transport"),
    [("openai", "aiohttp"), ("openai", "httpx"), ("anthropic", "aiohttp"), ("google", None)],
)
@pytest.mark.parametrize("target", ["closed port", "unknown host"])
def test_a_refused_connection_or_unknown_host_is_named_and_retried(
    kind: str, transport: str | None, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    port = _closed_port()
    host = f"127.0.0.1:{port}" if target == "closed port" else "nosuch.invalid"
    entry: dict[str, Any] = {"model": f"{kind}/fake-model", "base_url": f"http://{host}/v1"}
    entry["api_key"] = "${env:FAKE_API_KEY}"
    if transport:
        entry["options"] = {"transport": transport}
    retry = {**FAST_RETRY, "attempts": 2, "timeout_s": 20}
    run = trialrun.run(base_config(dataset=items(1), models=[entry], retry=retry))

    expected = (
        f"connection refused by 127.0.0.1:{port}"
        if target == "closed port"
        else "cannot resolve host nosuch.invalid"
    )
    rows = attempts(run)
    assert len(rows) == 4  # 2 temperatures x 2 attempts: retried, as a timeout would be
    assert {row["error"] for row in rows} == {expected}
    assert {row["error_kind"] for row in rows} == {"retryable"}
    assert all(expected in record["error"] for record in read_results(run.path))


# ------------------------------------------------------------------ the adapters' error classes


FAULT_CLASSES = {
    "rate_limit": ("retryable", 0.05),
    "server_error": ("retryable", None),
    "overloaded": ("retryable", None),
    "drop": ("retryable", None),
    "truncate": ("retryable", None),
    "malformed": ("retryable", None),
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_wire_failure_lands_in_the_executors_class(kind: str) -> None:
    async def classify(fake: FakeServer, key: str, prompt: str = "hi") -> Any:
        provider = create(kind, api_key=key, base_url=fake.url)
        request = Request("fake-model", [{"role": "user", "content": prompt}], {"max_tokens": 8})
        try:
            await provider.generate(request)
            return "answered"
        except Exception as exc:
            return provider.classify_error(exc)
        finally:
            await provider.aclose()

    with FakeServer(kind, api_key=KEY) as fake:
        assert asyncio.run(classify(fake, KEY)) == "answered"
        for fault, expected in FAULT_CLASSES.items():
            fake.set_faults(Faults(**{fault: 1.0}))
            assert asyncio.run(classify(fake, KEY)) == expected, fault
        fake.set_faults(Faults())
        assert asyncio.run(classify(fake, KEY, "[[status:400]]")) == ("final", None)
        assert asyncio.run(classify(fake, KEY, "[[status:404]]")) == ("final", None)
        assert asyncio.run(classify(fake, "sk-not-the-key-123")) == ("auth", None)
        overloaded = [r for r in fake.requests if r["outcome"] == "overloaded"]
    assert overloaded  # Anthropic's 529 and the others' 503 both count as retryable


# ------------------------------------------------------------------ secrets


def test_no_file_trialrun_writes_contains_the_key(
    cli: Callable[..., CliResult], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY + "-env")
    outputs: list[str] = []
    with (
        FakeServer("openai", api_key=KEY, faults=Faults.mix(0.1, seed=4)) as good,
        FakeServer("anthropic", api_key="another-key-entirely") as refusing,
    ):
        config = sweep(good, n=4, cache={"enabled": True})
        config["dataset"]["items"][0]["prompt"] = "[[status:400]]"
        config["models"].append(
            {
                "model": "anthropic/fake-model",
                "base_url": refusing.url,
                "api_key": "${env:FAKE_API_KEY}",
            }
        )
        path = isolated / "exp.yaml"
        path.write_text(yaml.safe_dump(config))
        result = cli("run", str(path))
        outputs += [result.out, result.err]
        assert result.code != 0  # the anthropic lane stopped on its 401
        run_dir = only_run(isolated / "runs")
        for args in (("status", str(run_dir)), ("export", str(run_dir), "--format", "csv")):
            result = cli(*args)
            outputs += [result.out, result.err]
        result = cli("doctor", str(path))
        outputs += [result.out, result.err]
        refused = [r for r in refusing.requests if r["outcome"] == "auth"]
    assert refused  # and its 401 body quoted the key it was given, as real services do
    assert any(KEY in str(r["headers"]) for r in good.requests)  # the key was really sent

    leaks = [
        str(file)
        for file in sorted(isolated.rglob("*"))
        if file.is_file() and KEY.encode() in file.read_bytes()
    ]
    assert leaks == []  # run folder, database, config copy, manifest, exports, cache
    assert not [text for text in outputs if KEY in text]


# ------------------------------------------------------------------ doctor


def test_doctor_checks_the_endpoint_answers(
    server: FakeServer, cli: Callable[..., CliResult], isolated: Path
) -> None:
    path = isolated / "exp.yaml"
    path.write_text(yaml.safe_dump(sweep(server)))
    result = cli("doctor", str(path))
    assert result.code == 0, result.out + result.err
    assert "1 models listed" in result.out
    assert KEY not in result.out + result.err

    server.stop()
    result = cli("doctor", str(path))
    assert result.code != 0
    line = next(line for line in result.out.splitlines() if f"endpoint {server.kind}" in line)
    assert server.url in line
    assert f"connection refused by 127.0.0.1:{server.port}" in line


def test_an_unpriced_models_cost_is_unknown_even_when_its_trial_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as fake:
        config = sweep(fake, n=2, grid={}, followups=[], prices={})
        config["dataset"]["items"][1]["prompt"] = "[[status:400]] no"
        run = trialrun.run(config)
    records = {r["item_id"]: r for r in read_results(run.path)}
    done, failed = records["q0"], records["q1"]
    assert done["status"] == "done" and failed["status"] == "failed"
    assert done["turns"][0]["cost_usd"] is None
    assert done["cost_usd"] is None and failed["cost_usd"] is None


@pytest.mark.parametrize("key", ["k3y9", "sk-ab\\cd\\ef-0123456789"], ids=["short", "backslash"])
def test_short_keys_and_keys_with_a_backslash_never_reach_a_file_or_the_terminal(
    cli: Callable[..., CliResult], isolated: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", key)
    with FakeServer("anthropic", api_key="the-right-key-entirely") as refusing:
        path = isolated / "exp.yaml"
        path.write_text(yaml.safe_dump(sweep(refusing, n=2)))
        outputs = []
        for args in (("run", str(path)), ("status",), ("export", "--format", "csv")):
            result = cli(*args)
            outputs += [result.out, result.err]
        quoted = [r for r in refusing.requests if r["outcome"] == "auth"]
    assert quoted  # the server's 401 quoted the key it was given
    forms = {key, repr(key)[1:-1], key.replace("\\", "\\\\\\\\")}
    leaks = [
        (str(file), form)
        for file in sorted(isolated.rglob("*"))
        if file.is_file()
        for form in forms
        if form.encode() in file.read_bytes()
    ]
    assert leaks == []
    assert not [text for text in outputs for form in forms if form in text]
    assert any("[redacted]" in text for text in outputs)


def test_logprobs_asked_for_and_never_returned_warn_once_per_model_and_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    notes = Notes()
    warnings = notes.warnings

    with FakeServer("openai", api_key=KEY) as fake:
        config = sweep(fake, n=3)
        config["dataset"] = items(3, prompt="[[mock:nologprobs]] Is {i} odd?")
        run = trialrun.run(config, observer=notes)
        asked = [r for r in generate_requests(fake) if r["body"].get("top_logprobs") == 2]
    assert len(asked) == 12
    noted = [w for w in warnings if "logprobs" in w]
    assert len(noted) == 1 and "openai/fake-model" in noted[0]
    assert all(t["logprobs"] is None for r in read_results(run.path) for t in r["turns"])
    store = run.store()
    try:
        assert store.missing_logprobs() == {"fake-model": 12}
    finally:
        store.close()
