"""The transformers engine on tiny models: prompts, batching, end-of-turn stops, stop strings, streaming."""

from __future__ import annotations

import pytest

from tests.unit.scripted_model import script_model
from tunery.config import parse_config
from tunery.errors import ConfigError
from tunery.inference import load_engine
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
