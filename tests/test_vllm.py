"""The `vllm/` provider (issue 15 part 6) against a fake of vLLM's offline API.

No GPU and no vLLM here: `tests/fakes/vllm` mimics the parts of vLLM's public API the
provider calls (LLM, LLM.chat, SamplingParams, RequestOutput, CompletionOutput, Logprob;
its docstring names the vLLM files and commits it follows) over a deterministic toy model,
and is put on sys.path only by the `fake` fixture. So these tests check trialrun's side:
the params vLLM receives, the records made of its outputs (the same shape as `hf/`'s),
batching into one `chat` call, one engine at a time, and the refusals. Whether real vLLM
behaves as the fake does is for a GPU machine (bench/bench_vllm.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import base_config, only_run, read_results
from trialrun.errors import TrialrunError
from trialrun.local.residency import HISTORY
from trialrun.types import Request

FAKES = Path(__file__).parent / "fakes"
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`import vllm` finds tests/fakes/vllm for this test only; yields what the fake saw."""
    monkeypatch.syspath_prepend(str(FAKES))
    _drop_vllm_modules()
    from vllm._fake import RECORD

    RECORD.clear()
    HISTORY.clear()
    yield RECORD
    _drop_vllm_modules()


def _drop_vllm_modules() -> None:
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def model_folder(root: Path, name: str, *, template: bool = True, **config: Any) -> Path:
    """A model folder the fake loads: config.json (and a chat template, unless not)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "fake", **config}))
    if template:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    return folder


def write(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def vllm_config(*folders: Path, **changes: Any) -> dict[str, Any]:
    config = base_config(
        models=[{"model": f"vllm/{folder}"} for folder in folders],
        params={"max_tokens": 12, "top_logprobs": 3},
        followups=[],
    )
    config.update(changes)
    return config


def sent(record: Any) -> list[tuple[list[dict[str, Any]], Any]]:
    """Every (conversation, SamplingParams) the fake's `chat` received, in order."""
    return [
        (conversation, params)
        for call in record.calls
        for conversation, params in zip(call.conversations, call.sampling_params, strict=True)
    ]


# ------------------------------------------------------------------ records


def test_a_run_records_vllm_outputs_in_the_hf_shape(tmp_path: Path, cli: Any, fake: Any) -> None:
    from vllm import LLM

    folder = model_folder(tmp_path, "alpha")
    result = cli("run", write(tmp_path, vllm_config(folder)))
    assert result.code == 0, result.err
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 8 and {r["status"] for r in records} == {"done"}
    by_seed = {params.seed: (c, params) for c, params in sent(fake)}
    engine = LLM(model=str(folder))  # the same toy model, asked again, outside the run
    for record in records:
        turn = record["turns"][0]
        conversation, params = by_seed[record["seed"]]
        [output] = engine.chat([conversation], [params])
        completion = output.outputs[0]
        assert turn["response"] == completion.text
        assert turn["usage"]["input"] == len(output.prompt_token_ids)
        assert turn["usage"]["output"] == len(completion.token_ids)  # the end token counted
        assert turn["finish_reason"] == completion.finish_reason
        assert turn["served_model"] == str(folder.resolve()) and turn["cost_usd"] == 0.0
        ended = turn["finish_reason"] == "stop"
        assert len(turn["logprobs"]) == turn["usage"]["output"] - ended  # not the end token
        for step, token, position in zip(
            turn["logprobs"], completion.token_ids, completion.logprobs, strict=False
        ):
            chosen = position[token]
            ranked = sorted((p for p in position.values() if p.rank <= 3), key=lambda p: p.rank)
            assert step == {
                "token": chosen.decoded_token,
                "logprob": chosen.logprob,
                "top": [{"token": p.decoded_token, "logprob": p.logprob} for p in ranked],
            }
            tops = [t["logprob"] for t in step["top"]]
            assert len(tops) == 3 and tops == sorted(tops, reverse=True)
            if record["grid"]["temperature"] == 0.0:  # greedy: the chosen one is the top one
                assert step["top"][0] == {"token": step["token"], "logprob": step["logprob"]}
    assert {r["turns"][0]["finish_reason"] for r in records} == {"stop", "length"}


def test_a_tokenizer_without_a_chat_template_gets_the_plain_one(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    from trialrun.providers.vllm import PLAIN_TEMPLATE

    plain = model_folder(tmp_path, "plain", template=False)
    templated = model_folder(tmp_path, "templated")
    config = vllm_config(plain, templated, grid={"temperature": [0.0]})
    assert cli("run", write(tmp_path, config)).code == 0
    templates = {call.kwargs["chat_template"] for call in fake.calls}
    assert templates == {PLAIN_TEMPLATE, None}  # None: the tokenizer's own
    for record in read_results(only_run(tmp_path / "runs")):
        prompt = f"Is claim {record['item_id'][1:]} true?"
        if record["model"].endswith("/plain"):  # the toy tokenizer: one token a character
            expected = f"system: Be brief.\nuser: {prompt}\nassistant:"
        else:
            expected = f"<|system|>Be brief.<|user|>{prompt}<|assistant|>"
        assert record["turns"][0]["usage"]["input"] == len(expected)


# ------------------------------------------------------------------ what vLLM receives


def test_params_and_options_reach_vllm_as_sampling_params_and_engine_args(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    options = {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5,
        "dtype": "bfloat16",
        "max_model_len": 512,
        "engine": {"enforce_eager": True},
    }
    params = {"max_tokens": 7, "top_p": 0.9, "top_k": 40, "top_logprobs": 2, "stop": ["x"]}
    config = vllm_config(folder, params={**params, "presence_penalty": 0.5})
    config["models"][0]["options"] = options
    result = cli("run", write(tmp_path, config))
    assert result.code == 0, result.err
    assert "cannot take presence_penalty, stop" in result.err  # left out, with a warning
    [(kind, model, engine)] = fake.events[:1]
    assert (kind, model) == ("init", str(folder.resolve()))
    keys = ("tensor_parallel_size", "gpu_memory_utilization", "dtype", "max_model_len")
    assert {key: engine[key] for key in (*keys, "max_logprobs", "logprobs_mode")} == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5,
        "dtype": "bfloat16",
        "max_model_len": 512,
        "max_logprobs": 20,
        "logprobs_mode": "raw_logprobs",
    }
    assert engine["enforce_eager"] is True and "engine" not in engine  # its contents are LLM's
    records = {r["seed"]: r for r in read_results(only_run(tmp_path / "runs"))}
    received = {p.seed: p for _, p in sent(fake)}
    assert set(received) == set(records)  # each trial's own seed, once
    for seed, p in received.items():
        temperature = records[seed]["grid"]["temperature"]
        assert (p.n, p.max_tokens, p.logprobs, p.temperature) == (1, 7, 2, temperature)
        assert (p.presence_penalty, p.stop) == (0.0, [])  # not sent
        if temperature > 0:
            assert (p.top_p, p.top_k) == (0.9, 40)
        else:  # vLLM's greedy sampling resets them
            assert (p.top_p, p.top_k) == (1.0, 0)


def test_unset_params_are_greedy_with_hf_s_defaults_not_vllm_s(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    config = vllm_config(folder, params={}, grid={})
    assert cli("run", write(tmp_path, config)).code == 0
    records = read_results(only_run(tmp_path / "runs"))
    for _, p in sent(fake):  # vLLM's own defaults would be temperature 1.0, max_tokens 16
        assert (p.temperature, p.logprobs, p.top_p, p.top_k) == (0.0, None, 1.0, 0)
        assert p.max_tokens == records[0]["params"].get("max_tokens", 512)
    assert all(r["turns"][0]["logprobs"] is None for r in records)


# ------------------------------------------------------------------ batching and residency


def test_concurrent_requests_go_to_vllm_in_one_chat_call(tmp_path: Path, fake: Any) -> None:
    from trialrun.providers.vllm import VllmProvider

    folder = str(model_folder(tmp_path, "alpha"))
    requests = [
        Request(folder, [{"role": "user", "content": "x" * (i + 1)}], {"seed": i, "max_tokens": 3})
        for i in range(10)
    ]

    async def main(**options: Any) -> list[Any]:
        provider = VllmProvider(**options)
        async with provider.lane(folder):
            answers = await asyncio.gather(*(provider.generate(r) for r in requests))
        await provider.aclose()
        return answers

    answers = asyncio.run(main())
    [call] = fake.calls
    assert call.conversations == [r.messages for r in requests]
    assert [p.seed for p in call.sampling_params] == list(range(10))
    lengths = [a.usage.input for a in answers]  # each answer is its own request's
    assert lengths == [lengths[0] + i for i in range(10)]
    fake.clear()
    asyncio.run(main(batch_size=4))
    assert [len(call.conversations) for call in fake.calls] == [4, 4, 2]


def test_a_run_s_trials_are_batched_into_few_chat_calls(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    config = vllm_config(folder)
    config["models"][0]["options"] = {"gather_ms": 50}
    assert cli("run", write(tmp_path, config)).code == 0
    sizes = [len(call.conversations) for call in fake.calls]
    assert sum(sizes) == 8 and len(sizes) < 8 and max(sizes) > 1


def test_two_vllm_models_are_never_resident_together(tmp_path: Path, cli: Any, fake: Any) -> None:
    folders = [model_folder(tmp_path, "alpha"), model_folder(tmp_path, "beta")]
    config = vllm_config(*folders)
    for entry in config["models"]:
        entry["options"] = {"batch_size": 2}  # 4 calls a model: room to swap, were it allowed
    assert cli("run", write(tmp_path, config)).code == 0
    assert len(read_results(only_run(tmp_path / "runs"))) == 16
    resident: set[str] = set()
    for _, kind, name in HISTORY:
        if kind == "load":
            assert not resident, f"{name} loaded while {resident} resident"
            resident.add(name)
        else:
            resident.discard(name)
    assert not resident
    # the engine itself is gone (garbage collected) before the next one starts
    engines = [(kind, Path(model).name) for kind, model, _ in fake.events]
    first, second = engines[0][1], engines[2][1]
    assert engines == [("init", first), ("freed", first), ("init", second), ("freed", second)]
    assert {first, second} == {"alpha", "beta"}


# ------------------------------------------------------------------ refusals


def test_top_logprobs_above_vllm_s_max_fails_only_those_trials(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    config = vllm_config(folder, grid={"top_logprobs": [2, 25]})
    assert cli("run", write(tmp_path, config)).code == 3  # some trials failed
    records = read_results(only_run(tmp_path / "runs"))
    for record in records:
        if record["grid"]["top_logprobs"] == 2:
            assert record["status"] == "done"
        else:
            assert record["status"] == "failed"
            assert record["error"].splitlines()[0] == (
                "turn 1: top_logprobs 25 is above vLLM's max_logprobs (20): lower it, or set the "
                "model's options.max_logprobs"
            )
    assert {p.logprobs for _, p in sent(fake)} == {2}  # the refused ones never reached vLLM
    fake.clear()
    config["models"][0]["options"] = {"max_logprobs": 25}
    (tmp_path / "runs").rename(tmp_path / "runs-1")
    assert cli("run", write(tmp_path, config)).code == 0
    assert {r["status"] for r in read_results(only_run(tmp_path / "runs"))} == {"done"}
    assert fake.events[0][2]["max_logprobs"] == 25


def test_a_param_vllm_would_refuse_fails_its_trial_before_reaching_vllm(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    config = vllm_config(folder, grid={"temperature": [0.0, 3.0]})  # vLLM takes [0, 2]
    assert cli("run", write(tmp_path, config)).code == 3
    for record in read_results(only_run(tmp_path / "runs")):
        if record["grid"]["temperature"] == 0.0:
            assert record["status"] == "done"
        else:
            assert record["error"].splitlines()[0] == (
                "turn 1: vllm refused the params: temperature must be in [0, 2], got 3.0."
            )
    assert {p.temperature for _, p in sent(fake)} == {0.0}


def test_a_request_vllm_refuses_fails_alone_not_its_batchmates(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    items = [{"id": f"q{i}", "prompt": "Short?", "category": "c"} for i in range(3)]
    items.append({"id": "long", "prompt": "L" * 200, "category": "c"})
    config = vllm_config(folder, dataset={"items": items}, grid={"temperature": [0.0]})
    config["models"][0]["options"] = {"max_model_len": 60, "gather_ms": 50}
    assert cli("run", write(tmp_path, config)).code == 3  # some trials failed
    records = {r["item_id"]: r for r in read_results(only_run(tmp_path / "runs"))}
    assert [records[f"q{i}"]["status"] for i in range(3)] == ["done"] * 3
    assert records["long"]["status"] == "failed"
    length = len("<|system|>Be brief.<|user|>" + "L" * 200 + "<|assistant|>")
    first = records["long"]["error"].splitlines()[0]
    assert first.startswith(
        f"turn 1: vllm refused the request: The decoder prompt (length {length}) is longer "
        "than the maximum model length of 60."
    )
    assert max(len(call.conversations) for call in fake.calls) == 4  # then one by one


def test_steering_and_exclusive_are_refused_in_one_line(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    from trialrun.providers.vllm import STEERING_REFUSAL, VllmProvider

    (tmp_path / "vllmtasks.py").write_text(
        "async def steer(ctx):\n"
        "    return await ctx.generate_steered(ctx.messages, None, layer=0.5, strength=1.0)\n"
        "async def plain(ctx):\n"
        "    return {'text': (await ctx.generate(ctx.messages)).text}\n"
    )
    folder = model_folder(tmp_path, "alpha")
    label = f"vllm/{folder}"
    try:
        for task in ("steer", "plain"):
            config = vllm_config(folder, task=f"vllmtasks:{task}")
            assert cli("run", write(tmp_path, config)).code == (0 if task == "plain" else 1)
            records = read_results(only_run(tmp_path / "runs"))
            (tmp_path / "runs").rename(tmp_path / f"runs-{task}")
            if task == "plain":  # generate works; only the model's insides are refused
                assert {r["status"] for r in records} == {"done"}
                continue
            for record in records:
                first = record["error"].splitlines()[0]
                assert first.startswith(
                    f"task raised TrialrunError: {label}: {STEERING_REFUSAL}"
                ), first
    finally:
        sys.modules.pop("vllmtasks", None)

    provider = VllmProvider()
    with pytest.raises(TrialrunError, match="cannot hook a layer") as caught:
        asyncio.run(provider.run_exclusive(str(folder), lambda loaded: loaded))
    assert str(caught.value) == f"{label}: {STEERING_REFUSAL}"
    with pytest.raises(TrialrunError, match="cannot hook a layer"):
        provider.resident_model(str(folder))


def test_an_engine_that_does_not_start_fails_its_trials_in_one_line(
    tmp_path: Path, cli: Any, fake: Any
) -> None:
    folder = model_folder(tmp_path, "alpha")
    config = vllm_config(folder)
    config["models"][0]["options"] = {"engine": {"no_such_engine_arg": 1}}
    assert cli("run", write(tmp_path, config)).code == 1  # every trial failed
    records = read_results(only_run(tmp_path / "runs"))
    assert {r["status"] for r in records} == {"failed"} and not fake.calls
    for record in records:
        assert record["error"].splitlines()[0] == (
            f"turn 1: vllm/{folder} did not start: EngineArgs.__init__() got an unexpected keyword "
            "argument 'no_such_engine_arg'"
        )


@pytest.mark.parametrize(
    ("model", "options", "expected"),
    [
        ("vllm/{tmp}/nowhere", {}, "models[0].model: vllm/{tmp}/nowhere: no such folder"),
        (
            "vllm/nobody-here/no-such-model",
            {},
            "vllm/nobody-here/no-such-model: not in the Hugging Face cache and trialrun does "
            "not download",
        ),
        ("vllm/{tmp}/alpha", {"gpu_memory_utilization": 1.5}, "options.gpu_memory_utilization"),
        ("vllm/{tmp}/alpha", {"engine": {"dtype": "half"}}, "dtype set by trialrun"),
    ],
)
def test_bad_vllm_input_is_refused_in_one_line_before_anything_runs(
    tmp_path: Path, cli: Any, fake: Any, model: str, options: dict[str, Any], expected: str
) -> None:
    model_folder(tmp_path, "alpha")
    entry = {"model": model.format(tmp=tmp_path), "options": options}
    result = cli("run", write(tmp_path, vllm_config(models=[entry])))
    assert result.code == 2
    assert expected.format(tmp=tmp_path) in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not fake.events


def test_without_vllm_installed_the_error_says_which_extra(tmp_path: Path, cli: Any) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    folder = model_folder(tmp_path, "alpha")
    result = cli("run", write(tmp_path, vllm_config(folder)))
    assert result.code == 2
    assert "the 'vllm' provider needs the vllm package: pip install 'trialrun[vllm]'" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
