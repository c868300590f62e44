"""Does a builtin template write what the model's own chat template writes? A readable diff if not.

A model fine-tuned with one format and served with another answers badly without any error, so
the training workflow logs this diff as a warning before anything is trained.
"""

from __future__ import annotations

import difflib
import json
import re

from tunery.data.templates.base import Template
from tunery.data.templates.jinja_auto import AutoTemplate
from tunery.errors import DataError

PROBES: dict[str, tuple[list[dict], bool]] = {
    "single turn": ([{"role": "user", "content": "Hello, who are you?"},
                     {"role": "assistant", "content": "I am a helpful assistant."}], False),
    "with system": ([{"role": "system", "content": "You are a concise assistant."},
                     {"role": "user", "content": "What is 2+2?"},
                     {"role": "assistant", "content": "4."}], False),
    "two turns": ([{"role": "user", "content": "What is 2+2?"},
                   {"role": "assistant", "content": "2+2 equals 4."},
                   {"role": "user", "content": "And 3+3?"},
                   {"role": "assistant", "content": "3+3 equals 6."}], False),
    "generation prompt": ([{"role": "user", "content": "What is 2+2?"},
                           {"role": "assistant", "content": "2+2 equals 4."},
                           {"role": "user", "content": "And 3+3?"}], True),
}


# Special-token-looking markers of other families (<|eot_id|>, <｜User｜>) also start a new diff line.
_GENERIC_MARKER = r"<\|[^<>|\s]{1,40}\|>|<｜[^<>\s]{1,40}｜>"


def _lines(text: str, markers: list[str]) -> list[str]:
    """Break rendered chat text into diffable lines: at newlines and before special tokens, escaped."""
    alternatives = [re.escape(m) for m in sorted(markers, key=len, reverse=True)] + [_GENERIC_MARKER]
    text = re.sub("(?=" + "|".join(alternatives) + ")", "\0", text)
    pieces = [p for chunk in text.split("\0") for p in chunk.splitlines(keepends=True)]
    return [json.dumps(p, ensure_ascii=False)[1:-1] + "\n" for p in pieces if p]


def _markers(tokenizer) -> list[str]:
    tokens = list(getattr(tokenizer, "added_tokens_encoder", {}) or {})
    return [t for t in tokens if len(t) > 1]


def check_template(template: Template, tokenizer) -> str | None:
    """A unified diff per probe conversation where ``template`` and the tokenizer's own template differ.

    None when they agree, when the tokenizer has no chat template, or when ``template`` is the
    tokenizer's own (``auto``). Probes the tokenizer's template rejects (e.g. a system message for
    templates without one) are skipped.
    """
    if isinstance(template, AutoTemplate) or not getattr(tokenizer, "chat_template", None):
        return None
    own = AutoTemplate(tokenizer, enable_thinking=template.enable_thinking)
    markers = _markers(tokenizer)
    reports = []
    for probe, (messages, gen) in PROBES.items():
        try:
            expected = own.render_text(messages, add_generation_prompt=gen)
        except DataError:
            continue
        got = template.render_text(messages, add_generation_prompt=gen)
        if got == expected:
            continue
        diff = difflib.unified_diff(_lines(expected, markers), _lines(got, markers),
                                    fromfile="tokenizer chat template", tofile=f"template '{template.name}'",
                                    lineterm="\n")
        reports.append(f"# {probe}\n" + "".join(diff))
    if not reports:
        return None
    header = (f"template '{template.name}' renders differently from this tokenizer's own chat template "
              "(use `template: auto` to train with the model's own format):\n")
    others = [r.splitlines()[0][2:] for r in reports[1:]]
    footer = f"\n(also differs on: {', '.join(others)})\n" if others else ""
    return header + reports[0] + footer
