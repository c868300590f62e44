"""The Ollama Modelfile reproduces the chat template: pieces, Go template, stop words, fallbacks."""

from __future__ import annotations

import json

import pytest

from tunery.errors import ModelError
from tunery.export.modelfile import (
    build_modelfile,
    derive_pieces,
    go_template,
    render_like_ollama,
    write_modelfile,
)

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c\nd"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "e"}, {"role": "user", "content": "f"}],
]
# Official templates whose turns are uniform, so a per-role Ollama template reproduces them exactly.
UNIFORM = {
    "meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2-0.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
    "HuggingFaceTB/SmolLM2-135M-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "HuggingFaceH4/zephyr-7b-beta",
    "01-ai/Yi-1.5-6B-Chat", "microsoft/phi-4",
}


def tunery_render(tokenizer):
    from tunery.data.template import get_template

    template = get_template("auto", tokenizer)
    return template, lambda messages, gen: template.render_text(messages, add_generation_prompt=gen)


@pytest.mark.parametrize("style", ["chatml", "llama"])
def test_pieces_render_every_conversation_like_the_template(style):
    from tests.fixtures.tiny_models import build_tokenizer

    tokenizer = build_tokenizer(style)
    _, render = tunery_render(tokenizer)
    pieces = derive_pieces(render, tokenizer.bos_token)
    for messages in CONVERSATIONS:
        assert render_like_ollama(pieces, messages) == render(messages, True)
    if style == "chatml":
        assert pieces.default_system == "You are a helpful assistant."
        assert pieces.assistant_prefix == "<|im_start|>assistant\n" and pieces.bos == ""
    else:
        assert pieces.default_system is None and pieces.bos == "<|begin_of_text|>"
        assert pieces.user_suffix == "<|eot_id|>"


def test_chatml_modelfile_text(tmp_path):
    from tests.fixtures.tiny_models import build_tokenizer

    tokenizer = build_tokenizer("chatml")
    template, _ = tunery_render(tokenizer)
    path = write_modelfile(tmp_path, "tiny-f16.gguf", template, tokenizer, template.stop_token_ids(tokenizer))
    text = path.read_text()
    assert text.startswith("FROM ./tiny-f16.gguf\n")
    assert 'SYSTEM """You are a helpful assistant."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert text.count("PARAMETER stop") == 1  # eos and the end-of-turn token are the same here
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in text
    assert "{{-" not in text  # trimming would eat the newlines the template needs


def test_llama_style_stop_words_include_end_of_turn(tmp_path):
    from tests.fixtures.tiny_models import build_tokenizer

    tokenizer = build_tokenizer("llama")
    template, _ = tunery_render(tokenizer)
    text = write_modelfile(tmp_path, "m.gguf", template, tokenizer, template.stop_token_ids(tokenizer)).read_text()
    assert 'PARAMETER stop "<|eot_id|>"' in text
    assert 'TEMPLATE """<|begin_of_text|>{{ range' in text
    assert "SYSTEM" not in text


def test_go_template_quotes_braces():
    from tunery.export.modelfile import ChatPieces

    pieces = ChatPieces("", "<s>{{", "</s>", "[U]", "[/U]", "[A]", "[/A]")
    assert '<s>{{ "{{" }}{{ .Content }}' in go_template(pieces)
    assert 'PARAMETER stop "say \\"hi\\""' in build_modelfile("x.gguf", pieces, ['say "hi"'])


def test_official_uniform_templates_derive_exactly(reference_dir):
    from transformers.utils.chat_template_utils import render_jinja_template

    entries = {e["model_id"]: e for e in json.loads((reference_dir / "chat_templates.json").read_text())}
    for model_id in sorted(UNIFORM):
        entry = entries[model_id]

        def render(messages, gen, entry=entry):
            out, _ = render_jinja_template(
                conversations=[messages], chat_template=entry["chat_template"], add_generation_prompt=gen,
                bos_token=entry.get("bos_token") or "", eos_token=entry.get("eos_token") or "",
            )
            return out[0]

        pieces = derive_pieces(render, entry.get("bos_token"))
        for messages in CONVERSATIONS:
            assert render_like_ollama(pieces, messages) == render(messages, True), model_id


def test_template_folding_system_into_user_turn_is_refused(reference_dir, tmp_path):
    """Llama-2 puts the system prompt inside the first [INST]: no per-role template matches it."""
    from transformers import PreTrainedTokenizerFast

    from tests.fixtures.tiny_models import build_tokenizer

    entry = next(e for e in json.loads((reference_dir / "chat_templates.json").read_text())
                 if e["model_id"] == "meta-llama/Llama-2-7b-chat-hf")
    tokenizer: PreTrainedTokenizerFast = build_tokenizer("llama")
    tokenizer.chat_template = entry["chat_template"]
    with pytest.raises(ModelError, match="Ollama template"):
        derive_pieces(lambda m, g: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=g))
    text = write_modelfile(tmp_path, "m.gguf", None, tokenizer, [tokenizer.eos_token_id]).read_text()
    assert "TEMPLATE omitted" in text and 'TEMPLATE """' not in text
    assert f'PARAMETER stop "{tokenizer.eos_token}"' in text
