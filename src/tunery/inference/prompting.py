"""From a conversation to prompt ids: the chat template, the system prompt and tool schemas.

The template comes from ``tunery.data.template.get_template`` (the same one training used). Until
that module exists in a checkout, :class:`TokenizerChatTemplate` renders with the tokenizer's own
chat template so inference still works; it implements only what the engines need.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config import RunConfig


def resolve_template(cfg: RunConfig, tokenizer: Any) -> Any:
    """The configured template (``template: auto`` or unset: the tokenizer's own)."""
    try:
        from tunery.data.template import get_template
    except ImportError:
        get_template = None
    if get_template is not None:
        return get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    if cfg.data.template not in (None, "auto"):
        raise ConfigError(
            f"template '{cfg.data.template}' needs tunery.data.template, which this checkout lacks",
            hint="use template: auto (the tokenizer's own chat template)",
        )
    return TokenizerChatTemplate(tokenizer, cfg.data.default_system)


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Put ``system`` first unless the conversation already starts with a system message."""
    if system and not (messages and messages[0].get("role") == "system"):
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


def normalize_tools(tools: Any) -> list[dict] | None:
    """Tool schemas as a list (a JSON string is parsed); None when there are none.

    The template layer owns the parsing; a bad value here is a bad request, so a ConfigError.
    """
    from tunery.data.templates.base import parse_tools
    from tunery.errors import DataError

    try:
        return parse_tools(tools)
    except DataError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from exc


def template_supports_tools(template: Any, tokenizer: Any) -> bool:
    """Whether tool schemas reach the prompt: a builtin with a tool format, or a Jinja template that reads ``tools``."""
    flag = getattr(template, "supports_tools", None)
    if isinstance(flag, bool):
        return flag
    source = getattr(template, "chat_template_source", None)  # template: auto renders the tokenizer's Jinja
    if source is None and getattr(template, "name", None) == "auto":
        source = getattr(tokenizer, "chat_template", None)
    if source is not None:
        text = source if isinstance(source, str) else " ".join(source.values())
        return re.search(r"\btools\b", text) is not None
    return bool(getattr(template, "tool_format", None))


class TokenizerChatTemplate:
    """Stand-in for the Template API using ``tokenizer.apply_chat_template`` (prompts only)."""

    name = "auto"
    tool_format = None

    def __init__(self, tokenizer: Any, default_system: str | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "the tokenizer has no chat template", hint="set template: to a builtin name, e.g. chatml or llama3"
            )
        self.default_system = default_system

    def prompt_ids(self, tokenizer: Any, messages: list[dict], tools: Any = None) -> list[int]:
        messages = with_system(messages, self.default_system)
        text = tokenizer.apply_chat_template(
            _to_hf_messages(messages), tools=tools, add_generation_prompt=True, tokenize=False
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        eos = tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else []

    def parse_tool_calls(self, text: str) -> list[dict] | None:
        blocks = re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, re.S) or [text.strip()]
        calls = []
        for block in blocks:
            try:
                data = json.loads(block)
            except json.JSONDecodeError:
                return None
            for item in data if isinstance(data, list) else [data]:
                if not isinstance(item, dict) or "name" not in item:
                    return None
                calls.append({"name": item["name"], "arguments": item.get("arguments", {})})
        return calls or None


def _to_hf_messages(messages: list[dict]) -> list[dict]:
    """Canonical ``function_call`` turns as assistant ``tool_calls`` (what Jinja templates expect)."""
    out = []
    for msg in messages:
        if msg.get("role") == "function_call":
            calls = json.loads(msg["content"]) if isinstance(msg["content"], str) else msg["content"]
            calls = calls if isinstance(calls, list) else [calls]
            out.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}} for c in calls
            ]})
        else:
            out.append(msg)
    return out
