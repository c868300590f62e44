"""Builtin names mean what the same names mean in LLaMA-Factory: the rendered text of a small conversation, pinned.

Each case below is a name whose rendering was changed to LLaMA-Factory's (FR2-01 and its kind);
the text is written out by hand from LLaMA-Factory's template of that name.
"""

from __future__ import annotations

import pytest

from tunery.data.templates.builtin import build_builtin


class Tok:
    """Only the special tokens a builtin reads."""

    eos_token = "</s>"
    bos_token = "<s>"


CHAT = [
    {"role": "system", "content": "Be short."},
    {"role": "user", "content": "Colour of the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green."},
]

PINNED = {
    # Qwen3 instruct (non-reasoning) models: ChatML, no <think> tokens in prompt or reply
    "qwen3_nothink": (
        "<|im_start|>system\nBe short.<|im_end|>\n"
        "<|im_start|>user\nColour of the sky?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
        "<|im_start|>user\nAnd grass?<|im_end|>\n<|im_start|>assistant\nGreen.<|im_end|>\n"
    ),
    # eos closes every turn, the reply follows "Assistant:" directly
    "default": (
        "System: Be short.</s>\nHuman: Colour of the sky?</s>\nAssistant:Blue.</s>\n"
        "Human: And grass?</s>\nAssistant:Green.</s>\n"
    ),
    # "\n\n" after every reply, the last one included; the default system prompt carries its own blank
    # line, so a system prompt of your own runs into "### Instruction:" (LLaMA-Factory 0.9.5's text, checked
    # against tests/data/lf_template_renders.json)
    "alpaca": (
        "Be short.### Instruction:\nColour of the sky?\n\n### Response:\nBlue.</s>\n\n"
        "### Instruction:\nAnd grass?\n\n### Response:\nGreen.</s>\n\n"
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_builtin_renders_what_llamafactory_renders(name):
    assert build_builtin(name, Tok()).render_text(CHAT) == PINNED[name]


def test_qwen3_nothink_generation_prompt_has_no_think_block():
    template = build_builtin("qwen3_nothink", Tok())
    prompt = template.render_text(CHAT[1:4], add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nAnd grass?<|im_end|>\n<|im_start|>assistant\n")
    # a reply that carries its own reasoning is kept verbatim (nothing is added or removed)
    reply = {"role": "assistant", "content": "<think>\nlook\n</think>\n\nGreen."}
    trained = [s.text for s in template.render([CHAT[3], reply]) if s.role == "assistant"]
    assert trained == ["<think>\nlook\n</think>\n\nGreen.<|im_end|>"]


def test_qwen3_nothink_differs_from_qwen3_with_thinking_off():
    """The two used to be the same template; qwen3 with enable_thinking=false keeps the empty block."""
    plain = CHAT[1:3]
    off = build_builtin("qwen3", Tok(), enable_thinking=False).render_text(plain, add_generation_prompt=False)
    assert "<think>\n\n</think>\n\n" in off
    assert "<think>" not in build_builtin("qwen3_nothink", Tok()).render_text(plain)


def test_alpaca_default_system():
    text = build_builtin("alpaca", Tok()).render_text(CHAT[1:3])
    assert text == ("Below is an instruction that describes a task. Write a response that appropriately completes "
                    "the request.\n\n### Instruction:\nColour of the sky?\n\n### Response:\nBlue.</s>\n\n")
