"""SmolLM2-135M-Instruct through `tunery chat`: a sensible answer that ends at <|im_end|>."""

from __future__ import annotations

import pytest

from tunery.cli.main import main as tunery_main
from tunery.config import parse_config
from tunery.inference import load_engine

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


def test_chat_query_answers_paris(smollm2_path, capsys):
    rc = tunery_main(["chat", "--model_name_or_path", str(smollm2_path), "--do_sample", "false",
                      "--max_new_tokens", "48", "--query", QUESTION])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Paris" in out and "<|im_end|>" not in out and "<|im_start|>" not in out


def test_reply_ends_at_end_of_turn_token(smollm2_path):
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(smollm2_path), "do_sample": False}))
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in engine.stop_token_ids()
    (reply,) = engine.chat([{"role": "user", "content": QUESTION}], max_new_tokens=64)
    assert "Paris" in reply.text
    assert reply.finish_reason == "stop" and reply.completion_tokens < 64  # stopped by <|im_end|>, not the limit
    # the stream gives the same greedy text and the same stop
    stream = engine.stream_chat([{"role": "user", "content": QUESTION}], max_new_tokens=64)
    assert "".join(stream) == reply.text and stream.finish_reason == "stop"
