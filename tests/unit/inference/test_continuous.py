"""Continuous batching in the transformers engine: rows join and leave between steps, same tokens as alone."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch
from transformers import Gemma2Config, GenerationConfig, LlamaConfig

from tunery.config import parse_config
from tunery.inference import load_engine
from tunery.inference.batching import Batcher
from tunery.inference.continuous import DecodeBatch, Decoding, decoding_of, has_plain_cache
from tunery.inference.engine import GenerationJob
from tunery.inference.hf_engine import JOIN_WAIT_STEPS

CONVS = [[{"role": "user", "content": "Hello"}],
         [{"role": "user", "content": "What is the capital of France? Write a short poem about the sea."}],
         [{"role": "user", "content": "1 2 3"}], [{"role": "user", "content": "def add(a, b):"}]]


@pytest.fixture(scope="module")
def engine(tiny_chatml_model):
    raw = {"model_name_or_path": str(tiny_chatml_model), "do_sample": False, "max_new_tokens": 8}
    return load_engine(parse_config("chat", raw))


def _alone(engine, job: GenerationJob):
    return engine.batch_generate([job.prompt], **job.gen)[0]


def _forward_calls(model) -> tuple[list[str], object]:
    """Every forward pass of ``model`` as "prefill N" or "step N" (N rows), and the hook's handle."""
    calls: list[str] = []

    def record(module, args, kwargs):
        ids = kwargs["input_ids"]
        calls.append(f"{'prefill' if ids.shape[1] > 1 else 'step'} {ids.shape[0]}")

    return calls, model.register_forward_pre_hook(record, with_kwargs=True)


def _serve(engine, first, late, hand_over_at):
    """generate_rows(first) while joiners hands over ``late`` jobs at the given calls (1 = after the prefill)."""
    offered = []

    def joiners(live: int) -> list[GenerationJob]:
        offered.append(live)
        return [late.pop(0)] if len(offered) in hand_over_at and late else []

    calls, handle = _forward_calls(engine.model)
    try:
        engine.generate_rows(first, joiners)
    finally:
        handle.remove()
    return calls, offered


def test_jobs_join_a_running_batch_and_reply_as_they_would_alone(engine):
    first = [GenerationJob(engine.prompt_ids(c), {"max_new_tokens": 10}) for c in CONVS[:2]]
    late = [GenerationJob(engine.prompt_ids(c), {"max_new_tokens": n}) for c, n in zip(CONVS[2:], (6, 9))]
    joined = list(late)
    calls, _ = _serve(engine, first, late, hand_over_at=(3, 4))
    # the first joiner waits one step for the second; both are prefilled together, then 4 rows decode
    assert calls[:6] == ["prefill 2", "step 2", "step 2", "step 2", "prefill 2", "step 4"]
    for job in first + joined:
        reply = job.future.result()[0]
        alone = _alone(engine, job)
        assert (reply.text, reply.finish_reason) == (alone.text, alone.finish_reason)
        if reply.finish_reason == "length":
            assert reply.completion_tokens == job.gen["max_new_tokens"]


def test_a_lone_joiner_waits_a_few_steps_at_most(engine):
    first = [GenerationJob(engine.prompt_ids(CONVS[1]), {"max_new_tokens": 12})]
    late = [GenerationJob(engine.prompt_ids(CONVS[2]), {"max_new_tokens": 4})]
    joined = list(late)
    calls, offered = _serve(engine, first, late, hand_over_at=(2,))
    assert calls[:7] == ["prefill 1", "step 1"] + ["step 1"] * JOIN_WAIT_STEPS + ["prefill 1", "step 2"]
    assert offered[:6] == [1, 1, 2, 2, 2, 2]  # a waiting joiner counts as a row: the batch never exceeds its size
    assert joined[0].future.result()[0].text == _alone(engine, joined[0]).text


def test_a_row_that_ends_replies_before_the_batch_is_done(engine):
    short = GenerationJob(engine.prompt_ids(CONVS[0]), {"max_new_tokens": 2})
    seen_done: list[bool] = []
    long = GenerationJob(engine.prompt_ids(CONVS[1]), {"max_new_tokens": 12},
                         on_text=lambda piece: seen_done.append(short.future.done()))
    engine.generate_rows([short, long])
    assert long.future.result()[0].completion_tokens > 3
    assert seen_done[-1] and not seen_done[0]  # the short reply was out while the long row still decoded


def test_the_batcher_hands_over_only_jobs_with_the_same_settings(engine):
    batcher = Batcher(engine, max_batch_size=8, window_s=0.0, regroup_s=0.0)
    started = threading.Event()
    gate = threading.Event()
    first = GenerationJob(engine.prompt_ids(CONVS[1]), {"max_new_tokens": 12},
                          on_text=lambda piece: (started.set(), gate.wait(10)))
    same = GenerationJob(engine.prompt_ids(CONVS[2]), {"max_new_tokens": 4})
    other = GenerationJob(engine.prompt_ids(CONVS[3]), {"max_new_tokens": 4, "repetition_penalty": 1.3})
    try:
        batcher.submit(first)
        assert started.wait(60)
        batcher.submit(other)
        batcher.submit(same)
        time.sleep(0.05)
        gate.set()
        replies = [job.future.result(timeout=120)[0] for job in (first, same, other)]
    finally:
        batcher.close()
    assert batcher.stats["joined"] == 1 and batcher.stats["batches"] == 2  # `same` joined; `other` had its own
    assert [r.text for r in replies] == [_alone(engine, job).text for job in (first, same, other)]


def test_repetition_penalty_and_sampling_follow_generate(engine):
    job = GenerationJob(engine.prompt_ids(CONVS[1]), {"max_new_tokens": 12, "repetition_penalty": 1.5})
    engine.generate_rows([job])
    assert job.future.result()[0].text == _alone(engine, job).text

    torch.manual_seed(0)
    sampled = [GenerationJob(engine.prompt_ids(c), {"max_new_tokens": 5, "temperature": 0.9, "top_p": 0.8})
               for c in CONVS]
    engine.generate_rows(sampled)
    assert all(0 < j.future.result()[0].completion_tokens <= 5 for j in sampled)


def test_decoding_of_maps_settings_or_declines():
    config = GenerationConfig(eos_token_id=2, pad_token_id=0)
    assert decoding_of({"do_sample": False, "max_new_tokens": 5, "repetition_penalty": 1.0}, config) == Decoding()
    assert decoding_of({"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 20}, config) == Decoding(
        do_sample=True, temperature=0.7, top_p=0.9, top_k=20)
    assert decoding_of({"do_sample": True}, config).top_k == 50  # generate's default top_k
    assert decoding_of({"num_beams": 2}, config) is None
    assert decoding_of({"num_return_sequences": 2, "do_sample": True}, config) is None
    assert decoding_of({"typical_p": 0.5}, config) is None
    assert decoding_of({}, GenerationConfig(no_repeat_ngram_size=3)) is None
    assert decoding_of({"do_sample": False}, GenerationConfig(do_sample=True, temperature=0.6)) == Decoding()
    assert decoding_of({}, GenerationConfig(do_sample=True, temperature=0.6)) == Decoding(do_sample=True,
                                                                                          temperature=0.6, top_k=50)
    chain = Decoding(do_sample=True, temperature=0.5, top_k=10, top_p=0.9, repetition_penalty=1.2).processors()
    assert [type(p).__name__ for p in chain] == ["RepetitionPenaltyLogitsProcessor", "TemperatureLogitsWarper",
                                                 "TopKLogitsWarper", "TopPLogitsWarper"]


def test_only_plain_key_value_caches_are_merged():
    llama = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, vocab_size=64)
    gemma2 = Gemma2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=8, vocab_size=64, sliding_window=4)
    assert has_plain_cache(SimpleNamespace(config=llama))
    assert not has_plain_cache(SimpleNamespace(config=gemma2))  # sliding-window layers


def test_keep_drops_rows_and_the_padding_nobody_needs(engine):
    batch = DecodeBatch(engine.model, Decoding(), pad_token_id=0)
    with torch.inference_mode():
        batch.admit([[5, 6, 7, 8, 9, 10], [5, 6]])
        assert batch.mask.tolist() == [[1] * 6, [0, 0, 0, 0, 1, 1]]
        batch.step()
        batch.keep([1])
        assert batch.mask.tolist() == [[1, 1, 1]]  # the long row's columns are gone
        assert all(layer.keys.shape[0] == 1 and layer.keys.shape[2] == 3 for layer in batch.cache.layers)
        batch.step()
        assert batch.size == 1 and len(batch.tokens[0]) == 2 + 3
        batch.keep([])
        assert batch.size == 0 and batch.cache is None
