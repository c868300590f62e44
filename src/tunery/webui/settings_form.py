"""The Train tab's advanced settings, generated from the config groups so no setting can be missing.

Every setting of the groups ``tunery train`` reads (``COMMAND_GROUPS["train"]``) gets one component, in
folded sections named like LLaMA-Factory's board (method, quantization, template, RoPE, booster, LoRA,
freeze, RLHF, ...); a settings group a change adds (a new dataclass group) becomes a new section by itself.
Left out: settings the main form already shows (``shown``) and settings Tunery refuses
(config/lf_keys.py: they could only stop the run). A component left at its default adds nothing to the
config, so the YAML holds only what the user changed.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from typing import Any, Literal

import gradio as gr
import yaml

from tunery.config import COMMAND_GROUPS, group_class
from tunery.config.groups import settings_of
from tunery.config.lf_keys import REFUSED

# Settings of a group's own fields that LLaMA-Factory's board shows in a section of their own.
SECTION_OF = {
    "rope_scaling": "RoPE",
    "flash_attn": "booster", "disable_gradient_checkpointing": "booster", "gradient_checkpointing_budget": "booster",
    "use_reentrant_gc": "booster",
    "upcast_layernorm": "booster", "fast_path": "booster", "packing": "booster", "neat_packing": "booster",
    "padding_free": "booster", "enable_liger_kernel": "booster", "use_liger_kernel": "booster",
    "use_unsloth": "booster", "use_unsloth_gc": "booster",
    "fp8": "booster", "fp8_backend": "booster", "fp8_enable_fsdp_float8_all_gather": "booster", "pure_bf16": "booster",
    "template": "template", "default_system": "template", "tool_format": "template", "enable_thinking": "template",
    "preserve_thinking": "template",
    "stage": "method", "finetuning_type": "method", "plot_loss": "method", "dry_run": "method",
}
# Section title of a sub-group (``FinetuningArguments.lora`` -> "LoRA").
GROUP_TITLES = {"lora": "LoRA", "oft": "OFT", "freeze": "freeze", "preference": "RLHF", "rl": "RLHF (PPO / GRPO)",
                "quantization": "quantization"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One generated field: its name, section, default and how it is shown."""

    name: str
    section: str
    default: Any
    choices: tuple | None  # a Literal's values (dropdown), else None
    kind: str  # "bool" (checkbox), "choice" (dropdown) or "text" (YAML scalar typed in a textbox)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _literal(tp: Any) -> tuple | None:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    for arg in typing.get_args(tp):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def train_settings(shown: typing.Collection[str] = ()) -> list[Setting]:
    """Every setting of the train command's groups, minus ``shown`` and refused ones, with its section."""
    out: list[Setting] = []
    seen: set[str] = set()
    for group in COMMAND_GROUPS["train"]:
        for sub, f, tp in settings_of(group_class(group)):
            if f.name in seen or f.name in shown or f.name in REFUSED:
                continue
            seen.add(f.name)
            section = SECTION_OF.get(f.name) or (GROUP_TITLES.get(sub, sub) if sub else group)
            default = _default(f)
            choices = _literal(tp) if not isinstance(tp, str) else None
            kind = "bool" if isinstance(default, bool) and choices is None else ("choice" if choices else "text")
            out.append(Setting(f.name, section, default, choices, kind))
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def build(shown: typing.Collection[str] = ()) -> dict[str, Any]:
    """Folded accordions (``open=False``) of components inside the current Blocks; ``{setting: component}``."""
    settings = train_settings(shown)
    components: dict[str, Any] = {}
    sections: dict[str, list[Setting]] = {}
    for s in settings:
        sections.setdefault(s.section, []).append(s)
    for title, members in sections.items():
        with gr.Accordion(title, open=False, elem_id="section_" + re.sub(r"\W+", "_", title.lower()).strip("_")):
            for s in members:
                eid = f"setting_{s.name}"
                if s.kind == "bool":
                    comp = gr.Checkbox(value=s.default, label=s.name, elem_id=eid)
                elif s.kind == "choice":
                    comp = gr.Dropdown([str(c) for c in s.choices], value=None if s.default is None else str(s.default),
                                       label=s.name, elem_id=eid)
                else:
                    comp = gr.Textbox(value="", placeholder=_text(s.default), label=s.name, elem_id=eid)
                components[s.name] = comp
    return components


def collect(settings: list[Setting], values: list[Any]) -> dict[str, Any]:
    """The settings whose components differ from their defaults, typed as YAML reads them."""
    out: dict[str, Any] = {}
    for s, value in zip(settings, values):
        if s.kind == "bool":
            if bool(value) != bool(s.default):
                out[s.name] = bool(value)
        elif s.kind == "choice":
            if value not in (None, "") and str(value) != str(s.default):
                out[s.name] = next((c for c in s.choices if str(c) == str(value)), value)
        elif isinstance(value, str) and value.strip():
            try:
                out[s.name] = yaml.safe_load(value)
            except yaml.YAMLError:
                out[s.name] = value
    return out


def form_values(settings: list[Setting], config: dict[str, Any]) -> list[Any]:
    """Component values showing ``config`` (the inverse of :func:`collect`, for loading saved settings)."""
    out = []
    for s in settings:
        value = config.get(s.name)
        if s.kind == "bool":
            out.append(bool(value) if value is not None else s.default)
        elif s.kind == "choice":
            out.append(None if value is None else str(value))
        else:
            out.append("" if value is None else _text(value))
    return out
