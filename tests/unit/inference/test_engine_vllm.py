"""infer_backend: vllm fails clearly where it cannot run (no package, no GPU) and maps settings right."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from tunery.config import parse_config
from tunery.errors import DependencyError, ResourceError
from tunery.inference import load_engine
from tunery.inference.vllm_engine import check_vllm_available, engine_args


def _cfg(model_dir, **extra):
    return parse_config("chat", {"model_name_or_path": str(model_dir), "infer_backend": "vllm", **extra})


@pytest.mark.skipif("vllm" in sys.modules or torch.cuda.is_available(), reason="vllm may really run here")
def test_without_vllm_package_is_dependency_error(tiny_chatml_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # make the import fail even if it is installed
    with pytest.raises(DependencyError) as err:
        load_engine(_cfg(tiny_chatml_model))
    assert "vllm" in str(err.value) and "pip install 'tunery[vllm]'" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_gpu_is_resource_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    with pytest.raises(ResourceError, match="needs a CUDA GPU"):
        check_vllm_available()


def test_engine_args_from_settings(tiny_chatml_model):
    cfg = _cfg(tiny_chatml_model, vllm_maxlen=2048, vllm_gpu_util=0.5, adapter_name_or_path="a",
               vllm_config='{"tensor_parallel_size": 2}')
    args = engine_args(cfg, "/models/x")
    assert args["model"] == "/models/x" and args["max_model_len"] == 2048
    assert args["gpu_memory_utilization"] == 0.5 and args["enable_lora"] is True
    assert args["max_lora_rank"] == 32 and args["tensor_parallel_size"] == 2


def test_an_oft_adapter_is_refused_before_vllm_loads(tiny_chatml_model, tmp_path, monkeypatch):
    import json

    from tunery.errors import ConfigError

    adapter = tmp_path / "oft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "OFT"}))
    monkeypatch.setitem(sys.modules, "vllm", None)  # the adapter check comes before the package check
    with pytest.raises(ConfigError, match="vllm serves LoRA adapters only; .* is a peft OFT adapter"):
        load_engine(_cfg(tiny_chatml_model, adapter_name_or_path=str(adapter)))
