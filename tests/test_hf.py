"""The `hf/` provider and the steering helper on tiny random-weight models built offline.

Two 2-layer Llamas (~100k parameters) and a BPE tokenizer trained on a few sentences are
built once per session (trialrun.local.tiny) and loaded through the real `hf/<path>` route:
no network, no downloaded weights. Random weights give junk text, so these tests check
structure, determinism and changes, never content. Nothing here runs on a GPU: CUDA memory,
bf16 and the CUDA cache's release are unchecked on this machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the local extra: pip install torch==2.13.0")
pytest.importorskip("transformers", reason="the local extra: pip install 'trialrun[local]'")

from tests.conftest import base_config, only_run, read_results  # noqa: E402

from trialrun.errors import ConfigError, ProviderError  # noqa: E402
from trialrun.local import steering  # noqa: E402
from trialrun.local.generation import Row, generate_batch, render_prompt  # noqa: E402
from trialrun.local.models import LoadedModel, load  # noqa: E402
from trialrun.local.residency import HISTORY  # noqa: E402
from trialrun.local.tiny import build_tiny_model  # noqa: E402
from trialrun.providers.hf import HfProvider  # noqa: E402
from trialrun.types import Request  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return build_tiny_model(root / "a", seed=0), build_tiny_model(root / "b", seed=1)


@pytest.fixture(scope="session")
def loaded(tiny: tuple[Path, Path]) -> LoadedModel:
    return load(str(tiny[0]))


def prompt(loaded: LoadedModel, text: str) -> list[int]:
    return render_prompt(loaded.tokenizer, [{"role": "user", "content": text}])


PROMPTS = ["hello ocean", "The quick brown fox jumps over the lazy dog", "Fear is"]


def hf_config(tiny: tuple[Path, Path], **changes: Any) -> dict[str, Any]:
    config = base_config(
        models=[{"model": f"hf/{tiny[0]}"}, {"model": f"hf/{tiny[1]}"}],
        params={"max_tokens": 6, "top_logprobs": 3},
        followups=[],
    )
    config.update(changes)
    return config


def write(tmp_path: Path, config: dict[str, Any]) -> str:
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


# ------------------------------------------------------------------ a real run


def test_a_run_of_two_local_models_loads_each_once_and_never_both(
    tiny: tuple[Path, Path], tmp_path: Path, cli: Any
) -> None:
    HISTORY.clear()
    options = {"batch_size": 2}  # 4 batches a model: room to swap between them, were it allowed
    models = [{"model": f"hf/{path}", "options": options} for path in tiny]
    result = cli("run", write(tmp_path, hf_config(tiny, models=models)))
    assert result.code == 0, result.err
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 16 and all(r["status"] == "done" for r in records)
    events = [(kind, name) for _, kind, name in HISTORY]
    resident: set[str] = set()
    for kind, name in events:
        if kind == "load":
            assert not resident, f"{name} loaded while {resident} resident"
            resident.add(name)
        else:
            resident.discard(name)
    assert not resident  # both freed when their lanes ended
    loads = [name for kind, name in events if kind == "load"]
    assert sorted(loads) == sorted([str(tiny[0]), str(tiny[1])])  # each once: grouped by model


def test_local_records_have_the_api_models_shape(
    tiny: tuple[Path, Path], tmp_path: Path, cli: Any
) -> None:
    assert cli("run", write(tmp_path, hf_config(tiny))).code == 0
    for record in read_results(only_run(tmp_path / "runs")):
        turn = record["turns"][0]
        assert isinstance(turn["response"], str)
        assert turn["usage"]["input"] > 0 and 0 < turn["usage"]["output"] <= 6
        assert turn["finish_reason"] in ("stop", "length")
        assert turn["served_model"] == str(Path(record["model"][3:]).resolve())
        assert turn["cost_usd"] == 0.0
        assert len(turn["logprobs"]) == turn["usage"]["output"] - (turn["finish_reason"] == "stop")
        for step in turn["logprobs"]:
            tops = [t["logprob"] for t in step["top"]]
            assert len(tops) == 3 and tops == sorted(tops, reverse=True)
            assert all(lp <= 0 for lp in tops) and step["logprob"] <= tops[0]
            if record["grid"]["temperature"] == 0.0:  # greedy: the chosen one is the top one
                assert step["top"][0] == {"token": step["token"], "logprob": step["logprob"]}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{tmp}/nowhere", "no such folder"),
        ("{tmp}/empty", "no config.json in that folder"),
        ("nobody-here/no-such-model", "not in the Hugging Face cache and trialrun does not"),
    ],
)
def test_a_missing_local_model_is_refused_in_one_line(
    tmp_path: Path,
    cli: Any,
    tiny: tuple[Path, Path],
    source: str,
    expected: str,
) -> None:
    (tmp_path / "empty").mkdir()
    model = "hf/" + source.format(tmp=tmp_path)
    result = cli("run", write(tmp_path, hf_config(tiny, models=[{"model": model}])))
    assert result.code == 2
    assert f"models[0].model: {model}" in result.err and expected in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_batch_mode_with_a_local_model_is_refused(
    tmp_path: Path, cli: Any, tiny: tuple[Path, Path]
) -> None:
    result = cli("run", write(tmp_path, hf_config(tiny, mode="batch")))
    assert result.code == 2 and "no batch API for provider 'hf'" in result.err


def test_mock_leaves_local_models_in_place(
    tmp_path: Path, cli: Any, tiny: tuple[Path, Path]
) -> None:
    assert cli("run", write(tmp_path, hf_config(tiny)), "--mock").code == 0
    records = read_results(only_run(tmp_path / "runs"))
    assert {r["turns"][0]["served_model"] for r in records} == {str(p) for p in tiny}


# ------------------------------------------------------------------ generation


def test_chosen_logprob_is_the_transition_score_of_the_raw_logits(loaded: LoadedModel) -> None:
    ids = prompt(loaded, PROMPTS[0])
    [result] = generate_batch(loaded, [Row(ids, 6, top_logprobs=2)])
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=6,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=loaded.pad_id,
        )
    scores = loaded.model.compute_transition_scores(
        out.sequences, out.logits, normalize_logits=True
    )[0]
    assert out.sequences[0, len(ids) :].tolist()[: len(result.token_ids)] == result.token_ids
    for step, expected in zip(result.logprobs or [], scores.tolist(), strict=False):
        assert step["logprob"] == pytest.approx(expected, abs=1e-5)


def test_greedy_rows_are_the_same_alone_and_left_padded_in_a_batch(loaded: LoadedModel) -> None:
    rows = [Row(prompt(loaded, p), 8) for p in PROMPTS]
    batched = generate_batch(loaded, rows)
    alone = [generate_batch(loaded, [row])[0] for row in rows]
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [r.token_ids for r in generate_batch(loaded, rows)] == [r.token_ids for r in batched]


def test_a_seed_repeats_sampled_output_and_another_seed_changes_it(loaded: LoadedModel) -> None:
    def rows(seed: int) -> list[Row]:
        return [
            Row(prompt(loaded, p), 10, temperature=1.0, seed=seed + i)
            for i, p in enumerate(PROMPTS)
        ]

    first = [r.token_ids for r in generate_batch(loaded, rows(10))]
    assert [r.token_ids for r in generate_batch(loaded, rows(10))] == first
    assert [r.token_ids for r in generate_batch(loaded, rows(20))] != first
    # each row has its own generator: alone, a row draws what it drew in the batch (CPU fp32)
    assert generate_batch(loaded, rows(10)[1:2])[0].token_ids == first[1]


def test_top_k_one_samples_the_greedy_answer(loaded: LoadedModel) -> None:
    ids = prompt(loaded, PROMPTS[1])
    greedy = generate_batch(loaded, [Row(ids, 8)])[0].token_ids
    assert (
        generate_batch(loaded, [Row(ids, 8, temperature=1.5, top_k=1, seed=5)])[0].token_ids
        == greedy
    )


# ------------------------------------------------------------------ the provider: batching, OOM


def request(model: str, text: str) -> Request:
    return Request(model, [{"role": "user", "content": text}], {"max_tokens": 5})


async def answers(provider: HfProvider, model: str, texts: list[str]) -> list[Any]:
    """Concurrent calls inside the model's lane, as the executor makes them."""
    async with provider.lane(model):
        calls = [provider.generate(request(model, t)) for t in texts]
        return await asyncio.gather(*calls, return_exceptions=True)


def oom_when(monkeypatch: pytest.MonkeyPatch, too_big: Any) -> list[int]:
    """Make the real model class raise CUDA out-of-memory when `too_big(batch)`."""
    from transformers import LlamaForCausalLM

    sizes: list[int] = []
    real = LlamaForCausalLM.forward

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        batch = kwargs["input_ids"].shape[0]
        sizes.append(batch)
        if too_big(batch):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    return sizes


def test_out_of_memory_halves_the_batch_and_answers_everyone(
    tiny: tuple[Path, Path], loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = PROMPTS * 2
    expected = [generate_batch(loaded, [Row(prompt(loaded, t), 5)])[0].text for t in texts]
    sizes = oom_when(monkeypatch, lambda batch: batch > 2)
    provider = HfProvider(batch_size=8, gather_ms=50)
    got = asyncio.run(answers(provider, str(tiny[0]), texts))
    assert [r.text for r in got] == expected
    assert provider.oom_splits >= 2 and provider.batch_size <= 2
    assert sizes[0] == 6 and 2 in sizes  # 6 failed, then 3 + 3, then halves of those


def test_a_request_that_never_fits_fails_alone_as_final(
    tiny: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    oom_when(monkeypatch, lambda batch: True)
    provider = HfProvider(batch_size=4, gather_ms=50)
    got = asyncio.run(answers(provider, str(tiny[0]), PROMPTS))
    assert all(isinstance(r, ProviderError) and r.kind == "final" for r in got)
    assert "out of memory" in str(got[0])


def test_a_run_survives_out_of_memory(
    tiny: tuple[Path, Path], tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = oom_when(monkeypatch, lambda batch: batch > 1)
    models = [{"model": f"hf/{tiny[0]}", "options": {"batch_size": 4}}]
    assert cli("run", write(tmp_path, hf_config(tiny, models=models))).code == 0
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 8 and all(r["status"] == "done" for r in records)
    assert any(s > 1 for s in sizes)  # batches were tried, and halved down to one


# ------------------------------------------------------------------ steering


def layer_output(model: Any, layer: int, ids: Any, mask: Any) -> Any:
    seen: list[Any] = []
    target = steering.decoder_layers(model)[layer]
    handle = target.register_forward_hook(
        lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).clone())
    )
    try:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    return seen[0]


def padded_batch(loaded: LoadedModel) -> tuple[Any, Any]:
    from trialrun.local.generation import pad_left

    return pad_left([prompt(loaded, p) for p in PROMPTS], loaded.pad_id, loaded.device)


def test_steering_adds_the_vector_on_real_positions_only_with_the_right_norm_ratio(
    loaded: LoadedModel,
) -> None:
    ids, mask = padded_batch(loaded)
    assert (mask == 0).any()  # the batch really is padded
    vector = torch.randn(
        loaded.model.config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    base = layer_output(loaded.model, 0, ids, mask)
    with steering.steer(loaded.model, vector, layer=0, strength=3.0) as injection:
        steered = layer_output(loaded.model, 0, ids, mask)
    real = mask.bool()
    assert torch.equal(steered[~real], base[~real])  # padding untouched
    assert torch.allclose(
        steered[real] - base[real], (3.0 * vector).expand_as(base[real]), atol=1e-5
    )
    mean_norm = base.norm(dim=-1)[real].mean().item()
    assert injection.mean_activation_norm == pytest.approx(mean_norm, rel=1e-5)
    assert injection.relative_norm == pytest.approx(
        3.0 * vector.norm().item() / mean_norm, rel=1e-5
    )
    assert injection.to_json()["vector_sha256"] == steering.vector_hash(vector)


def test_steering_changes_greedy_output_and_leaves_no_hook(loaded: LoadedModel) -> None:
    rows = [Row(prompt(loaded, p), 8) for p in PROMPTS]
    baseline = [r.token_ids for r in generate_batch(loaded, rows)]
    vector = steering.concept_vector(
        loaded.model, loaded.tokenizer, ["The ocean is deep"], ["The fox jumps"], layer=0.5
    )
    hooks = steering.active_hooks(loaded.model)
    with steering.steer(loaded.model, vector / vector.norm(), layer=0.5, strength=50.0):
        steered = [r.token_ids for r in generate_batch(loaded, rows)]
    assert steered != baseline
    assert steering.active_hooks(loaded.model) == hooks
    assert [r.token_ids for r in generate_batch(loaded, rows)] == baseline


def test_hooks_are_removed_when_generation_fails(loaded: LoadedModel) -> None:
    hooks = steering.active_hooks(loaded.model)
    vector = torch.ones(loaded.model.config.hidden_size)
    with pytest.raises(RuntimeError, match="boom"), steering.steer(loaded.model, vector, 1, 2.0):
        raise RuntimeError("boom")
    assert steering.active_hooks(loaded.model) == hooks


def test_generated_only_steering_leaves_the_prompt_pass_alone(loaded: LoadedModel) -> None:
    ids, mask = padded_batch(loaded)
    vector = torch.ones(loaded.model.config.hidden_size)
    base = layer_output(loaded.model, 1, ids, mask)
    with steering.steer(loaded.model, vector, -1, 5.0, positions="generated") as injection:
        assert torch.equal(layer_output(loaded.model, 1, ids, mask), base)
    assert injection.layer == 1 and injection.calls == 1


@pytest.mark.parametrize(
    ("layer", "index"), [(0.5, 0), (1.0, 1), (0.01, 0), (-1, 1), (0, 0), (1, 1)]
)
def test_layers_by_index_or_fraction_of_depth(loaded: LoadedModel, layer: Any, index: int) -> None:
    assert steering.resolve_layer(loaded.model, layer) == index


@pytest.mark.parametrize("layer", [2, -3, 0.0, 1.5, True])
def test_a_layer_beyond_the_model_is_refused(loaded: LoadedModel, layer: Any) -> None:
    with pytest.raises(ConfigError, match="steering: layer"):
        steering.resolve_layer(loaded.model, layer)


# ------------------------------------------------------------------ residency


def test_a_second_local_lane_waits_until_the_first_closes() -> None:
    from trialrun.local.residency import Holder, Residency

    async def scenario() -> list[str]:
        residency, order = Residency(), []

        async def nothing() -> None:
            return None

        first, second = Holder("a", nothing), Holder("b", nothing)
        await residency.open_lane(first)
        waiting = asyncio.create_task(residency.open_lane(second))
        await asyncio.sleep(0.1)
        order.append("b open" if waiting.done() else "b waits")
        residency.close_lane(first)
        await asyncio.wait_for(waiting, 1)
        order.append("b open")
        return order

    assert asyncio.run(scenario()) == ["b waits", "b open"]


def test_an_idle_model_is_evicted_for_another_and_a_busy_one_is_not() -> None:
    from trialrun.local.residency import Holder, Residency

    async def scenario() -> list[str]:
        residency, log = Residency(), []

        def holder(name: str) -> Holder:
            async def free() -> None:
                log.append(f"free {name}")

            return Holder(name, free)

        async def loader(name: str) -> Any:
            async def load() -> None:
                log.append(f"load {name}")

            return load

        a, b = holder("a"), holder("b")
        await residency.use(a, await loader("a"))  # a busy
        blocked = asyncio.create_task(residency.use(b, await loader("b")))
        await asyncio.sleep(0.1)
        log.append(f"resident {residency.loaded}")
        residency.done(a)  # a idle: b may evict it
        await asyncio.wait_for(blocked, 1)
        log.append(f"resident {residency.loaded}")
        return log

    assert asyncio.run(scenario()) == [
        "load a",
        "resident ['a']",
        "free a",
        "load b",
        "resident ['b']",
    ]


def test_a_lane_loads_its_model_on_entry_and_frees_it_on_exit(tiny: tuple[Path, Path]) -> None:
    from trialrun.local.residency import RESIDENCY

    async def scenario() -> tuple[list[str], list[str]]:
        provider = HfProvider()
        async with provider.lane(str(tiny[1])):
            inside = RESIDENCY.loaded
        await provider.aclose()
        return inside, RESIDENCY.loaded

    assert asyncio.run(scenario()) == ([str(tiny[1])], [])
