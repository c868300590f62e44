"""The export carries the chat format training used: a builtin template becomes the tokenizer's Jinja."""

from __future__ import annotations

import pytest

from tunery.config import parse_config
from tunery.export.chat_template import align_chat_template, jinja_template
from tunery.export.modelfile import VERIFY_CONVERSATIONS

CONVERSATIONS = [*VERIFY_CONVERSATIONS,
                 [{"role": "user", "content": "x\ny"}, {"role": "assistant", "content": "z"}]]


@pytest.mark.parametrize("name", ["chatml", "llama3", "qwen", "zephyr", "alpaca", "phi4"])
def test_builtin_becomes_an_equivalent_jinja_template(name):
    from tests.fixtures.tiny_models import build_tokenizer
    from tunery.data.template import get_template

    tokenizer = build_tokenizer("chatml")
    tokenizer.chat_template = None
    template = get_template(name, tokenizer)
    assert align_chat_template(tokenizer, template)
    for messages in CONVERSATIONS:
        gen = messages[-1]["role"] == "user"
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen) == \
            template.render_text(messages, add_generation_prompt=gen), (name, messages)


def test_auto_and_agreeing_templates_leave_the_tokenizer_alone():
    from tests.fixtures.tiny_models import build_tokenizer
    from tunery.data.template import get_template

    tokenizer = build_tokenizer("chatml")
    original = tokenizer.chat_template
    assert not align_chat_template(tokenizer, get_template("auto", tokenizer))
    assert tokenizer.chat_template == original


def test_unexpressible_builtin_keeps_the_tokenizer_template():
    """Llama 2 folds the system prompt into the first [INST]: no per-role Jinja; nothing is replaced."""
    from tests.fixtures.tiny_models import build_tokenizer
    from tunery.data.template import get_template

    tokenizer = build_tokenizer("llama")
    original = tokenizer.chat_template
    assert not align_chat_template(tokenizer, get_template("llama2", tokenizer))
    assert tokenizer.chat_template == original


def test_jinja_literals_survive_trim_blocks():
    """transformers renders with trim_blocks: a newline right after a block tag must not vanish."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from tunery.export.modelfile import ChatPieces

    pieces = ChatPieces("", "\nS:", "\n", "\nU:", "\n", "\nA:", "\n", None, "\nA (go):")
    out, _ = render_jinja_template(conversations=[[{"role": "user", "content": "q"}]],
                                   chat_template=jinja_template(pieces), add_generation_prompt=True)
    assert out[0] == "\nU:q\n\nA (go):"


def test_export_writes_the_trained_template_into_the_checkpoint(tiny_chatml_model, tmp_path):
    from transformers import AutoTokenizer

    from tunery.data.template import get_template
    from tunery.export.workflow import run_export

    out = tmp_path / "zephyr-format"
    run_export(parse_config("export", {"model_name_or_path": str(tiny_chatml_model), "template": "zephyr",
                                       "export_dir": str(out)}))
    exported = AutoTokenizer.from_pretrained(out)
    template = get_template("zephyr", exported)
    for messages in VERIFY_CONVERSATIONS:
        assert exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
            template.render_text(messages, add_generation_prompt=True)


def test_unknown_llamafactory_template_name_does_not_block_export(tiny_chatml_model, tmp_path):
    from tunery.export.workflow import run_export

    out = tmp_path / "unknown-template"
    run_export(parse_config("export", {"model_name_or_path": str(tiny_chatml_model), "template": "moss_vl",
                                       "export_dir": str(out)}))
    assert (out / "model.safetensors").is_file()
