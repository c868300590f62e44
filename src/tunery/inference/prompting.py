"""From a conversation to prompt ids: the chat template, the system prompt and tool schemas.

The template comes from ``tunery.data.template.get_template``: the same one training used.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tunery.data.template import get_template
from tunery.data.templates.base import parse_tools
from tunery.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tunery.config import RunConfig


def resolve_template(cfg: RunConfig, tokenizer: Any) -> Any:
    """The configured template (``template: auto`` or unset: the tokenizer's own); unknown name -> ConfigError."""
    return get_template(cfg.data.template or "auto", tokenizer, cfg.data)


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Put ``system`` first unless the conversation already starts with a system message."""
    if system and not (messages and messages[0].get("role") == "system"):
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


def normalize_tools(tools: Any) -> list[dict] | None:
    """Tool schemas as a list (a JSON string is parsed); None when there are none.

    The template layer owns the parsing; a bad value here is a bad request, so a ConfigError.
    """
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
