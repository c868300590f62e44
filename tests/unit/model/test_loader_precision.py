"""The dtype a model loads in, and QLoRA's 4-bit storage dtype: one dtype, as FSDP needs to shard it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tunery.config.model_args import ModelArguments
from tunery.model import loader


def _gpu(monkeypatch, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_load_dtype_follows_the_training_precision(monkeypatch):
    args = ModelArguments(model_name_or_path="m")
    assert loader.pick_dtype(args, SimpleNamespace(bf16=True, fp16=False)) == torch.float32  # a CPU: fp32
    _gpu(monkeypatch)
    assert loader.pick_dtype(args, SimpleNamespace(bf16=True, fp16=False)) == torch.bfloat16
    assert loader.pick_dtype(args, SimpleNamespace(bf16=False, fp16=True)) == torch.float16
    assert loader.pick_dtype(args, SimpleNamespace(bf16=False, fp16=False)) == torch.float32


def test_qlora_stores_its_4bit_weights_in_the_load_dtype(monkeypatch):
    pytest.importorskip("bitsandbytes")
    args = ModelArguments(model_name_or_path="m", quantization_bit=4)
    _gpu(monkeypatch)  # without training settings a GPU picks bf16 ...
    quant = loader.quantization_config(args, torch.float16)  # ... but the run loads fp16: storage follows it
    assert quant.bnb_4bit_quant_storage == torch.float16 and quant.bnb_4bit_compute_dtype == torch.float16
    quant = loader.quantization_config(args)
    assert quant.bnb_4bit_quant_storage == torch.bfloat16 == quant.bnb_4bit_compute_dtype


def test_a_quantized_model_loads_on_this_process_gpu(monkeypatch):
    assert loader.default_device() in ("cpu", "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loader.default_device() == "cuda:1"  # rank 1 of a DDP QLoRA run, not every rank on cuda:0
    monkeypatch.delenv("LOCAL_RANK")
    assert loader.default_device() == "cuda:0"


def test_qlora_under_fsdp_keeps_one_dtype_for_fsdp_to_flatten(tiny_chatml_model, tmp_path, monkeypatch):
    """peft's k-bit preparation upcasts the non-quantized weights to fp32; under FSDP they must stay in the
    dtype the 4-bit weights are stored in (bf16 here), or FSDP cannot flatten them together."""
    pytest.importorskip("bitsandbytes")
    from tests.unit.train_utils import train_config
    from tunery.model.loader import load_model, load_tokenizer

    monkeypatch.setattr(loader, "pick_dtype", lambda *a, **k: torch.bfloat16)  # a GPU run's load dtype

    def base_dtypes(fsdp: bool) -> set[torch.dtype]:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true" if fsdp else "false")
        cfg = train_config(tiny_chatml_model, tmp_path / "out", quantization_bit=4)
        model = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True,
                           training_args=cfg.training)
        assert any(type(p).__name__ == "Params4bit" for p in model.parameters())
        return {p.dtype for n, p in model.named_parameters() if "lora_" not in n}

    assert base_dtypes(fsdp=True) == {torch.bfloat16}
    assert torch.float32 in base_dtypes(fsdp=False)  # without FSDP peft's fp32 upcast applies
