"""``template: auto``: the tokenizer's own Jinja chat template, with the assistant spans found exactly.

The text comes from transformers' own renderer (``render_jinja_template`` with the same variables
``apply_chat_template`` passes), so what we train on is byte-for-byte what the model's chat template
produces at inference. Jinja gives no positions for messages, so the spans are recovered by
rendering prefixes of the conversation: the prompt up to turn *i* with the generation prompt ends
where reply *i* starts, and the conversation up to and including turn *i* ends right after it.
Templates that rewrite earlier turns (e.g. dropping old reasoning) fall back to locating the reply
text and the end-of-turn token in the full rendering.
"""

from __future__ import annotations

import re
from typing import Any

from tunery.data.templates.base import PROMPT_ROLE, Segment, Template, parse_tools
from tunery.data.templates.messages import is_assistant, parse_call_content, to_hf_messages, to_hf_tools
from tunery.errors import DataError, ModelError

# Strings that close a turn in common chat templates; only those the template mentions are used.
END_OF_TURN_CANDIDATES = (
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|END_OF_TURN_TOKEN|>",
    "<|end_of_text|>", "<｜end▁of▁sentence｜>", "<|endoftext|>", "</s>", "<|return|>", "<|call|>",
)


# Shapes of a tool-call message, tried in order until the template renders every call.
CALL_STYLES = (
    {"call_content": "", "json_arguments": False},
    {"call_content": None, "json_arguments": False},
    {"call_content": None, "json_arguments": True},
    {"call_content": "", "json_arguments": True},
)


def _calls_rendered(messages: list[dict], segments: list[Segment]) -> bool:
    """Every function_call turn's trained text names each of its calls."""
    replies = [s.text for s in segments if s.role == "assistant"]
    turns = [m for m in messages if is_assistant(m.get("role", ""))]
    for msg, text in zip(turns, replies):
        if msg["role"] == "function_call" and not all(c["name"] in text for c in parse_call_content(msg["content"])):
            return False
    return len(replies) == len(turns)


def _loose(text: str) -> str:
    """Text without whitespace, quotes and backslashes: templates trim content or write it through tojson."""
    return re.sub(r'[\s"\\]', "", text)


def _check_nothing_dropped(messages: list[dict], segments: list[Segment]) -> None:
    """A chat template that silently leaves out a system, user or tool message is an error, not a quiet loss.

    Each such message's text must appear in the rendering (content may be trimmed). Assistant turns
    are found exactly by the span search; their earlier reasoning may be dropped on purpose.
    """
    text = _loose("".join(s.text for s in segments))
    for i, msg in enumerate(messages):
        role, content = msg.get("role"), (msg.get("content") or "")
        if is_assistant(role or "") or not isinstance(content, str) or not content.strip():
            continue
        if _loose(content) not in text:
            part = {"system": "system prompt", "tool": "tool result", "observation": "tool result"}.get(role, "message")
            raise DataError(
                f"the tokenizer's chat template (template 'auto') leaves out the {part} of message {i} "
                f"(role '{role}'): it would be silently missing from training", field="messages",
                hint="choose a builtin template that renders this role (e.g. template: chatml or qwen)")


class AutoTemplate(Template):
    """Renders through the tokenizer's ``chat_template``; see the module docstring for the span search."""

    def __init__(self, tokenizer, *, default_system: str | None = None, enable_thinking: bool | None = True,
                 tool_format: str | None = None, preserve_thinking: bool = False) -> None:
        chat_template = getattr(tokenizer, "chat_template", None)
        if not chat_template:
            raise ModelError("template 'auto' needs a tokenizer with a chat template, and this one has none",
                             hint="set `template:` to a builtin name (e.g. default, chatml, llama3)")
        super().__init__(name="auto", default_system=default_system, tool_format=tool_format or "hf",
                         enable_thinking=enable_thinking, preserve_thinking=preserve_thinking)
        self.tokenizer = tokenizer
        self._call_style: dict | None = None
        self.chat_template_source = chat_template
        eos = getattr(tokenizer, "eos_token", None)
        source = chat_template if isinstance(chat_template, str) else "".join(chat_template.values())
        words = [w for w in END_OF_TURN_CANDIDATES if w in source]
        if eos and eos not in words:
            words.append(eos)
        self.end_of_turn = sorted(words, key=len, reverse=True)
        self.stop_words = list(words)

    # -- rendering -------------------------------------------------------------------------------
    def render_hf(self, hf_messages: list[dict], hf_tools: list[dict] | None, add_generation_prompt: bool) -> str:
        """One call of transformers' Jinja renderer, with the variables ``apply_chat_template`` passes."""
        from jinja2 import TemplateError
        from transformers.utils.chat_template_utils import render_jinja_template

        template = self.tokenizer.get_chat_template(None, hf_tools)
        kwargs: dict[str, Any] = dict(self.tokenizer.special_tokens_map)
        if self.enable_thinking is not None:
            kwargs["enable_thinking"] = self.enable_thinking
        if self.preserve_thinking:  # the variable newer templates (e.g. Qwen3.6) read to keep earlier reasoning
            kwargs["preserve_thinking"] = True
        try:
            rendered, _ = render_jinja_template(
                conversations=[hf_messages], tools=hf_tools, chat_template=template,
                add_generation_prompt=add_generation_prompt, **kwargs,
            )
        except (TemplateError, TypeError) as exc:  # TypeError: the template mixed str and dict values
            raise DataError(f"the tokenizer's chat template rejected this conversation: {exc}", field="messages",
                            hint="the message above is the template's own; many templates require "
                                 "user/assistant turns to alternate") from exc
        return rendered[0]

    def _with_default_system(self, messages: list[dict]) -> list[dict]:
        if self.default_system and (not messages or messages[0].get("role") != "system"):
            return [{"role": "system", "content": self.default_system}, *messages]
        return list(messages)

    @property
    def supports_tools(self) -> bool:
        """Whether the tokenizer's Jinja template reads ``tools`` at all (otherwise schemas would vanish)."""
        source = self.chat_template_source
        text = source if isinstance(source, str) else " ".join(source.values())
        return re.search(r"\btools\b", text) is not None

    def render(self, messages: list[dict], tools: Any = None, add_generation_prompt: bool = False) -> list[Segment]:
        messages = self._with_default_system(messages)
        hf_tools = to_hf_tools(parse_tools(tools))
        if hf_tools and not self.supports_tools:
            raise DataError(
                "the tokenizer's chat template (template 'auto') has no tool support: the tool schemas would be "
                "silently left out of the prompt; use a template with tool support (e.g. template: qwen)",
                field="tools",
                hint="choose a builtin template with tool support (e.g. template: qwen, chatml, llama3, mistral), "
                     "or remove the tools column from dataset_info.json to train without the schemas")
        if not any(m.get("role") == "function_call" for m in messages):
            segments = self._segments(messages, to_hf_messages(messages), hf_tools, add_generation_prompt)
            _check_nothing_dropped(messages, segments)
            return segments
        # Tool calls: find the message shape this template renders (see to_hf_messages), and never
        # accept a rendering that silently dropped a call
        styles = [self._call_style] if self._call_style else []
        styles += [s for s in CALL_STYLES if s != self._call_style]
        error: Exception | None = None
        for style in styles:
            try:
                segments = self._segments(messages, to_hf_messages(messages, **style), hf_tools,
                                          add_generation_prompt)
            except DataError as exc:
                error = exc
                continue
            if _calls_rendered(messages, segments):
                self._call_style = style
                _check_nothing_dropped(messages, segments)
                return segments
        raise DataError(
            "the tokenizer's chat template does not render this conversation's tool calls"
            + (f" ({error.message.removesuffix(' (field ' + repr('messages') + ')')})" if error else ""),
            field="messages",
            hint="use a builtin template with tool support (qwen, llama3, mistral), or check the function_call JSON",
        )

    def _segments(self, messages, hf_messages, hf_tools, add_generation_prompt: bool) -> list[Segment]:
        full = self.render_hf(hf_messages, hf_tools, add_generation_prompt)
        segments: list[Segment] = []
        pos = 0
        for turn, (start, end) in enumerate(self._assistant_spans(messages, hf_messages, hf_tools, full)):
            if start > pos:
                segments.append(Segment(full[pos:start], PROMPT_ROLE))
            segments.append(Segment(full[start:end], "assistant", turn))
            pos = end
        if pos < len(full):
            segments.append(Segment(full[pos:], PROMPT_ROLE))
        return segments

    # -- span search -----------------------------------------------------------------------------
    def _assistant_spans(self, messages, hf_messages, hf_tools, full: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, msg in enumerate(messages):
            if not is_assistant(msg.get("role", "")):
                continue
            turn = len(spans)
            prompt = self.render_hf(hf_messages[:i], hf_tools, True)
            start = len(prompt) if full.startswith(prompt) and len(prompt) >= cursor else None
            upto = self.render_hf(hf_messages[: i + 1], hf_tools, False)
            end = None
            if start is not None and full.startswith(upto) and len(upto) > start:
                # the turn ends at its first end-of-turn token; text after it (newlines, a final eos
                # some templates add) is formatting, not something the model should learn to write
                # search after the reply text itself, so a reply that quotes "</s>" is not cut short
                content = msg.get("content") if msg.get("role") == "assistant" else None
                found = upto.find(content, start) if content else -1
                end = self._next_end_of_turn(upto, found + len(content) if found >= 0 else start)
                if end is None:
                    end = max(start, len(upto.rstrip()))
                    end = self._end_of_turn_at(full, end)
            elif start is not None:
                end = self._next_end_of_turn(full, start)
            if start is None or end is None:
                start, end = self._locate_reply(full, msg, cursor if start is None else start, turn)
            spans.append((start, end))
            cursor = end
        return spans

    def _end_of_turn_at(self, full: str, end: int) -> int:
        """Extend ``end`` over an end-of-turn token that follows it (after spaces)."""
        rest = full[end:]
        stripped = rest.lstrip(" ")
        for word in self.end_of_turn:
            if stripped.startswith(word):
                return end + (len(rest) - len(stripped)) + len(word)
        return end

    def _next_end_of_turn(self, full: str, start: int) -> int | None:
        hits = [(full.find(w, start), w) for w in self.end_of_turn]
        hits = [(i, w) for i, w in hits if i >= 0]
        if not hits:
            return None
        i, w = min(hits, key=lambda h: (h[0], -len(h[1])))
        return i + len(w)

    def _locate_reply(self, full: str, msg: dict, cursor: int, turn: int) -> tuple[int, int]:
        content = msg.get("content") if msg.get("role") == "assistant" else None
        for needle in (content, content.strip() if content else None):
            if needle:
                i = full.find(needle, cursor)
                if i >= 0:
                    return i, self._end_of_turn_at(full, i + len(needle))
        raise DataError(
            f"could not find assistant turn {turn} in the text rendered by the tokenizer's chat template",
            field="messages",
            hint="the template rewrites replies; choose a builtin `template:` for this model",
        )
