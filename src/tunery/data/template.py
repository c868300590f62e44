"""Public entry point for chat templates (see docs/templates.md).

``get_template`` picks the tokenizer's own Jinja template (``auto``) or a builtin by name; the
classes live in :mod:`tunery.data.templates`.
"""

from __future__ import annotations

from typing import Any

from tunery.config.lf_keys import LF_TEMPLATES
from tunery.data.templates.base import PROMPT_ROLE, Encoded, Segment, Template
from tunery.data.templates.builtin import BUILTINS, build_builtin
from tunery.data.templates.check import check_template as _check
from tunery.data.templates.jinja_auto import AutoTemplate
from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.model.multimodal import is_multimodal_template

__all__ = ["PROMPT_ROLE", "AutoTemplate", "Encoded", "Segment", "Template", "check_template", "get_template",
           "list_templates", "parse_tool_calls"]


def _option(data_args: Any, name: str, default: Any = None) -> Any:
    return getattr(data_args, name, default) if data_args is not None else default


def get_template(name_or_auto: str | None, tokenizer, data_args: Any = None) -> Template:
    """The template named by ``template:`` (None/"" -> auto when the tokenizer has one, else default).

    ``data_args`` (DataArguments or anything with the same attributes) supplies ``default_system``,
    ``enable_thinking`` and ``tool_format`` overrides.
    """
    name = (name_or_auto or "").strip()
    if not name:
        name = "auto" if getattr(tokenizer, "chat_template", None) else "default"
    default_system = _option(data_args, "default_system")
    enable_thinking = _option(data_args, "enable_thinking", True)
    tool_format = _option(data_args, "tool_format")
    preserve_thinking = bool(_option(data_args, "preserve_thinking", False))
    if name not in BUILTINS and is_multimodal_template(name):
        name = "auto"  # LLaMA-Factory's name for a multimodal family: the processor's own chat template
    if name == "auto":
        _say_once(name_or_auto)
        return AutoTemplate(tokenizer, default_system=default_system, enable_thinking=enable_thinking,
                            tool_format=tool_format, preserve_thinking=preserve_thinking)
    if name not in BUILTINS and name in LF_TEMPLATES:
        raise ConfigError(f"template '{name}' is a LLaMA-Factory template Tunery has no builtin for",
                          hint="use template: auto (the model's own chat template); docs/compat.md lists the names")
    if name not in BUILTINS:
        import difflib

        close = difflib.get_close_matches(name, list(BUILTINS), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose auto or one of: {', '.join(BUILTINS)}"
        raise ConfigError(f"unknown template '{name}'", hint=hint)
    template = build_builtin(name, tokenizer, default_system=default_system, enable_thinking=enable_thinking,
                             tool_format=tool_format, preserve_thinking=preserve_thinking,
                             mask_history=bool(_option(data_args, "mask_history", False)))
    if name not in NO_MISMATCH_CHECK and getattr(tokenizer, "chat_template", None):
        _warn_on_mismatch(template, tokenizer)
    return template


_SAID_AUTO: set[str] = set()


def _say_once(asked: str | None) -> None:
    """Log, once per process and name, that the tokenizer's own chat template renders the conversations."""
    key = (asked or "").strip() or "<unset>"
    if key in _SAID_AUTO:
        return
    _SAID_AUTO.add(key)
    if key == "auto":
        message = "template: auto: conversations are rendered by the tokenizer's own chat template"
    elif key == "<unset>":
        message = "no template set: conversations are rendered by the tokenizer's own chat template"
    else:
        message = (f"template '{key}' is LLaMA-Factory's name for a multimodal family: conversations are rendered "
                   "by the processor's own chat template (template: auto)")
    get_logger(__name__).info(message)


# Templates chosen on purpose to differ from a chat model's own format (plain few-shot text).
NO_MISMATCH_CHECK = ("fewshot", "empty")


def _warn_on_mismatch(template: Template, tokenizer) -> None:
    """Report, before anything is trained or generated, a builtin that disagrees with the model."""
    diff = check_template(template, tokenizer)
    if diff:
        # the diff opens with the one sentence naming the template (said once, not twice)
        get_logger(__name__).warning(
            "%sThe model was trained on its own format, so replies may never stop or degrade; keep "
            "template '%s' only if this is intended.", diff, template.name,
        )


def list_templates() -> list[str]:
    """Every name ``template:`` accepts."""
    return ["auto", *BUILTINS]


def check_template(template: Template, tokenizer) -> str | None:
    """A unified diff when ``template`` renders differently from the tokenizer's own chat template."""
    return _check(template, tokenizer)


def parse_tool_calls(template: Template, text: str) -> list[dict] | None:
    """Tool calls in a model reply according to ``template``'s tool format (None: a plain answer)."""
    return template.parse_tool_calls(text)
