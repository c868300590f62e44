"""``tunery <command> --help``: every setting of a command, grouped, with default and help.

Generated from the config dataclasses, so the help can never disagree with what is parsed. Tunery's
own groups are read from their classes directly (light modules). The training group is transformers'
TrainingArguments subclass, whose import pulls torch and transformers (seconds): its rows are built
once from the real class and kept in a small JSON file under the Tunery cache (``$TUNERY_CACHE/help``),
named after everything they depend on (transformers' version, Tunery's version, the source of
``config/training_args.py``), so a later ``--help`` reads the file instead of importing transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import tunery.config
from tunery import __version__
from tunery.config import COMMAND_GROUPS, DEFAULT_OUTPUT_DIR, GROUPS, group_class
from tunery.config.groups import settings_of
from tunery.hub import cache_root

GROUP_TITLES = {
    "model": "model",
    "data": "data",
    "finetuning": "finetuning",
    "generation": "generation",
    "evaluation": "evaluation",
    "export": "export",
    "training": "training (transformers' TrainingArguments)",
}
# Defaults Tunery decides above the dataclasses (parse_config), shown instead of the field's own.
TUNERY_DEFAULTS = {
    "output_dir": repr(DEFAULT_OUTPUT_DIR),
    "do_train": "False; tunery train trains when none of do_train, do_eval, do_predict is given",
}
HELP_CACHE_FORMAT = 1  # bump when the rows' shape changes


def _default_text(f: dataclasses.Field) -> str:
    """The default as the help shows it: ``metadata["default_text"]`` when the field's value is only a
    placeholder (``template: None`` means auto), else the value itself (``'x'``, ``8``, ``none``)."""
    if "default_text" in f.metadata:
        return f.metadata["default_text"]
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


def group_rows(cls: type) -> list[dict[str, Any]]:
    """One row per setting of a settings class: ``{"name", "default", "help", "section"}``.

    ``section`` is the method group (``lora``, ``quantization``) with its title, or None.
    """
    titles = {f.name: f.metadata.get("help", f.name) for f in dataclasses.fields(cls) if f.metadata.get("group")}
    rows = []
    for sub, f, _ in settings_of(cls):
        if f.name.startswith("_"):
            continue
        rows.append({
            "name": f.name,
            "default": TUNERY_DEFAULTS.get(f.name) or _default_text(f),
            "help": _first_line(f.metadata.get("help", "")),
            "section": f"{sub} ({titles[sub]})" if sub else None,
        })
    return rows


def _training_key() -> str:
    """What the training rows depend on, hashed: transformers' version, Tunery's, our subclass's source."""
    try:
        transformers_version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        transformers_version = "missing"
    source = Path(tunery.config.__file__).with_name("training_args.py").read_bytes()
    parts = [str(HELP_CACHE_FORMAT), transformers_version, __version__, hashlib.sha256(source).hexdigest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def training_cache_file() -> Path:
    """Where the training group's rows are kept for this transformers + Tunery (see the module doc)."""
    return cache_root() / "help" / f"training-settings-{_training_key()}.json"


def training_rows() -> list[dict[str, Any]]:
    """The training group's rows: from the cache file when it is there, else from the class (and cached).

    A cache folder that cannot be written only costs the import next time; a damaged file is rebuilt.
    """
    path = training_cache_file()
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(rows, list) and all(isinstance(r, dict) and "name" in r for r in rows):
            return rows
    except (OSError, ValueError):
        pass
    rows = group_rows(group_class("training"))  # imports transformers and torch (seconds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as tmp:
            json.dump(rows, tmp, ensure_ascii=False, indent=0)
        os.replace(tmp.name, path)  # whole file or none: two help calls at once both read a valid file
    except OSError:
        pass
    return rows


def command_rows(command: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """``[(group, rows)]`` of ``command`` in the order --help shows them; each name appears once."""
    return [(group, training_rows() if group == "training" else group_rows(GROUPS[group]))
            for group in COMMAND_GROUPS.get(command, [])]


def format_command_help(command: str, summary: str, usage: str) -> str:
    width = min(shutil.get_terminal_size((110, 20)).columns, 140)
    lines = [f"usage: {usage}", "", summary, ""]
    if COMMAND_GROUPS.get(command):
        lines.append("Settings come from an optional YAML/JSON file, then --key value or key=value overrides.")
    for group, rows in command_rows(command):
        lines += ["", f"{GROUP_TITLES[group]}:"]
        current = None
        for row in rows:
            if row["section"] != current:  # a method group (finetuning.lora, model.quantization, ...)
                current = row["section"]
                lines += ["", f"{GROUP_TITLES[group]}.{current}:" if current else f"{GROUP_TITLES[group]}:"]
            lines.append(f"  --{row['name']} (default: {row['default']})")
            if row["help"]:
                lines += textwrap.wrap(row["help"], width=width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
