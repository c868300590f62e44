"""Turn the few-shot prompt text into the token ids the model sees, with or without a chat template.

``template: fewshot`` (for base models) feeds the text as is, with the tokenizer's BOS where it adds
one; the answer letter then follows the cue after a space (``Answer: A``) in English. Any chat
template wraps the whole text as one user turn and appends the generation prompt, so the assistant
reply starts with the letter itself (no space), as an instruct model answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunery.data.template import get_template
from tunery.evaluation.prompts import PromptStyle
from tunery.evaluation.scorer import letter_token_ids
from tunery.logging import get_logger

logger = get_logger(__name__)

PLAIN = "fewshot"


@dataclass
class PromptEncoder:
    tokenizer: Any
    template: Any  # tunery.data.template.Template, or None for plain text
    style: PromptStyle

    @property
    def name(self) -> str:
        return PLAIN if self.template is None else getattr(self.template, "name", "chat")

    @property
    def letter_separator(self) -> str:
        return self.style.letter_separator if self.template is None else ""

    def encode(self, text: str) -> tuple[str, list[int]]:
        """(the exact text the model reads, its token ids)."""
        if self.template is None:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
            return text, ids
        messages = [{"role": "user", "content": text}]
        rendered = "".join(s.text for s in self.template.render(messages, add_generation_prompt=True))
        return rendered, list(self.template.prompt_ids(self.tokenizer, messages))

    def letter_ids(self, letters: str, sample_text: str) -> list[int]:
        """Token ids of the answer letters as they follow a prompt like ``sample_text``."""
        shown, ids = self.encode(sample_text)
        if self.template is None:
            bos = self.tokenizer.bos_token_id
            add_special = bool(ids) and bos is not None and ids[0] == bos
            return letter_token_ids(self.tokenizer, shown, ids, letters, self.letter_separator, add_special_tokens=add_special)
        return letter_token_ids(self.tokenizer, shown, ids, letters, "", add_special_tokens=False)


def resolve_template_name(name: str | None, tokenizer: Any) -> str:
    """No template given: the tokenizer's own chat template when it has one, else plain text."""
    if name:
        return name
    chosen = "auto" if getattr(tokenizer, "chat_template", None) else PLAIN
    logger.info("no template given: using '%s' (set template: fewshot for a base model's plain prompt)", chosen)
    return chosen


def make_encoder(name: str | None, tokenizer: Any, data_args: Any, style: PromptStyle) -> PromptEncoder:
    name = resolve_template_name(name, tokenizer)
    if name == PLAIN:
        return PromptEncoder(tokenizer, None, style)
    return PromptEncoder(tokenizer, get_template(name, tokenizer, data_args), style)
