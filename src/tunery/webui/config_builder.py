"""Turn the web UI's field values into a Tunery config, its YAML and the equivalent command."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from tunery.config import parse_config

# Fields that only mean something for LoRA (and QLoRA) runs.
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "quantization_bit")


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields so the config holds only what the user chose (defaults stay defaults)."""
    out = {}
    for key, value in values.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if isinstance(value, float) and value.is_integer() and key not in ("learning_rate", "num_train_epochs",
                                                                              "lora_dropout", "temperature", "top_p"):
            value = int(value)
        out[key] = value
    return out


def train_config(values: dict[str, Any]) -> dict[str, Any]:
    """The `tunery train` config for the Train tab's values, validated like the CLI validates it."""
    config = clean(values)
    if config.get("quantization_bit") in ("none", "None", 0):
        config.pop("quantization_bit")
    if config.get("finetuning_type", "lora") != "lora":
        for key in LORA_KEYS:
            config.pop(key, None)
    config.setdefault("do_train", True)
    config.setdefault("plot_loss", True)
    config.setdefault("report_to", "none")
    config.setdefault("save_total_limit", 2)
    parse_config("train", config, source="the web UI")  # raises ConfigError with a readable message
    return config


def predict_config(values: dict[str, Any]) -> dict[str, Any]:
    config = clean(values)
    config.update({"stage": "sft", "do_predict": True, "predict_with_generate": True, "do_sample": False})
    parse_config("predict", config, source="the web UI")
    return config


def eval_config(values: dict[str, Any]) -> dict[str, Any]:
    config = clean(values)
    parse_config("eval", config, source="the web UI")
    return config


def export_config(values: dict[str, Any]) -> dict[str, Any]:
    config = clean(values)
    parse_config("export", config, source="the web UI")
    return config


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def command_line(command: str, config: dict[str, Any]) -> str:
    """The one-line CLI equivalent, so a UI run can be repeated from a terminal."""
    parts = ["tunery", command]
    for key, value in config.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts += [f"--{key}", shlex.quote(text)]
    return " ".join(parts)
