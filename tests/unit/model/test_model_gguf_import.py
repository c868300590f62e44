"""GGUF -> safetensors conversion: cache key per file identity, converted once."""

from __future__ import annotations

import pytest

from tunery.hub import resolve_model
from tunery.model import gguf_import


def test_gguf_cache_key_follows_the_file(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF1")
    first = gguf_import.gguf_cache_dir(resolve_model(str(tmp_path / "a.gguf")))
    (tmp_path / "a.gguf").write_bytes(b"GGUF-longer")
    second = gguf_import.gguf_cache_dir(resolve_model(str(tmp_path / "a.gguf")))
    assert first != second


@pytest.mark.slow
def test_smollm2_gguf_is_converted_once(smollm2_path):
    """The fixture converted the packaged GGUF; resolving again reuses the cached folder."""
    again = gguf_import.materialize_gguf(resolve_model("smollm2-135m-instruct"))
    assert again.path == str(smollm2_path)
    assert (smollm2_path / "config.json").is_file()
    assert any(smollm2_path.glob("*.safetensors"))
