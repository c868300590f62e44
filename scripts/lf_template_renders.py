"""Write tests/data/lf_template_renders.json: what LLaMA-Factory 0.9.5 renders for each of its text template names.

Ground truth for tests/unit/data/templates/test_templates_lf_renders.py. Run it where LLaMA-Factory
0.9.5 is importable, e.g. ``/work/venv-lf/bin/python scripts/lf_template_renders.py``, or point
``--lf-src`` at an unpacked ``llamafactory-0.9.5`` wheel (optional media packages it imports only for
multimodal templates are then stubbed, as text templates never use them).

LLaMA-Factory renders token ids, piece by piece. To read its text back exactly, a stand-in tokenizer
gives every piece (string, special token, bos/eos) its own id and decodes by joining the pieces, so
the stored strings are exactly what its formatters produce, before any real tokenizer merges them.
The special tokens are bos ``<s>`` and eos ``</s>``; templates with ``replace_eos`` swap the eos for
their first stop word, as LLaMA-Factory does to the tokenizer.
"""

from __future__ import annotations

import argparse
import copy
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "lf_template_renders.json"
BOS, EOS = "<s>", "</s>"

CONVERSATIONS = {
    "single": [
        {"role": "user", "content": "Hello, who are you?"},
        {"role": "assistant", "content": "I am a helpful assistant."},
    ],
    "system": [
        {"role": "system", "content": "Be short."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green."},
    ],
    # replies that carry reasoning between the template's own thought words ({open}/{close})
    "reasoning": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "{open}Add them.{close}2+2 equals 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "{open}Add again.{close}3+3 equals 6."},
    ],
}
# (enable_thinking, preserve_thinking) pairs rendered for reasoning templates; others get the first only
THINKING = [(True, False), (False, False), (True, True), (False, True)]


class PieceTokenizer:
    """Each encoded string is one id; decoding joins the strings back."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.ids: dict[str, int] = {}
        self.bos_token, self.eos_token, self.pad_token = BOS, EOS, None
        self.chat_template = None

    def _id(self, text: str) -> int:
        if text not in self.ids:
            self.ids[text] = len(self.pieces)
            self.pieces.append(text)
        return self.ids[text]

    @property
    def bos_token_id(self):
        return self._id(self.bos_token) if self.bos_token else None

    @property
    def eos_token_id(self):
        return self._id(self.eos_token) if self.eos_token else None

    @property
    def pad_token_id(self):
        return self._id(self.pad_token) if self.pad_token else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self._id(text)]

    def convert_tokens_to_ids(self, token: str) -> int:
        return self._id(token)

    def add_special_tokens(self, tokens: dict, replace_additional_special_tokens: bool = False) -> int:
        if "eos_token" in tokens:
            self.eos_token = tokens["eos_token"]
        return 0

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


def import_templates(lf_src: str | None):
    if lf_src:
        for name in ("torchaudio", "av", "librosa"):  # media packages only multimodal plugins use
            if importlib.util.find_spec(name) is None:
                stub = types.ModuleType(name)
                stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
                sys.modules[name] = stub
        sys.path.insert(0, lf_src)
    from llamafactory import __version__
    from llamafactory.data.mm_plugin import BasePlugin
    from llamafactory.data.template import TEMPLATES, ReasoningTemplate

    assert __version__ == "0.9.5", __version__
    text = {name: t for name, t in TEMPLATES.items() if type(t.mm_plugin) is BasePlugin}
    return text, ReasoningTemplate


def render(template, messages: list[dict], *, enable_thinking: bool, preserve_thinking: bool) -> dict:
    """LLaMA-Factory's training text (encode_multiturn) and generation prompt (encode_oneturn)."""
    template = copy.deepcopy(template)
    tokenizer = PieceTokenizer()
    template.fix_special_tokens(tokenizer)
    template.enable_thinking, template.preserve_thinking = enable_thinking, preserve_thinking
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    pairs = template.encode_multiturn(tokenizer, copy.deepcopy(turns), system)
    prompt_ids, _ = template.encode_oneturn(tokenizer, copy.deepcopy(turns[:-1]) + [
        {"role": "assistant", "content": ""}], system)
    return {
        "text": "".join(tokenizer.decode(p) + tokenizer.decode(r) for p, r in pairs),
        "responses": [tokenizer.decode(r) for _, r in pairs],
        "prompt": tokenizer.decode(prompt_ids),
        "eos": tokenizer.eos_token,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lf-src", help="folder of an unpacked llamafactory-0.9.5 wheel (default: import it)")
    args = parser.parse_args()
    templates, reasoning_class = import_templates(args.lf_src)
    out: dict = {
        "generated_by": "scripts/lf_template_renders.py from LLaMA-Factory 0.9.5 (llamafactory/data/template.py)",
        "bos_token": BOS, "eos_token": EOS,
        "conversations": CONVERSATIONS,
        "templates": {},
    }
    for name, template in sorted(templates.items()):
        is_reasoning = isinstance(template, reasoning_class)
        cases = {}
        for enable, preserve in THINKING if is_reasoning else THINKING[:1]:
            for conv, messages in CONVERSATIONS.items():
                opening, closing = template.thought_words
                messages = [{**m, "content": m["content"].replace("{open}", opening).replace("{close}", closing)}
                            for m in messages]
                key = f"{conv}/think={enable}/preserve={preserve}"
                cases[key] = {"messages": messages,
                              **render(template, messages, enable_thinking=enable, preserve_thinking=preserve)}
        out["templates"][name] = {"reasoning": is_reasoning, "cases": cases}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(out['templates'])} templates)")


if __name__ == "__main__":
    main()
