"""Which generation settings apply: the user's, else the model's generation_config.json, else LLaMA-Factory's."""

from __future__ import annotations

import json
import shutil

from transformers import GenerationConfig

from tunery.config import parse_config
from tunery.config.generating_args import GeneratingArguments
from tunery.inference import load_engine
from tunery.inference.generation import (
    describe_generation,
    model_generation_defaults,
    resolve_generating_args,
    user_generation_keys,
)

QWEN_LIKE = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
             "bos_token_id": 1, "eos_token_id": [2, 3]}


def test_a_config_with_only_token_ids_is_no_generation_config():
    derived = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    assert model_generation_defaults(derived) is None
    assert model_generation_defaults({"_from_model_config": True, "eos_token_id": 2}) is None
    assert model_generation_defaults(None) is None


def test_model_values_fill_in_transformers_defaults():
    values = model_generation_defaults(GenerationConfig(**QWEN_LIKE))
    assert values["do_sample"] is True and values["temperature"] == 0.7 and values["top_k"] == 20
    assert values["num_beams"] == 1
    # a file that sets only a temperature decodes greedily in transformers: so it does here
    values = model_generation_defaults({"temperature": 0.2})
    assert values["do_sample"] is False and values["temperature"] == 0.2
    assert "max_new_tokens" not in values
    assert model_generation_defaults({"do_sample": True, "max_new_tokens": 300})["max_new_tokens"] == 300


def test_no_generation_config_keeps_llama_factory_defaults():
    args, sources = resolve_generating_args(GeneratingArguments(), set(), None)
    assert args == GeneratingArguments()
    assert args.do_sample is True and args.temperature == 0.95 and args.top_p == 0.7
    assert set(sources.values()) == {"default"}


def test_model_generation_config_replaces_the_defaults():
    args, sources = resolve_generating_args(GeneratingArguments(), set(), GenerationConfig(**QWEN_LIKE))
    assert (args.do_sample, args.temperature, args.top_p, args.top_k, args.repetition_penalty) == (True, 0.7, 0.8, 20, 1.05)
    assert args.max_new_tokens == GeneratingArguments().max_new_tokens
    assert sources["temperature"] == "model" and sources["max_new_tokens"] == "default"
    greedy, _ = resolve_generating_args(GeneratingArguments(), set(), {"do_sample": False})
    assert greedy.do_sample is False


def test_an_explicit_user_setting_always_wins():
    cfg = parse_config("chat", {"model_name_or_path": "x", "temperature": 0.3, "top_k": 5})
    given = user_generation_keys(cfg.raw)
    assert given == {"temperature", "top_k"}
    args, sources = resolve_generating_args(cfg.generation, given, GenerationConfig(**QWEN_LIKE))
    assert args.temperature == 0.3 and args.top_k == 5 and args.top_p == 0.8
    assert sources["temperature"] == "user" and sources["top_p"] == "model"
    # a user setting equal to LLaMA-Factory's default still wins over the model's value
    cfg = parse_config("chat", {"model_name_or_path": "x", "do_sample": True, "temperature": 0.95})
    args, _ = resolve_generating_args(cfg.generation, user_generation_keys(cfg.raw), {"do_sample": False, "temperature": 0.1})
    assert args.do_sample is True and args.temperature == 0.95
    # a sampling temperature without do_sample asks for sampling even when the model decodes greedily
    cfg = parse_config("chat", {"model_name_or_path": "x", "temperature": 0.5})
    args, _ = resolve_generating_args(cfg.generation, user_generation_keys(cfg.raw), {"do_sample": False, "top_k": 1})
    assert args.do_sample is True and args.top_k == 1
    # do_sample false from the user beats a sampling model
    cfg = parse_config("chat", {"model_name_or_path": "x", "do_sample": "false"})
    args, _ = resolve_generating_args(cfg.generation, user_generation_keys(cfg.raw), GenerationConfig(**QWEN_LIKE))
    assert args.do_sample is False


def test_describe_generation_says_how_to_get_greedy_replies():
    line = describe_generation(GeneratingArguments(), {"do_sample": "default"})
    assert "sampling" in line and "--do_sample false" in line and "LLaMA-Factory" in line
    line = describe_generation(GeneratingArguments(do_sample=False), {"do_sample": "model"})
    assert "greedy" in line and "generation_config.json" in line and "--do_sample" not in line


def test_engine_takes_the_model_generation_config(tiny_chatml_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_chatml_model, model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps({**QWEN_LIKE, "eos_token_id": 2}))
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(model_dir), "top_p": 0.5}))
    args = engine.generating_args
    assert args.do_sample is True and args.temperature == 0.7 and args.top_k == 20
    assert args.top_p == 0.5  # the user's
    kwargs = engine.generate_kwargs({})
    assert kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.5
    assert engine.generate_kwargs({"temperature": 0})["do_sample"] is False  # per call still wins
