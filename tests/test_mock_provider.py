"""The offline mock provider: deterministic, varied answers, usage, logprobs, forced and injected failures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import base_config, only_run, read_results
from trialrun.errors import ProviderError
from trialrun.providers import BatchAPI, Provider, registry
from trialrun.providers.mock import MockProvider, answer
from trialrun.types import Request, Response


def request(
    prompt: str = "Is the sky blue?",
    model: str = "alpha",
    options: dict[str, Any] | None = None,
    system: str | None = "Be brief.",
    **params: Any,
) -> Request:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return Request(model, messages, params, options=options or {})


def generate(provider: MockProvider, req: Request) -> Response:
    return asyncio.run(provider.generate(req))


def opener(text: str) -> str:
    if text.startswith("Yes"):
        return "yes"
    if text.startswith("No"):
        return "no"
    return "unsure"


# ------------------------------------------------------------------ determinism and variety


def test_same_request_gives_the_same_answer() -> None:
    req = request(temperature=0.7, seed=11)
    first, second = answer(req), answer(req)
    assert first.text == second.text
    assert first.usage == second.usage
    assert first.request_id == second.request_id


def test_same_request_gives_the_same_answer_from_separate_provider_instances() -> None:
    req = request(temperature=0.7, seed=11)
    assert generate(MockProvider(), req).text == generate(MockProvider(), req).text


def test_registry_creates_the_mock_provider_by_name() -> None:
    provider = registry.create("mock", latency_s=0.0)
    assert isinstance(provider, MockProvider)
    assert "mock" in registry.available()


def test_a_provider_class_without_generate_cannot_be_instantiated() -> None:
    class Silent(Provider):
        name = "silent"

    with pytest.raises(TypeError, match="generate"):
        Silent()  # type: ignore[abstract]


def test_a_batch_provider_missing_a_hook_cannot_be_instantiated() -> None:
    class HalfBatch(MockProvider):
        cancel_batch = BatchAPI.cancel_batch  # as if the adapter never wrote it

    with pytest.raises(TypeError, match="cancel_batch"):
        HalfBatch()
    with pytest.raises(TypeError, match="batch_limits"):

        class NoLimits(MockProvider):
            batch_limits = None  # type: ignore[assignment]


def test_each_provider_states_its_own_facts() -> None:
    assert registry.env_keys("google") == ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    assert registry.sdk_packages() == {
        "openai": "openai",
        "anthropic": "anthropic",
        "google-genai": "google",
        "transformers": "local",
        "vllm": "vllm",
    }
    names = ("mock", "openai", "anthropic", "google", "hf")
    assert [registry.takes_batches(name) for name in names] == [True, True, True, True, False]
    assert [name for name in registry.BUILTIN if registry.is_local(name)] == ["hf", "vllm"]
    assert registry.lane("openai", "openai/gpt-4o") == "openai"
    assert registry.lane("hf", "hf/Qwen/Qwen2.5-0.5B") == "hf/Qwen/Qwen2.5-0.5B"
    assert registry.lane("hf", "small") == "hf:small"


def test_different_models_give_different_answers() -> None:
    texts = {answer(request(model=m, temperature=0.0)).text for m in ("alpha", "beta", "gamma")}
    assert len(texts) == 3


def test_different_prompts_give_different_answers() -> None:
    texts = {answer(request(f"Is claim {i} true?", temperature=0.0)).text for i in range(5)}
    assert len(texts) == 5


def test_different_temperatures_give_different_answers() -> None:
    texts = {answer(request(temperature=t, seed=3)).text for t in (0.0, 0.3, 0.7, 1.0)}
    assert len(texts) == 4


def test_temperature_zero_ignores_the_seed() -> None:
    texts = {answer(request(temperature=0.0, seed=s)).text for s in range(10)}
    assert len(texts) == 1


def test_temperature_above_zero_varies_with_the_seed() -> None:
    texts = {answer(request(temperature=0.9, seed=s)).text for s in range(10)}
    assert len(texts) >= 5


def test_served_model_and_request_id_describe_the_call() -> None:
    response = answer(request(model="beta", temperature=0.0))
    assert response.served_model == "beta"
    assert response.request_id is not None and response.request_id.startswith("mock-")
    assert response.cost_usd == 0.0


def test_verdict_rates_differ_between_models_over_many_prompts() -> None:
    prompts = [f"Is claim number {i} about topic {i % 7} true?" for i in range(300)]
    rates = {}
    for model in ("alpha", "beta", "gamma", "delta", "epsilon"):
        verdicts = [opener(answer(request(p, model=model, temperature=0.0)).text) for p in prompts]
        rates[model] = verdicts.count("yes") / len(verdicts)
        # Every model answers both ways: the statistics downstream are not trivial.
        assert 0.1 < rates[model] < 0.9, rates
        assert {"yes", "no"} <= set(verdicts)
    assert max(rates.values()) - min(rates.values()) > 0.15, rates


def test_answers_at_temperature_can_be_unsure() -> None:
    verdicts = {
        opener(answer(request(f"Claim {i}?", temperature=1.0, seed=i)).text) for i in range(300)
    }
    assert verdicts == {"yes", "no", "unsure"}


# ------------------------------------------------------------------ usage, length, logprobs


def test_usage_counts_input_words_plus_four_per_message_and_output_tokens() -> None:
    req = request("one two three four", system="alpha beta", temperature=0.0)
    response = answer(req)
    assert response.usage.input == (2 + 4) + (4 + 4)
    assert response.usage.output == len(response.text.split(" "))
    assert response.usage.total == response.usage.input + response.usage.output
    assert response.usage.to_json() == {
        "input": response.usage.input,
        "output": response.usage.output,
        "total": response.usage.total,
    }


def test_answer_within_max_tokens_finishes_with_stop() -> None:
    response = answer(request(temperature=0.0, max_tokens=10_000))
    assert response.finish_reason == "stop"


def test_max_tokens_truncates_the_answer_and_finish_reason_is_length() -> None:
    full = answer(request(temperature=0.0))
    assert len(full.text.split(" ")) > 3
    cut = answer(request(temperature=0.0, max_tokens=3))
    assert cut.finish_reason == "length"
    assert cut.usage.output == 3
    assert cut.text.split(" ") == full.text.split(" ")[:3]


def test_no_logprobs_unless_asked() -> None:
    assert answer(request(temperature=0.0)).logprobs is None


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_logprobs_gives_k_alternatives_per_token_sorted_descending(k: int) -> None:
    response = answer(request(temperature=0.0, top_logprobs=k))
    tokens = response.text.split(" ")
    assert response.logprobs is not None
    assert [entry["token"] for entry in response.logprobs] == tokens
    for entry in response.logprobs:
        top = entry["top"]
        assert len(top) == k
        assert top[0]["token"] == entry["token"]
        assert top[0]["logprob"] == entry["logprob"]
        values = [alt["logprob"] for alt in top]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)


def test_logprobs_flag_alone_gives_the_chosen_token_only() -> None:
    response = answer(request(temperature=0.0, logprobs=True))
    assert response.logprobs is not None
    assert all(len(entry["top"]) == 1 for entry in response.logprobs)


# ------------------------------------------------------------------ forced failures


def test_fail_auth_option_raises_a_401_auth_error() -> None:
    with pytest.raises(ProviderError) as info:
        generate(MockProvider(), request(options={"fail": "auth"}))
    assert info.value.kind == "auth"
    assert info.value.status == 401


def test_fail_final_option_raises_a_400_final_error() -> None:
    with pytest.raises(ProviderError) as info:
        generate(MockProvider(), request(options={"fail": "final"}))
    assert info.value.kind == "final"
    assert info.value.status == 400


def test_refuse_marker_in_a_prompt_raises_a_final_content_policy_error() -> None:
    with pytest.raises(ProviderError) as info:
        generate(MockProvider(), request("Tell me [[mock:refuse]] now"))
    assert info.value.kind == "final"
    assert info.value.status == 400
    assert "content policy" in str(info.value)


def test_classify_error_maps_provider_errors_and_timeouts() -> None:
    provider = MockProvider()
    err = ProviderError("x", kind="retryable", status=429, retry_after=1.5)
    assert provider.classify_error(err) == ("retryable", 1.5)
    assert provider.classify_error(TimeoutError()) == ("retryable", None)
    assert provider.classify_error(ConnectionError()) == ("retryable", None)
    assert provider.classify_error(ValueError("bug")) == ("final", None)


# ------------------------------------------------------------------ injected faults


@pytest.mark.parametrize(
    ("fault", "status"), [("rate_limit", 429), ("server", 500), ("overloaded", 529)]
)
def test_injected_fault_at_rate_one_raises_the_matching_status(fault: str, status: int) -> None:
    provider = MockProvider(errors={fault: 1.0}, retry_after_s=0.25)
    for _ in range(5):
        with pytest.raises(ProviderError) as info:
            generate(provider, request())
        assert info.value.kind == "retryable"
        assert info.value.status == status
        assert info.value.retry_after == (0.25 if status == 429 else None)


def test_injected_timeout_hangs_until_the_caller_gives_up() -> None:
    provider = MockProvider(errors={"timeout": 1.0})

    async def scenario() -> None:
        await asyncio.wait_for(provider.generate(request()), timeout=0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(scenario())


def test_injected_faults_at_rate_zero_never_fire() -> None:
    provider = MockProvider(errors={"server": 0.0, "rate_limit": 0.0})
    requests = [request(f"q{i}") for i in range(200)]

    async def scenario() -> list[Response | BaseException]:
        calls = (provider.generate(r) for r in requests)
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(scenario())
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert [o.text for o in outcomes if isinstance(o, Response)] == [
        answer(r).text for r in requests
    ]


def test_injected_fault_rates_are_roughly_honoured() -> None:
    provider = MockProvider(errors={"server": 0.2, "rate_limit": 0.1})

    async def scenario() -> list[int | None]:
        statuses: list[int | None] = []
        for i in range(1000):
            try:
                await provider.generate(request(f"q{i}"))
                statuses.append(200)
            except ProviderError as exc:
                statuses.append(exc.status)
        return statuses

    statuses = asyncio.run(scenario())
    assert 0.14 < statuses.count(500) / 1000 < 0.26
    assert 0.05 < statuses.count(429) / 1000 < 0.15


def test_latency_is_applied_to_each_call() -> None:
    import time

    provider = MockProvider(latency_s=0.1)
    start = time.monotonic()
    generate(provider, request())
    assert time.monotonic() - start >= 0.09


def test_max_concurrency_follows_the_setting() -> None:
    assert MockProvider(concurrency=5).max_concurrency() == 5


def _answers_in_a_process(folder: Path, hash_seed: str) -> list[str]:
    """Every response text of a mock sweep run by `trialrun run` in a process of its own."""
    folder.mkdir()
    dataset = {
        "items": [
            {"id": f"q{i}", "prompt": f"Is claim {i} about x{i} true?", "category": "c"}
            for i in range(12)
        ]
    }
    config = base_config(dataset=dataset, grid={"temperature": [0.0, 0.7]}, repeats=2)
    (folder / "exp.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "TRIALRUN_CACHE_DIR": str(folder / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "trialrun", "run", "exp.yaml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = sorted(read_results(only_run(folder / "runs")), key=lambda r: r["trial_id"])
    return [turn["response"] for record in records for turn in record["turns"]]


def test_the_same_requests_get_the_same_answers_in_processes_with_other_string_hashes(
    tmp_path: Path,
) -> None:
    # Words of equal length once came out in the order of the set that held them, which the
    # process's string-hash seed decides.
    first = _answers_in_a_process(tmp_path / "one", "1")
    second = _answers_in_a_process(tmp_path / "two", "2")
    assert len(first) == 192  # 12 items x 2 models x 2 temperatures x 2 repeats x 2 turns
    assert first == second
