"""Dataset names for the dropdowns and a rendered preview of a few examples."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunery.config import parse_config
from tunery.data.checker import preview_dataset, trained_spans
from tunery.data.template import get_template
from tunery.model.loader import load_tokenizer


def dataset_names(dataset_dir: str) -> list[str]:
    """Names in ``dataset_dir/dataset_info.json`` (empty when the file is missing or invalid)."""
    path = Path(dataset_dir or ".") / "dataset_info.json"
    try:
        return sorted(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError):
        return []


def preview(config: dict[str, Any], count: int = 3) -> str:
    """The first ``count`` examples as training sees them, trained tokens in **bold** (HTML).

    The same preview as ``tunery data preview`` (``data.checker.preview_dataset``: the stage's
    processors, the template, cutoff_len), so what is shown is what the model will be trained on.
    """
    cfg = parse_config("data", {**config, "max_samples": count}, source="the web UI")
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template, tokenizer, cfg.data)
    blocks = []
    for i, entry in enumerate(preview_dataset(cfg, tokenizer, template, count)):
        spans = trained_spans(tokenizer, entry["input_ids"], entry["labels"])
        text = "".join(f"<b>{_escape(t)}</b>" if trained else _escape(t) for t, trained in spans)
        source = entry["source"]
        title = (f"#{i + 1} {_escape(os.path.basename(str(source['file'])))} row {source['row']} ({entry['part']}): "
                 f"{entry['num_tokens']} tokens, {entry['num_trained']} trained, {entry['status']}")
        blocks.append(f"<h4>{title}</h4><pre style='white-space:pre-wrap'>{text}</pre>")
    return "\n".join(blocks) or "<p>(no examples)</p>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
