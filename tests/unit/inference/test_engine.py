"""The transformers engine on tiny models: prompts, batching, end-of-turn stops, stop strings, streaming."""

from __future__ import annotations

import time

import pytest

from tests.unit.scripted_model import script_model
from tunery.config import parse_config
from tunery.errors import ConfigError
from tunery.inference import load_engine
from tunery.inference.batching import Batcher
from tunery.inference.engine import GenerationJob
from tunery.inference.generation import cut_at_stop, held_back, merge_generate_kwargs

USER = [{"role": "user", "content": "Hello"}]


def _engine(model_dir, **settings):
    raw = {"model_name_or_path": str(model_dir), "do_sample": False, "max_new_tokens": 8, **settings}
    return load_engine(parse_config("chat", raw))


@pytest.fixture(scope="module")
def engine(tiny_chatml_model):
    return _engine(tiny_chatml_model)


@pytest.fixture()
def scripted(tiny_chatml_model):
    """A fresh engine whose model answers ' Paris' ' is' then <|im_end|>, then would say 'sky'."""
    eng = _engine(tiny_chatml_model)
    tok = eng.tokenizer
    words = [tok.convert_tokens_to_ids(t) for t in tok.tokenize(" Paris is")]
    sky = tok.tokenize(" sky")
    chain = [eng.prompt_ids(USER)[-1], *words, tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids(sky[0])]
    script_model(eng.model, chain)
    return eng


def test_prompt_ids_are_the_template_rendering(engine):
    text = engine.tokenizer.decode(engine.prompt_ids(USER))
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = engine.tokenizer.decode(engine.prompt_ids(USER, system="Be brief."))
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "helpful assistant" not in with_system


def test_stop_ids_include_end_of_turn(engine):
    assert engine.tokenizer.convert_tokens_to_ids("<|im_end|>") in engine.stop_token_ids()


def test_left_padded_batch_equals_one_by_one(engine):
    convs = [USER, [{"role": "user", "content": "What is the capital of France? Write a short poem."}],
             [{"role": "user", "content": "1 2 3"}]]
    prompts = [engine.prompt_ids(c) for c in convs]
    assert len({len(p) for p in prompts}) == 3  # really padded
    batched = engine.batch_generate(prompts)
    single = [engine.batch_generate([p])[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.prompt_tokens for r in batched] == [len(p) for p in prompts]
    assert all(r.completion_tokens == 8 and r.finish_reason == "length" for r in batched)


def test_generation_stops_at_end_of_turn(scripted):
    (reply,) = scripted.chat(USER, max_new_tokens=20)
    assert reply.text == " Paris is"
    assert reply.finish_reason == "stop"
    assert reply.completion_tokens == 3  # two words and <|im_end|>; 'sky' never comes


def test_stream_matches_and_stops(scripted):
    stream = scripted.stream_chat(USER, max_new_tokens=20)
    assert "".join(stream) == " Paris is"
    assert stream.finish_reason == "stop" and stream.completion_tokens == 3


def test_stop_strings_cut_batch_and_stream(scripted):
    (reply,) = scripted.chat(USER, stop=[" is"])
    assert reply.text == " Paris" and reply.finish_reason == "stop"
    stream = scripted.stream_chat(USER, stop=["ris i"])  # spans two tokens: held back, then cut
    assert "".join(stream) == " Pa" and stream.finish_reason == "stop"


def test_n_answers_greedy_and_sampled(engine):
    greedy = engine.chat(USER, num_return_sequences=2)
    assert len(greedy) == 2 and greedy[0].text == greedy[1].text
    sampled = engine.chat(USER, num_return_sequences=3, temperature=1.0, top_k=0, top_p=1.0)
    assert len(sampled) == 3


def test_closing_a_stream_releases_the_model(engine):
    stream = engine.stream_chat(USER, max_new_tokens=50)
    next(stream)
    stream.close()
    assert not engine.lock.locked()
    assert engine.chat(USER)[0].completion_tokens == 8


def test_generation_error_in_stream_is_raised_not_hung(engine):
    with pytest.raises(ValueError):
        list(engine.stream_chat(USER, num_beams=2))  # transformers refuses streaming with beam search
    assert not engine.lock.locked()


def test_merge_generate_kwargs_rules():
    defaults = {"do_sample": True, "temperature": 0.95, "top_p": 0.7, "top_k": 50, "max_new_tokens": 1024,
                "num_beams": 1}
    greedy = merge_generate_kwargs(defaults, {"temperature": 0, "max_new_tokens": 5, "stop": "x", "top_p": None})
    assert greedy == {"do_sample": False, "max_new_tokens": 5, "num_beams": 1, "stop": ["x"],
                      "num_return_sequences": 1}
    sampled = merge_generate_kwargs({**defaults, "do_sample": False}, {"temperature": 0.5})
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.5
    with pytest.raises(ConfigError, match="frequency_penalty"):
        merge_generate_kwargs(defaults, {"frequency_penalty": 1})


def test_stop_string_helpers():
    assert cut_at_stop("abc END def", ["END", "c"]) == ("ab", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert held_back("Hello <|", ["<|end|>"]) == 2
    assert held_back("Hello", ["<|end|>"]) == 0


def test_unknown_backend_is_config_error(tiny_chatml_model):
    cfg = parse_config("chat", {"model_name_or_path": str(tiny_chatml_model)})
    cfg.model.infer_backend = "onnx"
    with pytest.raises(ConfigError, match="infer_backend 'onnx'"):
        load_engine(cfg)


PROMPTS = [USER, [{"role": "user", "content": "What is the capital of France? Write a short poem about the sea."}],
           [{"role": "user", "content": "1 2 3"}], [{"role": "user", "content": "def add(a, b):"}]]


def _jobs(engine, convs, **gen):
    return [GenerationJob(engine.prompt_ids(c), dict(gen)) for c in convs]


def _forward_rows(model) -> tuple[list[int], object]:
    """Rows of every forward pass of ``model`` (a list filled by a hook) and the hook's handle."""
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    return rows, handle


def test_rows_in_one_continuous_batch_equal_one_at_a_time(engine):
    jobs = _jobs(engine, PROMPTS, max_new_tokens=12)
    assert len({len(j.prompt) for j in jobs}) == len(jobs)  # really left-padded
    rows, handle = _forward_rows(engine.model)
    try:
        engine.generate_rows(jobs)
    finally:
        handle.remove()
    assert rows[0] == len(jobs)  # one prefill of every prompt, then steps over the rows still going
    assert rows == sorted(rows, reverse=True) and len(rows) <= 12
    batched = [j.future.result()[0] for j in jobs]
    single = [engine.batch_generate([j.prompt], max_new_tokens=12)[0] for j in jobs]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in single]
    assert [r.finish_reason for r in batched] == [r.finish_reason for r in single]


def test_settings_the_loop_does_not_apply_use_one_generate_call(tiny_chatml_model):
    engine = _engine(tiny_chatml_model)
    engine.model.generation_config.no_repeat_ngram_size = 2  # a logits processor the loop does not have
    jobs = _jobs(engine, PROMPTS, max_new_tokens=12)
    calls = []
    original = engine.model.generate
    engine.model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw)
    try:
        engine.generate_rows(jobs)
    finally:
        engine.model.generate = original
    assert calls == [len(jobs)]  # one batched call
    batched = [j.future.result()[0] for j in jobs]
    single = [engine.batch_generate([j.prompt], max_new_tokens=12)[0] for j in jobs]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.finish_reason for r in batched] == [r.finish_reason for r in single]


def test_each_row_stops_on_its_own(scripted):
    pieces = []
    jobs = [GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 1}),
            GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 20}),
            GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 20, "stop": [" is"]}),
            GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 20}, on_text=pieces.append)]
    scripted.generate_rows(jobs)
    replies = [j.future.result()[0] for j in jobs]
    assert [(r.text, r.finish_reason) for r in replies] == [
        (" Paris", "length"), (" Paris is", "stop"), (" Paris", "stop"), (" Paris is", "stop")]
    assert [r.completion_tokens for r in replies] == [1, 3, 2, 3]  # 'sky' after <|im_end|> never counted
    assert "".join(pieces) == " Paris is"


def test_a_cancelled_row_stops_and_the_others_finish(scripted):
    keep = GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 20})
    gone = GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 20})
    gone.on_text = lambda piece: gone.cancel.set()  # the reader leaves after the first piece
    early = GenerationJob(scripted.prompt_ids(USER), {"max_new_tokens": 20})
    early.cancel.set()
    scripted.generate_rows([keep, gone, early])
    assert keep.future.result()[0].text == " Paris is"
    (reply,) = gone.future.result()
    assert reply.finish_reason == "cancelled" and reply.completion_tokens == 1
    assert early.future.result()[0].finish_reason == "cancelled" and early.future.result()[0].completion_tokens == 0
    assert not scripted.lock.locked()


def test_batcher_gathers_concurrent_jobs(engine):
    batcher = Batcher(engine, max_batch_size=8, window_s=2.0)
    try:
        jobs = [batcher.submit(job) for job in _jobs(engine, PROMPTS, max_new_tokens=6)]
        replies = [j.future.result(timeout=120)[0] for j in jobs]
    finally:
        batcher.close()
    assert batcher.stats["largest_batch"] == len(PROMPTS) and batcher.stats["batches"] == 1
    assert [r.text for r in replies] == [engine.batch_generate([j.prompt], max_new_tokens=6)[0].text for j in jobs]


def test_batch_size_one_serves_one_at_a_time(engine):
    batcher = Batcher(engine, max_batch_size=1, window_s=0.5)
    try:
        jobs = [batcher.submit(job) for job in _jobs(engine, PROMPTS[:3], max_new_tokens=3)]
        assert all(len(j.future.result(timeout=120)) == 1 for j in jobs)
    finally:
        batcher.close()
    assert batcher.stats["largest_batch"] == 1 and batcher.stats["rows"] == 3


def test_context_length_is_the_models(engine):
    assert engine.context_length == 512  # the tiny fixture's max_position_embeddings


def test_batcher_regroups_clients_that_come_back_after_the_window(engine):
    # four clients, each sending its next request only after its reply: the second round arrives spread
    # over more than the 10 ms window; the batcher waits (regroup_s) for as many as the last batch held
    batcher = Batcher(engine, max_batch_size=8, window_s=0.01, regroup_s=5.0)
    try:
        first = [batcher.submit(job) for job in _jobs(engine, PROMPTS[:4], max_new_tokens=2)]
        for job in first:
            job.future.result(timeout=120)
        second = []
        for job in _jobs(engine, PROMPTS[:4], max_new_tokens=2):
            second.append(batcher.submit(job))
            time.sleep(0.2)
        for job in second:
            job.future.result(timeout=120)
    finally:
        batcher.close()
    assert batcher.stats["batches"] == 2 and batcher.stats["largest_batch"] == 4


def test_a_lone_client_never_waits_for_the_regroup(engine):
    batcher = Batcher(engine, max_batch_size=8, window_s=0.01, regroup_s=30.0)
    try:
        for job in _jobs(engine, PROMPTS[:2], max_new_tokens=2):
            batcher.submit(job).future.result(timeout=20)  # a 30 s regroup wait would time out here
    finally:
        batcher.close()
    # the second request starts a batch of its own, or (when it comes before the first batch's loop has
    # ended) joins that loop as its only row: either way served alone and at once
    assert batcher.stats["batches"] + batcher.stats["joined"] == 2 and batcher.stats["largest_batch"] == 1
