"""The fake servers' batch endpoints, driven through the official OpenAI, Anthropic and
google-genai SDKs.

OpenAI: files (upload, retrieve, content) and batches (create, retrieve, list, cancel), with
output and error files. Anthropic: message batches (create, retrieve, list, cancel, results).
Gemini: batch jobs with inline requests (create, get, list, cancel; results in the job).
Both: the delay until a batch ends, `BatchFaults` (errors, expiry), `on_batch_create`, input
checks (400) and authentication (401).
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from trialrun.testing import BatchFaults, FakeServer

KEY = "sk-trialrun-batch-test"
DELAY_S = 0.2


def openai_client(server: FakeServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)


def anthropic_client(server: FakeServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def chat_body(i: int, model: str = "fake-model") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Is claim {i} true?"},
        ],
        "temperature": 0.0,
        "max_tokens": 24,
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_lines(n: int, models: tuple[str, ...] = ("fake-model",)) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"trial-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat_body(i, models[i % len(models)]),
        }
        for i in range(n)
    ]


def submit(client: openai.OpenAI, lines: list[dict[str, Any]], **options: Any) -> Any:
    """Upload `lines` as a batch input file and create a batch of them."""
    upload = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **options,
    )


def download(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def message_requests(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"trial-{i}",
            "params": {
                "model": "fake-model",
                "max_tokens": 24,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": f"Is claim {i} true?"}],
            },
        }
        for i in range(n)
    ]


@pytest.fixture
def openai_server() -> Iterator[FakeServer]:
    with FakeServer("openai", api_key=KEY, batch_delay_s=DELAY_S) as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[FakeServer]:
    with FakeServer("anthropic", api_key=KEY, batch_delay_s=DELAY_S) as server:
        yield server


# ------------------------------------------------------------------------------ OpenAI


def test_openai_batch_runs_to_completion() -> None:
    created: list[dict[str, Any]] = []

    def on_create(batch: dict[str, Any]) -> None:
        assert batch["id"] in server.batches  # stored before the client hears of it
        created.append(batch)

    with (
        FakeServer(
            "openai", api_key=KEY, batch_delay_s=DELAY_S, on_batch_create=on_create
        ) as server,
        openai_client(server) as client,
    ):
        lines = chat_lines(3)
        upload = client.files.create(
            file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch"
        )
        assert (upload.object, upload.purpose, upload.bytes) == ("file", "batch", len(jsonl(lines)))
        assert client.files.retrieve(upload.id).filename == "input.jsonl"
        batch = client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "r1"},
        )
        assert [b["id"] for b in created] == [batch.id] == server.batch_creates()
        assert created[0]["status"] == batch.status == "validating"
        assert batch.metadata == {"run": "r1"}
        assert batch.expires_at == batch.created_at + 86400
        assert server.batches[batch.id]["requests"] == lines

        early = client.batches.retrieve(batch.id)
        assert early.status == "in_progress"
        assert early.output_file_id is None
        assert early.request_counts is not None
        assert (early.request_counts.total, early.request_counts.completed) == (3, 0)

        time.sleep(DELAY_S + 0.05)
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed"
        assert done.completed_at is not None
        assert done.error_file_id is None
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (0 + 3, 0)
        assert client.batches.retrieve(batch.id).output_file_id == done.output_file_id

        output = download(client, done.output_file_id)
        assert [line["custom_id"] for line in output] == ["trial-0", "trial-1", "trial-2"]
        for line, sent in zip(output, lines, strict=True):
            assert line["error"] is None
            assert line["response"]["status_code"] == 200
            body = line["response"]["body"]
            direct = client.chat.completions.create(**sent["body"])  # the same mock answer
            assert body["choices"][0]["message"]["content"] == direct.choices[0].message.content
            assert direct.usage is not None
            assert body["usage"]["prompt_tokens"] == direct.usage.prompt_tokens
            assert body["usage"]["completion_tokens"] == direct.usage.completion_tokens
            assert body["model"] == "fake-model"

    assert len(created) == 1
    counts = server.counts()
    assert counts["batch_create"] == 1
    assert counts["ok"] == 3  # the direct chat calls only
    creates = [r for r in server.requests if r["outcome"] == "batch_create"]
    assert creates[0]["path"] == "/v1/batches"
    assert creates[0]["body"]["metadata"] == {"run": "r1"}


def test_openai_list_pages_newest_first(openai_server: FakeServer) -> None:
    with openai_client(openai_server) as client:
        ids = [submit(client, chat_lines(1)).id for _ in range(5)]
        newest_first = ids[::-1]
        first = client.batches.list(limit=2)
        assert [b.id for b in first.data] == newest_first[:2]
        assert first.has_more is True
        second = client.batches.list(limit=2, after=first.data[-1].id)
        assert [b.id for b in second.data] == newest_first[2:4]
        last = client.batches.list(limit=2, after=second.data[-1].id)
        assert [b.id for b in last.data] == newest_first[4:]
        assert last.has_more is False
        assert [b.id for b in client.batches.list(limit=2)] == newest_first  # auto-paging
        assert [b.id for b in client.batches.list()] == newest_first
        with pytest.raises(openai.BadRequestError):
            client.batches.list(limit=101)


def test_openai_cancel(openai_server: FakeServer) -> None:
    openai_server.set_batch(delay_s=60)
    with openai_client(openai_server) as client:
        batch = submit(client, chat_lines(3))
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        assert cancelling.cancelling_at is not None
        cancelled = client.batches.retrieve(batch.id)
        assert cancelled.status == "cancelled"
        assert cancelled.cancelled_at is not None
        assert (cancelled.output_file_id, cancelled.error_file_id) == (None, None)
        assert cancelled.request_counts is not None
        assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (0, 0)
        assert client.batches.cancel(batch.id).status == "cancelled"  # again: no change

        openai_server.set_batch(delay_s=0)  # pending batches end now
        finished = submit(client, chat_lines(1))
        assert client.batches.retrieve(finished.id).status == "completed"
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(finished.id)
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_unknown")


def test_openai_rejects_bad_input(openai_server: FakeServer) -> None:
    with openai_client(openai_server) as client:
        with pytest.raises(openai.BadRequestError, match="one model"):
            submit(client, chat_lines(3, models=("fake-model", "other-model")))
        repeated = chat_lines(2)
        repeated[1]["custom_id"] = repeated[0]["custom_id"]
        with pytest.raises(openai.BadRequestError, match="unique"):
            submit(client, repeated)
        with pytest.raises(openai.BadRequestError, match="input_file_id"):
            client.batches.create(
                input_file_id="file-unknown",
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
        with pytest.raises(openai.NotFoundError):
            client.files.content("file-unknown")
    assert openai_server.batch_creates() == []
    assert openai_server.counts()["status_400"] == 3


@pytest.mark.parametrize(
    ("faults", "status"),
    [(BatchFaults(error=1.0), "completed"), (BatchFaults(expire=1.0), "expired")],
)
def test_openai_errors_and_expiry_land_in_the_error_file(
    openai_server: FakeServer, faults: BatchFaults, status: str
) -> None:
    openai_server.set_batch(delay_s=0, faults=faults)
    with openai_client(openai_server) as client:
        batch = client.batches.retrieve(submit(client, chat_lines(3)).id)
        assert batch.status == status
        assert batch.output_file_id is None
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 3)
        assert (batch.expired_at is not None) == (status == "expired")
        assert (batch.completed_at is not None) == (status == "completed")
        errors = download(client, batch.error_file_id)
        assert client.batches.retrieve(batch.id).error_file_id == batch.error_file_id

    assert sorted(line["custom_id"] for line in errors) == ["trial-0", "trial-1", "trial-2"]
    for line in errors:
        assert line["id"].startswith("batch_req_")
        if status == "expired":
            assert line["response"] is None
            assert line["error"]["code"] == "batch_expired"
        else:
            assert line["error"] is None
            assert line["response"]["status_code"] == 500
            assert line["response"]["body"]["error"]["type"] == "server_error"


def test_openai_batch_endpoints_check_the_key(openai_server: FakeServer) -> None:
    with openai_client(openai_server, key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
        with pytest.raises(openai.AuthenticationError):
            client.batches.list()
    assert openai_server.counts()["auth"] == 2


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_batch_runs_to_completion(anthropic_server: FakeServer) -> None:
    requests = message_requests(3)
    with anthropic_client(anthropic_server) as client:
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 3
        assert batch.results_url is None
        assert (batch.expires_at - batch.created_at).total_seconds() == 86400
        assert anthropic_server.batch_creates() == [batch.id]

        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            client.messages.batches.results(batch.id)
        url = f"{anthropic_server.url}/v1/messages/batches/{batch.id}/results"
        early = urllib.request.Request(url, headers={"x-api-key": KEY})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(early)
        assert refused.value.code == 404
        assert json.loads(refused.value.read())["error"]["type"] == "not_found_error"
        refused.value.close()

        time.sleep(DELAY_S + 0.05)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert ended.ended_at is not None
        assert ended.results_url == url
        assert (ended.request_counts.succeeded, ended.request_counts.processing) == (3, 0)

        results = list(client.messages.batches.results(batch.id))
        assert [r.custom_id for r in results] == ["trial-0", "trial-1", "trial-2"]
        for result, sent in zip(results, requests, strict=True):
            assert result.result.type == "succeeded"
            direct = client.messages.create(**sent["params"])  # the same mock answer
            assert result.result.message.content == direct.content
            assert result.result.message.usage.output_tokens == direct.usage.output_tokens


def test_anthropic_faults_and_cancel(anthropic_server: FakeServer) -> None:
    with anthropic_client(anthropic_server) as client:

        def run(faults: BatchFaults) -> list[Any]:
            anthropic_server.set_batch(delay_s=0, faults=faults)
            batch = client.messages.batches.create(requests=message_requests(2))  # type: ignore[arg-type]
            return list(client.messages.batches.results(batch.id))

        errored = run(BatchFaults(error=1.0))
        assert {r.result.type for r in errored} == {"errored"}
        assert errored[0].result.error.error.type == "api_error"
        assert {r.result.type for r in run(BatchFaults(expire=1.0))} == {"expired"}

        anthropic_server.set_batch(delay_s=60, faults=BatchFaults())
        pending = client.messages.batches.create(requests=message_requests(3))  # type: ignore[arg-type]
        canceling = client.messages.batches.cancel(pending.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        ended = client.messages.batches.retrieve(pending.id)
        assert ended.processing_status == "ended"
        assert ended.request_counts.canceled == 3
        results = client.messages.batches.results(pending.id)
        assert {r.result.type for r in results} == {"canceled"}


def test_anthropic_list_pages_newest_first(anthropic_server: FakeServer) -> None:
    with anthropic_client(anthropic_server) as client:
        ids = [
            client.messages.batches.create(requests=message_requests(1)).id  # type: ignore[arg-type]
            for _ in range(5)
        ]
        newest_first = ids[::-1]
        first = client.messages.batches.list(limit=2)
        assert [b.id for b in first.data] == newest_first[:2]
        assert (first.first_id, first.last_id, first.has_more) == (*newest_first[:2], True)
        assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
        before = client.messages.batches.list(limit=2, before_id=newest_first[3])
        assert [b.id for b in before.data] == newest_first[1:3]
        assert before.has_more is True


def test_anthropic_rejects_bad_custom_ids_and_keys(anthropic_server: FakeServer) -> None:
    with anthropic_client(anthropic_server) as client:
        bad = message_requests(1)
        bad[0]["custom_id"] = "not ok!"
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.batches.create(requests=bad)  # type: ignore[arg-type]
        assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        repeated = message_requests(2)
        repeated[1]["custom_id"] = repeated[0]["custom_id"]
        with pytest.raises(anthropic.BadRequestError, match="unique"):
            client.messages.batches.create(requests=repeated)  # type: ignore[arg-type]
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve("msgbatch_unknown")
    with anthropic_client(anthropic_server, key="sk-wrong") as client:
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.batches.create(requests=message_requests(1))  # type: ignore[arg-type]
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.batches.list()
    assert anthropic_server.batch_creates() == []
    assert anthropic_server.counts()["auth"] == 2


# ------------------------------------------------------------------------------ gemini


def gemini_client(server: FakeServer, key: str = KEY) -> Any:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=key, http_options=options)


def gemini_requests(n: int) -> list[dict[str, Any]]:
    return [
        {"contents": [{"role": "user", "parts": [{"text": f"q{i}"}]}], "metadata": {"key": f"k{i}"}}
        for i in range(n)
    ]


def test_gemini_jobs_list_newest_first_cancel_and_check_keys_and_input() -> None:
    from google.genai import errors

    with FakeServer("google", api_key=KEY, batch_delay_s=3600) as server:
        client = gemini_client(server)
        names = [
            client.batches.create(
                model="fake-model", src=gemini_requests(2), config={"display_name": f"job {i}"}
            ).name
            for i in range(3)
        ]
        listed = [job.name for job in client.batches.list(config={"page_size": 2})]
        assert listed == names[::-1]  # newest first, over two pages
        assert client.batches.get(name=names[0]).state.value == "JOB_STATE_RUNNING"
        client.batches.cancel(name=names[0])
        cancelled = client.batches.get(name=names[0])
        assert cancelled.state.value == "JOB_STATE_CANCELLED" and cancelled.dest is None
        repeated = gemini_requests(2)
        repeated[1]["metadata"] = {"key": "k0"}
        with pytest.raises(errors.ClientError, match="unique"):
            client.batches.create(model="fake-model", src=repeated)
        with pytest.raises(errors.ClientError, match=r"metadata\.key"):
            client.batches.create(model="fake-model", src=[{"contents": "no key"}])
        stranger = gemini_client(server, key="wrong")
        with pytest.raises(errors.ClientError) as refused:
            stranger.batches.get(name=names[1])
        assert refused.value.code == 401
        assert len(server.batch_creates()) == 3


def test_gemini_jobs_from_an_uploaded_file_answer_in_a_results_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.genai import _api_client, errors

    monkeypatch.setattr(_api_client, "CHUNK_SIZE", 100)  # the SDK uploads 100 bytes at a time
    lines = [{"key": f"k{i}", "request": r} for i, r in enumerate(gemini_requests(3))]
    content = jsonl(
        [{**line, "request": {"contents": line["request"]["contents"]}} for line in lines]
    )
    with FakeServer("google", api_key=KEY) as server:
        client = gemini_client(server)
        uploaded = client.files.upload(file=io.BytesIO(content), config={"mime_type": "jsonl"})
        assert uploaded.size_bytes == len(content) > 200
        job = client.batches.create(model="fake-model", src=uploaded.name)
        job = client.batches.get(name=job.name)
        assert job.state.value == "JOB_STATE_SUCCEEDED" and job.dest.inlined_responses is None
        results = [
            json.loads(line) for line in client.files.download(file=job.dest.file_name).splitlines()
        ]
        assert [r["key"] for r in results] == ["k0", "k1", "k2"]
        assert all(r["response"]["candidates"][0]["content"]["parts"][0]["text"] for r in results)
        uploads = [r for r in server.requests if r["path"].startswith("/upload/")]
        assert len(uploads) == 1 + -(-len(content) // 100)  # the start, then each piece

        with pytest.raises(errors.ClientError, match="key"):
            bad = client.files.upload(
                file=io.BytesIO(b'{"request": {}}\n'), config={"mime_type": "jsonl"}
            )
            client.batches.create(model="fake-model", src=bad.name)
        start = urllib.request.Request(
            f"{server.url}/upload/v1beta/files",
            data=b"{}",
            headers={
                "x-goog-api-key": KEY,
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": "10",
            },
        )
        with urllib.request.urlopen(start) as answer:
            session = answer.headers["X-Goog-Upload-URL"]
        skipped = urllib.request.Request(
            session,
            data=b"12345",
            headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "5"},
        )
        with pytest.raises(urllib.error.HTTPError) as wrong_offset:
            urllib.request.urlopen(skipped)
        assert wrong_offset.value.code == 400
        wrong_offset.value.close()  # an HTTPError holds the answer's socket open
        name = job.dest.file_name.removeprefix("files/")
        with pytest.raises(urllib.error.HTTPError) as no_media:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{server.url}/v1beta/files/{name}:download", headers={"x-goog-api-key": KEY}
                )
            )
        assert no_media.value.code == 400
        no_media.value.close()
        stranger = gemini_client(server, key="wrong")
        with pytest.raises(errors.ClientError) as refused:
            stranger.files.download(file=job.dest.file_name)
        assert refused.value.code == 401


# ------------------------------------------------------------------------------- both


def test_outcomes_are_seeded_and_stable() -> None:
    faults = BatchFaults(error=0.3, expire=0.3, seed=5)

    def outcomes() -> list[dict[str, str]]:
        with (
            FakeServer("anthropic", batch_faults=faults) as server,
            anthropic_client(server) as client,
        ):
            batches = [
                client.messages.batches.create(requests=message_requests(12))  # type: ignore[arg-type]
                for _ in range(2)
            ]
            seen: list[dict[str, str]] = []
            for batch in batches:
                first: dict[str, str] = {
                    r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)
                }
                again = {
                    r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)
                }
                assert first == again
                assert server.batches[batch.id]["results"] == first
                seen.append(first)
            return seen

    seen = outcomes()
    assert seen == outcomes()  # the same seed, the same outcomes, on a new server too
    kinds = {kind for batch in seen for kind in batch.values()}
    assert kinds == {"succeeded", "errored", "expired"}
    assert seen[0] != seen[1]  # drawn per batch


def test_reset_forgets_batches(openai_server: FakeServer) -> None:
    with openai_client(openai_server) as client:
        first = submit(client, chat_lines(1))
        openai_server.reset()
        assert openai_server.batch_creates() == []
        assert openai_server.batches == {}
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve(first.id)
        assert [b.id for b in client.batches.list()] == []
