"""Exporting a multimodal model: the merged checkpoint keeps its processor; GGUF is refused before loading."""

from __future__ import annotations

import pytest

from tunery.config import parse_config
from tunery.errors import ConfigError


def test_merged_export_keeps_the_processor_files(tiny_llava, tmp_path):
    from transformers import AutoProcessor

    from tunery.export.workflow import run_export
    from tunery.model.multimodal import load_processor

    out = tmp_path / "merged"
    result = run_export(parse_config("export", {"model_name_or_path": str(tiny_llava), "export_dir": str(out)}))
    names = {p.name for p in result.files}
    assert {"processor_config.json", "chat_template.jinja", "config.json"} <= names
    original, exported = load_processor(tiny_llava), AutoProcessor.from_pretrained(out)
    assert type(exported).__name__ == "LlavaProcessor"
    assert exported.chat_template == original.chat_template
    assert exported.image_processor.crop_size == original.image_processor.crop_size


def test_gguf_export_of_a_vlm_is_refused_before_loading(tiny_llava, tmp_path, monkeypatch):
    from tunery.export import merge
    from tunery.export.workflow import run_export

    def never(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(merge, "load_merged", never)
    cfg = parse_config("export", {"model_name_or_path": str(tiny_llava), "export_dir": str(tmp_path / "g"),
                                  "export_format": "gguf"})
    with pytest.raises(ConfigError, match="GGUF export of a multimodal model \\(llava\\)"):
        run_export(cfg)
