"""Builtin templates on a real (tiny) tokenizer: masks, prompts, stop ids, options, errors."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tunery.data.template import get_template, list_templates
from tunery.data.templates.builtin import BUILTINS
from tunery.errors import ConfigError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And 1 + 2?"},
    {"role": "assistant", "content": "3"},
]


class Args:
    def __init__(self, **kw):
        self.default_system = kw.get("default_system")
        self.enable_thinking = kw.get("enable_thinking", True)
        self.tool_format = kw.get("tool_format")


@pytest.fixture(scope="module")
def tok(tiny_chatml_model):
    return AutoTokenizer.from_pretrained(tiny_chatml_model)


def test_registry_has_llamafactory_names():
    required = {"default", "empty", "alpaca", "vicuna", "chatml", "llama2", "llama3", "mistral", "qwen", "qwen3",
                "qwen3_nothink", "gemma", "gemma3", "phi", "phi4", "deepseek", "deepseek3", "deepseekr1", "glm4",
                "yi", "intern2", "zephyr", "cohere", "granite3", "olmo", "falcon", "fewshot"}
    assert required <= set(BUILTINS)
    assert list_templates()[0] == "auto"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_trains_exactly_its_assistant_segments(tok, name):
    template = get_template(name, tok)
    segs = template.render(CHAT)
    text = "".join(s.text for s in segs)
    replies = [s for s in segs if s.role == "assistant"]
    assert [s.turn for s in replies] == [0, 1]
    assert "Paris." in replies[0].text and "3" in replies[1].text
    assert "capital" not in replies[0].text and "Be brief" not in "".join(s.text for s in replies)
    enc = template.encode(tok, CHAT)
    assert enc.input_ids == tok(text, add_special_tokens=False)["input_ids"]
    for k, seg in enumerate(replies):
        ids = [i for i, t in zip(enc.input_ids, enc.turns) if t == k]
        assert tok.decode(ids).strip() == seg.text.strip()
    # the generation prompt is never trained, and the prompt is what training saw before reply 2
    prompt = template.prompt_ids(tok, CHAT[:-1])
    enc_prompt = template.encode(tok, CHAT[:-1], add_generation_prompt=True)
    assert enc_prompt.input_ids == prompt and enc_prompt.num_turns == 1 and enc_prompt.turns[-1] == -1
    if BUILTINS[name].thinking == "lf":
        # LLaMA-Factory's reasoning templates give every trained reply an empty reasoning block that
        # inference prompts leave out of earlier replies; they agree when only the last reply is
        # trained (mask_history), as in LLaMA-Factory
        template.mask_history = True
        enc = template.encode(tok, CHAT)
    assert tok.decode(enc.input_ids).startswith(tok.decode(prompt).rstrip())


def test_stop_token_ids_come_from_the_template(tok, tiny_llama_model):
    assert get_template("qwen", tok).stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]
    llama_tok = AutoTokenizer.from_pretrained(tiny_llama_model)
    assert llama_tok.convert_tokens_to_ids("<|eot_id|>") in get_template("llama3", llama_tok).stop_token_ids(llama_tok)
    # generic builtins stop at the tokenizer's eos, and write it after each reply
    default = get_template("default", tok)
    assert default.stop_token_ids(tok) == [tok.eos_token_id]
    assert [s.text for s in default.render(CHAT[1:3]) if s.role == "assistant"] == ["Paris.<|im_end|>"]


def test_default_system_and_override(tok):
    qwen = get_template("qwen", tok)
    assert qwen.render_text(CHAT[1:3]).startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n")
    custom = get_template("qwen", tok, Args(default_system="Answer in French."))
    assert custom.render_text(CHAT[1:3]).startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n")
    assert "Answer in French." not in custom.render_text(CHAT)  # the record's own system wins
    assert get_template("alpaca", tok).render_text(CHAT[1:3]).startswith("Below is an instruction")


def test_qwen3_reasoning_blocks(tok):
    chat = [{"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "<think>\nadd again\n</think>\n\n6"}]
    segs = get_template("qwen3", tok).render(chat)
    replies = [s.text for s in segs if s.role == "assistant"]
    assert replies == ["4<|im_end|>", "<think>\nadd again\n</think>\n\n6<|im_end|>"]  # old reasoning dropped
    nothink = get_template("qwen3", tok, Args(enable_thinking=False))
    assert nothink.render_text(chat[:1], add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert [s.text for s in nothink.render(plain) if s.role == "assistant"] == ["hello<|im_end|>"]
    # qwen3_nothink is LLaMA-Factory's template for Qwen3 instruct models: no think block, not even in the prompt
    assert get_template("qwen3_nothink", tok).render_text(plain) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n")
    assert [s.text for s in get_template("qwen3", tok).render(plain) if s.role == "assistant"] == [
        "<think>\n\n</think>\n\nhello<|im_end|>"]


def test_fewshot_is_plain_concatenation(tok):
    shots = [{"role": "user", "content": "Q: 1+1?\nA:"}, {"role": "assistant", "content": " 2"},
             {"role": "user", "content": "Q: 2+2?\nA:"}]
    template = get_template("fewshot", tok)
    assert template.render_text(shots, add_generation_prompt=True) == "Q: 1+1?\nA: 2\n\nQ: 2+2?\nA:"


def test_content_with_braces_is_kept_verbatim(tok):
    chat = [{"role": "user", "content": "Format {content} and {eos} please"},
            {"role": "assistant", "content": "{bos} {}"}]
    text = get_template("default", tok).render_text(chat)
    assert "Format {content} and {eos} please" in text and "{bos} {}" in text


def test_unknown_template_suggests_names(tok):
    with pytest.raises(ConfigError, match="unknown template 'qwen2.5'") as err:
        get_template("qwen2.5", tok)
    assert "qwen" in str(err.value)
