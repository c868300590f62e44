"""Every LLaMA-Factory 0.9.5 text template name renders what it renders in LLaMA-Factory.

The expected strings are tests/data/lf_template_renders.json, generated from LLaMA-Factory 0.9.5 by
scripts/lf_template_renders.py (bos ``<s>``, eos ``</s>``; ``replace_eos`` templates use their first
stop word as eos). Names that reproduce a model's official chat template follow it where
LLaMA-Factory's text differs (test_templates_official.py pins those against the official renders);
``builtin.DIFFERS_ON_PURPOSE`` lists every name that differs, with the difference, and a test keeps it honest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunery.config.lf_keys import LF_TEMPLATES
from tunery.data.template import get_template, list_templates
from tunery.data.templates.builtin import BUILTINS, DIFFERS_ON_PURPOSE, build_builtin

DATA = json.loads((Path(__file__).resolve().parents[3] / "data" / "lf_template_renders.json").read_text("utf-8"))
LF_TEXT = sorted(DATA["templates"])

class Tok:
    """The special tokens the renders were generated with."""

    bos_token = DATA["bos_token"]
    eos_token = DATA["eos_token"]
    chat_template = None


def _cases(name: str):
    for key, case in sorted(DATA["templates"][name]["cases"].items()):
        conv, think, preserve = key.split("/")
        yield key, case, think == "think=True", preserve == "preserve=True"


def _build(name: str, enable: bool, preserve: bool, mask_history: bool = False):
    return build_builtin(name, Tok(), enable_thinking=enable, preserve_thinking=preserve, mask_history=mask_history)


def _differs_from_lf(name: str) -> list[str]:
    keys = []
    for key, case, enable, preserve in _cases(name):
        template = _build(name, enable, preserve)
        msgs = case["messages"]
        if (template.render_text(msgs) != case["text"]
                or template.render_text(msgs[:-1], add_generation_prompt=True) != case["prompt"]):
            keys.append(key)
    return keys


def test_every_llamafactory_text_template_name_is_a_builtin():
    assert len(LF_TEXT) == 73
    assert set(LF_TEXT) <= set(LF_TEMPLATES)
    missing = [name for name in LF_TEXT if name not in BUILTINS]
    assert missing == []
    assert set(LF_TEXT) <= set(list_templates())


@pytest.mark.parametrize("name", [n for n in LF_TEXT if n not in DIFFERS_ON_PURPOSE])
def test_renders_what_llamafactory_renders(name):
    """Training text and generation prompt, byte for byte, in every thinking mode LLaMA-Factory has."""
    for key, case, enable, preserve in _cases(name):
        template = _build(name, enable, preserve)
        msgs = case["messages"]
        assert template.render_text(msgs) == case["text"], f"{name} {key}"
        assert template.render_text(msgs[:-1], add_generation_prompt=True) == case["prompt"], f"{name} {key} prompt"
        # the trained text of each reply is LLaMA-Factory's response, less untrained trailing whitespace
        trained = [s.text for s in template.render(msgs) if s.role == "assistant"]
        assert len(trained) == len(case["responses"])
        for mine, theirs in zip(trained, case["responses"]):
            assert theirs.startswith(mine) and not theirs[len(mine):].strip(), f"{name} {key}: {mine!r} {theirs!r}"


def test_differences_on_purpose_are_real():
    """Every name listed as differing on purpose really differs from LLaMA-Factory somewhere."""
    same = [name for name in DIFFERS_ON_PURPOSE if not _differs_from_lf(name)]
    assert same == []
    assert set(DIFFERS_ON_PURPOSE) <= set(LF_TEXT)


@pytest.mark.parametrize("name", sorted(n for n in LF_TEXT if DATA["templates"][n]["reasoning"]
                                        and n not in DIFFERS_ON_PURPOSE))
def test_reasoning_template_thinking_modes(name):
    """enable_thinking moves the empty block into the untrained prompt; preserve_thinking keeps old reasoning."""
    case = DATA["templates"][name]["cases"]["single/think=True/preserve=False"]
    msgs = case["messages"]
    empty = BUILTINS[name].empty_thought or "".join(BUILTINS[name].thought)
    on = [s.text for s in _build(name, True, False).render(msgs) if s.role == "assistant"]
    off = [s.text for s in _build(name, False, False).render(msgs) if s.role == "assistant"]
    assert empty in on[0] and empty not in off[0]
    assert empty in _build(name, False, False).render_text(msgs)
    reasoning = DATA["templates"][name]["cases"]["reasoning/think=True/preserve=False"]["messages"]
    first_thought = reasoning[1]["content"].split(BUILTINS[name].thought[1])[0]
    kept = _build(name, True, True).render_text(reasoning[:-1], add_generation_prompt=True)
    dropped = _build(name, True, False).render_text(reasoning[:-1], add_generation_prompt=True)
    assert first_thought in kept and first_thought not in dropped


def test_mask_history_drops_earlier_reasoning_unless_preserved():
    """LLaMA-Factory: with mask_history and without preserve_thinking, earlier replies lose their reasoning."""
    msgs = DATA["templates"]["mimo"]["cases"]["reasoning/think=True/preserve=False"]["messages"]
    masked = _build("mimo", True, False, mask_history=True).render_text(msgs)
    assert "Add them." not in masked and "Add again." in masked
    assert "Add them." in _build("mimo", True, True, mask_history=True).render_text(msgs)


def test_get_template_passes_preserve_thinking():
    class Args:
        default_system = None
        enable_thinking = True
        tool_format = None
        preserve_thinking = True
        mask_history = False

    template = get_template("mimo", Tok(), Args())
    assert template.preserve_thinking is True
    msgs = DATA["templates"]["mimo"]["cases"]["reasoning/think=True/preserve=False"]["messages"]
    assert "Add them." in template.render_text(msgs[:-1], add_generation_prompt=True)
