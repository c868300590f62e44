"""The Template contract: messages -> text segments -> token ids with the trained turns marked.

Every template (the tokenizer's own Jinja template or a builtin) only has to say which text a
conversation becomes and which parts of it are assistant replies (``render``). Tokenization is
shared here and done once on the whole text, so training sees exactly the ids inference sees.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from tunery.data.templates.tools import format_calls, parse_calls
from tunery.errors import DataError

# Untrained text that does not belong to one message (bos, headers, generation prompt) uses this role.
PROMPT_ROLE = "prompt"


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered text. ``role == "assistant"`` pieces are trained; ``turn`` numbers them."""

    text: str
    role: str
    turn: int = -1


@dataclass
class Encoded:
    """Token ids of one conversation and, per token, the assistant turn it is trained in (-1: prompt)."""

    input_ids: list[int]
    turns: list[int]
    text: str = ""

    @property
    def num_turns(self) -> int:
        return max(self.turns, default=-1) + 1


def segments_text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments)


def assistant_spans(segments: list[Segment]) -> list[tuple[int, int, int]]:
    """(start_char, end_char, turn) of every trained segment."""
    spans, pos = [], 0
    for seg in segments:
        if seg.role == "assistant" and seg.text:
            spans.append((pos, pos + len(seg.text), seg.turn))
        pos += len(seg.text)
    return spans


def tokenize_segments(tokenizer, segments: list[Segment]) -> Encoded:
    """Tokenize the whole text once and give each token the turn of the assistant span it overlaps.

    A single pass (rather than one call per segment) keeps merges across segment borders exactly as
    inference produces them; the fast tokenizer's offset mapping tells which characters each token
    covers. Slow tokenizers (no offsets) fall back to per-segment tokenization.
    """
    text = segments_text(segments)
    spans = assistant_spans(segments)
    if not getattr(tokenizer, "is_fast", False):
        return _tokenize_per_segment(tokenizer, segments, text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    turns = [-1] * len(ids)
    k = 0
    for i, (start, end) in enumerate(offsets):
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        if end > spans[k][0] and end > start:
            turns[i] = spans[k][2]
    return Encoded(input_ids=ids, turns=turns, text=text)


def _tokenize_per_segment(tokenizer, segments: list[Segment], text: str) -> Encoded:
    ids: list[int] = []
    turns: list[int] = []
    for seg in segments:
        if not seg.text:
            continue
        piece = tokenizer.encode(seg.text, add_special_tokens=False)
        ids += piece
        turns += [seg.turn if seg.role == "assistant" else -1] * len(piece)
    return Encoded(input_ids=ids, turns=turns, text=text)


def parse_tools(tools: Any) -> list[dict] | None:
    """The record's ``tools`` (JSON string or list) as a list of schemas; None when there are none."""
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise DataError(f"'tools' is not valid JSON: {exc.msg}", field="tools",
                            hint="give a JSON list of function schemas") from exc
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise DataError("'tools' must be a JSON list of function schemas", field="tools")
    return tools or None


@dataclass
class Template(ABC):
    """Base of every chat template; subclasses implement ``render``."""

    name: str
    default_system: str | None = None
    stop_words: list[str] = field(default_factory=list)
    tool_format: str | None = None
    enable_thinking: bool | None = True
    preserve_thinking: bool = False       # reasoning templates: earlier replies keep their reasoning
    mask_history: bool = False            # reasoning templates: only the last reply is trained (see spec.py)

    @abstractmethod
    def render(self, messages: list[dict], tools: Any = None, add_generation_prompt: bool = False) -> list[Segment]:
        """The exact text of the conversation, split so that assistant replies are their own segments."""

    @property
    def supports_tools(self) -> bool:
        """Whether tool schemas reach the prompt. Builtins always write them (in their tool format)."""
        return True

    def render_text(self, messages: list[dict], tools: Any = None, add_generation_prompt: bool = False) -> str:
        return segments_text(self.render(messages, tools, add_generation_prompt))

    def encode(self, tokenizer, messages: list[dict], tools: Any = None, add_generation_prompt: bool = False) -> Encoded:
        return tokenize_segments(tokenizer, self.render(messages, tools, add_generation_prompt))

    def prompt_ids(self, tokenizer, messages: list[dict], tools: Any = None) -> list[int]:
        """Ids of the conversation followed by the generation prompt (what ``generate`` gets)."""
        return self.encode(tokenizer, messages, tools, add_generation_prompt=True).input_ids

    def stop_token_ids(self, tokenizer) -> list[int]:
        """Ids that end an assistant turn: the template's stop words that are single tokens, plus eos."""
        ids: list[int] = []
        for word in [*self.stop_words, getattr(tokenizer, "eos_token", None)]:
            if not word:
                continue
            token_id = _single_token_id(tokenizer, word)
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
        return ids

    def format_tool_calls(self, calls: list[dict]) -> str:
        """The assistant text for tool calls ``[{"name", "arguments"}]`` in this template's format."""
        return format_calls(self.tool_format or "default", calls)

    def parse_tool_calls(self, text: str) -> list[dict] | None:
        """Tool calls ``[{"name", "arguments": dict}]`` in a model reply, or None if it is plain text."""
        for word in self.stop_words:  # a reply decoded with its end-of-turn token still parses
            text = text.replace(word, "")
        return parse_calls(self.tool_format or "default", text)


def _single_token_id(tokenizer, word: str) -> int | None:
    vocab_id = tokenizer.convert_tokens_to_ids(word)
    unk = getattr(tokenizer, "unk_token_id", None)
    if isinstance(vocab_id, int) and vocab_id != unk:
        return vocab_id
    ids = tokenizer.encode(word, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None
