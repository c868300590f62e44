"""Liger kernels and FP8 (issue #15): refused at parse time without CUDA, handed to their libraries with it.

No GPU kernel runs here: "CUDA" is torch.cuda.is_available monkeypatched to True (with use_cpu so transformers
does not pick a CUDA device), and the libraries are stand-in modules where a parse-time import check needs one.
What is checked is where each setting lands: transformers' ``use_liger_kernel``, accelerate's
``mixed_precision`` "fp8" and the backend's recipe handler on the accelerator the trainer would build.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from accelerate.utils import MSAMPRecipeKwargs, TERecipeKwargs
from transformers import Trainer

from tunery.config import parse_config
from tunery.errors import ConfigError, DependencyError
from tunery.train.trainer import apply_run_settings, fp8_recipe, with_fp8_recipe

TRAIN = {"model_name_or_path": "/nonexistent/model", "dataset": "d", "output_dir": "unused-out", "report_to": "none",
         "use_cpu": True}


def _cuda(monkeypatch, available: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)


def _installed(monkeypatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))


@pytest.mark.parametrize("key", ["enable_liger_kernel", "use_liger_kernel"])
def test_liger_kernel_needs_cuda_and_reaches_transformers(key, monkeypatch):
    _cuda(monkeypatch, False)
    with pytest.raises(ConfigError) as err:
        parse_config("train", {**TRAIN, key: True})
    assert err.value.message.startswith(f"{key} needs CUDA (") and "\n" not in err.value.message
    # not training: the setting has nothing to do, nothing is refused
    parse_config("chat", {"model_name_or_path": "m", "enable_liger_kernel": True})

    _cuda(monkeypatch, True)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # not installed: the install command
    with pytest.raises(DependencyError, match=r"tunery\[liger\]"):
        parse_config("train", {**TRAIN, key: True})
    _installed(monkeypatch, "liger_kernel")
    cfg = parse_config("train", {**TRAIN, key: True})
    args = cfg.training
    apply_run_settings(cfg, args)
    assert args.use_liger_kernel is True  # transformers' Trainer.train applies Liger to the model from this
    plain = parse_config("train", dict(TRAIN))
    apply_run_settings(plain, plain.training)
    assert plain.training.use_liger_kernel is False


def test_fp8_needs_cuda(monkeypatch):
    _cuda(monkeypatch, False)
    for extra in ({"fp8": True}, {"fp8": True, "fp8_backend": "torchao", "bf16": True}):
        with pytest.raises(ConfigError) as err:
            parse_config("train", {**TRAIN, **extra})
        assert err.value.message.startswith("fp8 needs CUDA (") and "\n" not in err.value.message
    cfg = parse_config("train", dict(TRAIN))  # off (LLaMA-Factory's default): accepted anywhere
    assert cfg.training.fp8 is False and fp8_recipe(cfg.training) is None


def test_fp8_reaches_accelerate_mixed_precision_and_recipe(monkeypatch):
    _cuda(monkeypatch, True)
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(DependencyError, match=r"tunery\[fp8\]"):
        parse_config("train", {**TRAIN, "fp8": True, "fp8_backend": "torchao"})
    monkeypatch.setitem(sys.modules, "msamp", None)
    with pytest.raises(DependencyError, match="MS-AMP"):
        parse_config("train", {**TRAIN, "fp8": True, "fp8_backend": "msamp"})

    _installed(monkeypatch, "msamp")
    cfg = parse_config("train", {**TRAIN, "fp8": True, "fp8_backend": "msamp"})
    args = cfg.training
    assert args.mixed_precision == "no"
    apply_run_settings(cfg, args)
    assert args.mixed_precision == "fp8"
    recipe = fp8_recipe(cfg.training)
    assert isinstance(recipe, MSAMPRecipeKwargs)
    # what transformers' Trainer hands to accelerate.Accelerator(**kwargs), without building it on a CPU
    trainer = object.__new__(with_fp8_recipe(Trainer, recipe))
    trainer.args, trainer.model = args, torch.nn.Linear(16, 16)
    built = trainer._build_accelerator_args()
    assert built["mixed_precision"] == "fp8"
    assert recipe in built["kwargs_handlers"] and len(built["kwargs_handlers"]) == 2  # beside the DDP handler
    plain = object.__new__(Trainer)  # the Trainer class itself is untouched
    plain.args, plain.model = args, trainer.model
    assert recipe not in plain._build_accelerator_args()["kwargs_handlers"]


def test_fp8_backend_auto_takes_the_first_installed(monkeypatch):
    import importlib.util

    from tunery.config import fp8_backend_in_use

    found = {"transformer_engine"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in found else None)
    assert fp8_backend_in_use("auto") == "te"
    assert fp8_backend_in_use("msamp") == "msamp"
    found.clear()
    assert fp8_backend_in_use("auto") == "torchao"  # none installed: the install hint names torchao
    monkeypatch.setattr(sys.modules["accelerate.utils.dataclasses"], "is_transformer_engine_available", lambda: True)
    te = types.SimpleNamespace(fp8=True, fp8_backend="te", fp8_enable_fsdp_float8_all_gather=False)
    assert isinstance(fp8_recipe(te), TERecipeKwargs)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_pure_bf16_needs_cuda_and_trains_bf16_weights(kind, tiny_chatml_model, tmp_path, monkeypatch):
    from tests.unit.train_utils import train_config
    from tunery.model.loader import load_model, load_tokenizer

    _cuda(monkeypatch, False)
    with pytest.raises(ConfigError) as err:
        parse_config("train", {**TRAIN, "pure_bf16": True})
    assert err.value.message.startswith("pure_bf16 needs CUDA (")

    _cuda(monkeypatch, True)

    def trained_dtypes(**overrides):
        cfg = train_config(tiny_chatml_model, tmp_path / "out", use_cpu=True, finetuning_type=kind, **overrides)
        model = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True,
                           training_args=cfg.training)
        return ({p.dtype for p in model.parameters() if p.requires_grad},
                {p.dtype for p in model.parameters() if not p.requires_grad})

    trained, frozen = trained_dtypes(pure_bf16=True)
    if kind == "full":
        assert trained == {torch.bfloat16}  # loaded bf16 and trained as it is: no fp32 copies
    else:
        assert frozen == {torch.bfloat16}  # the base in bf16; peft keeps its adapter weights fp32 (as in LLaMA-Factory)
    trained, frozen = trained_dtypes()  # without it (and without bf16: true) the model loads and trains in fp32
    assert trained == {torch.float32} and frozen <= {torch.float32}
