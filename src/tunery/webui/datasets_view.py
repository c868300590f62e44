"""Dataset names for the dropdowns and a rendered preview of a few examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def dataset_names(dataset_dir: str) -> list[str]:
    """Names in ``dataset_dir/dataset_info.json`` (empty when the file is missing or invalid)."""
    path = Path(dataset_dir or ".") / "dataset_info.json"
    try:
        return sorted(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError):
        return []


def preview(config: dict[str, Any], count: int = 3) -> str:
    """The first ``count`` examples as the template renders them, trained spans in **bold**.

    Uses the same pipeline as training (data.load_records + the template), so what is shown is
    what the model will see.
    """
    from tunery.config import parse_config
    from tunery.data import load_records
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer

    cfg = parse_config("data", {**config, "max_samples": count}, source="the web UI")
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template, tokenizer, cfg.data)
    blocks = []
    for i, record in enumerate(load_records(cfg, stage="sft")[:count]):
        segments = template.render(record["messages"], tools=record.get("tools"))
        text = "".join(f"<b>{_escape(s.text)}</b>" if s.role == "assistant" else _escape(s.text) for s in segments)
        blocks.append(f"<h4>#{i + 1}</h4><pre style='white-space:pre-wrap'>{text}</pre>")
    return "\n".join(blocks) or "<p>(no examples)</p>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
