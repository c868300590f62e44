"""check_template: a builtin that disagrees with the tokenizer's own chat template gives a readable diff."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tunery.data.template import check_template, get_template
from tunery.data.templates.builtin import BUILTINS, build_builtin


class Args:
    default_system = None
    enable_thinking = True
    tool_format = None


@pytest.fixture(scope="module")
def chatml_tok(tiny_chatml_model):
    return AutoTokenizer.from_pretrained(tiny_chatml_model)


def test_wrong_builtin_gives_readable_diff(chatml_tok):
    report = check_template(get_template("llama3", chatml_tok), chatml_tok)
    assert report is not None
    assert "template 'llama3' renders differently" in report
    assert "--- tokenizer chat template" in report and "+++ template 'llama3'" in report
    lines = report.splitlines()
    assert "-<|im_start|>user\\n" in lines          # escaped newlines keep whitespace visible
    assert "+<|start_header_id|>user" in lines      # a new line starts at each special token
    assert " Hello, who are you?" in lines           # shared text is context, not a change
    assert "also differs on: with system, two turns, generation prompt" in report


def test_missing_default_system_is_reported(chatml_tok):
    report = check_template(get_template("chatml", chatml_tok), chatml_tok)
    assert report is not None
    assert "-You are a helpful assistant." in report.splitlines()
    assert "with system" not in report  # an explicit system prompt renders the same


def test_matching_builtin_gives_none(chatml_tok, tiny_llama_model):
    args = Args()
    args.default_system = "You are a helpful assistant."
    assert check_template(get_template("chatml", chatml_tok, args), chatml_tok) is None
    llama_tok = AutoTokenizer.from_pretrained(tiny_llama_model)
    assert check_template(get_template("llama3", llama_tok), llama_tok) is None


def test_auto_and_templateless_tokenizers_are_not_checked(chatml_tok, tiny_chatml_model):
    assert check_template(get_template("auto", chatml_tok), chatml_tok) is None
    bare = AutoTokenizer.from_pretrained(tiny_chatml_model)
    bare.chat_template = None
    assert check_template(get_template("chatml", bare), bare) is None


def test_every_official_builtin_passes_the_check_against_its_official_template(reference_dir):
    entries = {e["model_id"]: e for e in json.loads((reference_dir / "chat_templates.json").read_text())}

    class OfficialTokenizer:
        def __init__(self, entry):
            self.chat_template = entry["chat_template"]
            self.eos_token = entry["eos_token"]
            self.special_tokens_map = {k: entry[k] for k in ("bos_token", "eos_token") if entry.get(k)}
            self.added_tokens_encoder = {t: 0 for t in entry["extra_special_tokens"].get("in_template", {})}

        def get_chat_template(self, chat_template=None, tools=None):
            return self.chat_template

    checked = 0
    for name, spec in BUILTINS.items():
        if not spec.official:
            continue
        entry = next(e for mid, e in entries.items() if mid.split(" ")[0] == spec.official)
        assert check_template(build_builtin(name), OfficialTokenizer(entry)) is None, name
        checked += 1
        if name != "llama3":  # and a builtin of another family is caught
            assert check_template(build_builtin("llama3"), OfficialTokenizer(entry)) is not None, name
    assert checked >= 20


def test_get_template_warns_when_a_builtin_disagrees_with_the_model(tiny_chatml_model, caplog):
    import logging

    from transformers import AutoTokenizer

    from tunery.data.template import get_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    logging.getLogger("tunery").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="tunery"):
            get_template("llama3", tokenizer)
        assert "renders differently" in caplog.text and "llama3" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tunery"):
            get_template("auto", tokenizer)
            get_template("fewshot", tokenizer)
        assert "renders differently" not in caplog.text
    finally:
        logging.getLogger("tunery").propagate = False
