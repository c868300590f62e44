"""Model resolution: local folders, .gguf files, the SmolLM2 alias, hub ids offline, ModelScope."""

from __future__ import annotations

import pytest

from tunery import hub
from tunery.errors import DependencyError, ModelError
from tunery.hub import resolve_model


def test_local_folder(tiny_chatml_model):
    resolved = resolve_model(str(tiny_chatml_model))
    assert resolved.path == str(tiny_chatml_model) and resolved.source == "local" and not resolved.is_gguf


def test_gguf_file_and_folder_plus_name(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    by_file = resolve_model(str(tmp_path / "m.gguf"))
    assert by_file.gguf_file == "m.gguf" and by_file.path == str(tmp_path)
    by_folder = resolve_model(str(tmp_path), gguf_file="m.gguf")
    assert by_folder == by_file
    assert resolve_model(str(tmp_path)).gguf_file == "m.gguf"  # a folder holding one .gguf


def test_gguf_file_missing_from_the_folder_is_named(tmp_path):
    """Found by the settings fuzzer: a gguf_file that is not in the folder was a FileNotFoundError."""
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="gguf_file '0' is not a file in") as info:
        resolve_model(str(tmp_path), gguf_file="0")
    assert "m.gguf" in str(info.value)


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_path_is_explained(tmp_path):
    with pytest.raises(ModelError, match="neither an existing path nor a hub id"):
        resolve_model(str(tmp_path / "missing" / "model"))


def test_no_model_given():
    with pytest.raises(ModelError, match="no model given"):
        resolve_model(None)


def test_alias_uses_packaged_gguf_or_hub_id(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "smollm2_gguf_path", lambda: tmp_path / hub.SMOLLM2_GGUF)
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.gguf_file == hub.SMOLLM2_GGUF and resolved.path == str(tmp_path)
    monkeypatch.setattr(hub, "smollm2_gguf_path", lambda: None)
    assert resolve_model("SmolLM2-135M-Instruct").path == hub.SMOLLM2_HUB_ID


def test_hub_id_offline_miss_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        resolve_model("no-such-owner/no-such-model", cache_dir=str(tmp_path))
    assert "not in the local cache" in str(err.value)
    assert "huggingface-cli download" in str(err.value)


def test_modelscope_without_package(monkeypatch, tmp_path):
    import importlib.util

    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed here")
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    with pytest.raises(DependencyError, match="modelscope"):
        resolve_model("qwen/Qwen2-0.5B", cache_dir=str(tmp_path))


def test_tokenizer_only_folder_is_enough_for_the_tokenizer_not_the_model(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    assert resolve_model(str(tmp_path), tokenizer_only=True) == hub.ResolvedModel(str(tmp_path), None, "local")
    with pytest.raises(ModelError, match="has tokenizer files, no model") as err:
        resolve_model(str(tmp_path))
    assert "need only the tokenizer" in err.value.hint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(empty), tokenizer_only=True)
