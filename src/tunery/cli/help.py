"""``tunery <command> --help``: every setting of a command, grouped, with default and help.

Generated from the config dataclasses, so the help can never disagree with what is parsed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import textwrap

from tunery.config import COMMAND_GROUPS, group_class
from tunery.config.groups import settings_of

GROUP_TITLES = {
    "model": "model",
    "data": "data",
    "finetuning": "finetuning",
    "generation": "generation",
    "evaluation": "evaluation",
    "export": "export",
    "training": "training (transformers' TrainingArguments)",
}


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    value = getattr(value, "value", value)
    return "none" if value is None else repr(value) if isinstance(value, str) else str(value)


def _first_line(text: str) -> str:
    text = " ".join(text.split())
    return re.split(r"(?<=[a-z0-9)])\. (?=[A-Z])", text)[0].rstrip(".") if text else ""


def format_command_help(command: str, summary: str, usage: str) -> str:
    width = min(shutil.get_terminal_size((110, 20)).columns, 140)
    lines = [f"usage: {usage}", "", summary, ""]
    lines.append("Settings come from an optional YAML/JSON file, then --key value or key=value overrides.")
    for group in COMMAND_GROUPS.get(command, []):
        cls = group_class(group)
        lines += ["", f"{GROUP_TITLES[group]}:"]
        titles = {f.name: f.metadata.get("help", f.name) for f in dataclasses.fields(cls) if f.metadata.get("group")}
        current = None
        for sub, f, _ in settings_of(cls):
            if f.name.startswith("_"):
                continue
            if sub != current:  # a method group (finetuning.lora, model.quantization, ...)
                current = sub
                lines += ["", f"{GROUP_TITLES[group]}.{sub} ({titles[sub]}):" if sub else f"{GROUP_TITLES[group]}:"]
            help_text = _first_line(f.metadata.get("help", ""))
            head = f"  --{f.name} (default: {_default_text(f)})"
            lines.append(head)
            if help_text:
                lines += textwrap.wrap(help_text, width=width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
