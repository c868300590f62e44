"""use_unsloth / use_unsloth_gc (issue #15): LLaMA-Factory's meaning on CUDA, refused with the reason without it.

No GPU and no unsloth package here: "CUDA" is torch.cuda.is_available monkeypatched to True, and ``unsloth``
is a stand-in module whose FastLanguageModel records what Tunery passes and returns a real tiny transformers
model (from_pretrained) or a real peft LoRA model (get_peft_model), so the model Tunery gets back trains on
the CPU. What is checked: the keyword arguments Tunery hands Unsloth, that the trainable set is the LoRA set
Unsloth built, that a training step moves only it, and the refusals at parse time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import peft.helpers  # noqa: F401 - imported before CUDA is faked: bitsandbytes picks its backend on import
import pytest
import torch
from transformers import Seq2SeqTrainingArguments, Trainer  # noqa: F401 - same reason

from tests.unit.train_utils import train_config
from tunery.config import parse_config
from tunery.errors import ConfigError, DependencyError
from tunery.model.loader import load_model, load_tokenizer

REAL_CUDA_CHECK = torch.cuda.is_available
ALL_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


class FakeFastLanguageModel:
    """Unsloth's FastLanguageModel API (from_pretrained, get_peft_model, for_inference), recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def from_pretrained(self, **kwargs: Any) -> tuple[Any, Any]:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        self.calls.append(("from_pretrained", kwargs))
        folder = Path(kwargs["model_name"])
        adapter = (folder / "adapter_config.json").is_file()
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] if adapter else folder
        model = AutoModelForCausalLM.from_pretrained(base, dtype=kwargs["dtype"])
        if adapter:  # Unsloth loads the base its adapter_config.json names, then the adapter, trainable
            with mock.patch.object(torch.cuda, "is_available", REAL_CUDA_CHECK):  # safetensors would pin memory
                model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
        return model, "unsloth's tokenizer"

    def get_peft_model(self, model: Any, **kwargs: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        self.calls.append(("get_peft_model", kwargs))
        config = LoraConfig(r=kwargs["r"], lora_alpha=kwargs["lora_alpha"], lora_dropout=kwargs["lora_dropout"],
                            target_modules=kwargs["target_modules"], use_rslora=kwargs["use_rslora"],
                            modules_to_save=kwargs["modules_to_save"], init_lora_weights=kwargs["init_lora_weights"],
                            bias=kwargs["bias"], task_type="CAUSAL_LM")
        return get_peft_model(model, config)

    def for_inference(self, model: Any) -> None:
        self.calls.append(("for_inference", {"model": model}))

    def kwargs_of(self, name: str) -> dict[str, Any]:
        found = [kw for call, kw in self.calls if call == name]
        assert len(found) == 1, self.calls
        return found[0]


@pytest.fixture
def fake_unsloth(monkeypatch) -> FakeFastLanguageModel:
    """An installed ``unsloth`` and a CUDA GPU, as far as Tunery can tell."""
    fast = FakeFastLanguageModel()
    module = types.ModuleType("unsloth")
    module.FastLanguageModel = fast
    monkeypatch.setitem(sys.modules, "unsloth", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return fast


def _load(model_path: Path, tmp_path: Path, **overrides: Any) -> tuple[Any, Any]:
    cfg = train_config(model_path, tmp_path / "out", use_unsloth=True, use_cpu=True, **overrides)
    tokenizer = load_tokenizer(cfg.model)
    return load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training), cfg


def _step(model: Any) -> dict[str, torch.Tensor]:
    """One AdamW step on a fixed batch; returns the parameters before it (by name)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 11, 2]])
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    # the real check: a CUDA build of torch would otherwise try to start CUDA in the optimizer's capture check
    with mock.patch.object(torch.cuda, "is_available", REAL_CUDA_CHECK):
        optimizer.step()
    return before


def test_lora_is_loaded_and_built_by_unsloth_with_tunerys_settings(fake_unsloth, tiny_chatml_model, tmp_path):
    model, cfg = _load(tiny_chatml_model, tmp_path, cutoff_len=96, lora_rank=4, lora_alpha=8, lora_dropout=0.1,
                       use_rslora=True, seed=11, disable_gradient_checkpointing=False)
    loaded = fake_unsloth.kwargs_of("from_pretrained")
    assert loaded["model_name"] == str(tiny_chatml_model)
    assert loaded["max_seq_length"] == 96  # cutoff_len
    assert loaded["dtype"] == torch.float32  # the compute dtype (no bf16/fp16 asked)
    assert (loaded["load_in_4bit"], loaded["load_in_8bit"], loaded["full_finetuning"]) == (False, False, False)
    assert loaded["device_map"] == {"": "cuda:0"} and loaded["rope_scaling"] is None
    assert loaded["use_gradient_checkpointing"] == "unsloth" and loaded["fix_tokenizer"] is False
    built = fake_unsloth.kwargs_of("get_peft_model")
    assert (built["r"], built["lora_alpha"], built["lora_dropout"]) == (4, 8, 0.1)
    assert built["target_modules"] == "all-linear"  # lora_target: all, as Tunery resolves it for peft
    assert built["use_rslora"] is True and built["random_state"] == 11 and built["max_seq_length"] == 96
    assert built["use_gradient_checkpointing"] == "unsloth" and built["init_lora_weights"] is True
    assert "use_dora" not in built

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == set(ALL_LINEAR)
    before = _step(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable and any(".lora_B." in n for n in changed)


def test_named_targets_qlora_rope_and_no_checkpointing_reach_unsloth(fake_unsloth, tiny_chatml_model, tmp_path):
    from tunery.model import unsloth

    cfg = train_config(tiny_chatml_model, tmp_path / "out", use_unsloth=True, use_cpu=True, quantization_bit=4,
                       lora_target="q_proj,v_proj", rope_scaling="linear", cutoff_len=4096, use_dora=True)
    from transformers import AutoConfig

    from tunery.model.loader import apply_rope_scaling

    config = AutoConfig.from_pretrained(tiny_chatml_model)
    factor = apply_rope_scaling(config, "linear", cfg.model.model_max_length)
    kwargs = unsloth.from_pretrained_kwargs("m", config, cfg.model, cfg.finetuning, torch.bfloat16, device="cuda:1",
                                            is_trainable=True, training_args=cfg.training)
    assert kwargs["load_in_4bit"] is True and kwargs["load_in_8bit"] is False and kwargs["dtype"] == torch.bfloat16
    assert kwargs["rope_scaling"] == dict(config.rope_parameters) and kwargs["rope_scaling"]["rope_type"] == "linear"
    assert kwargs["rope_scaling"]["factor"] == factor
    assert factor > 1 and kwargs["max_seq_length"] == 4096 and kwargs["device_map"] == {"": "cuda:1"}

    # 4-bit needs bitsandbytes to build for real: the LoRA builder is checked on the full-precision base
    model, cfg = _load(tiny_chatml_model, tmp_path, lora_target="q_proj,v_proj", use_dora=True,
                       disable_gradient_checkpointing=True)
    built = fake_unsloth.kwargs_of("get_peft_model")
    assert built["target_modules"] == ["q_proj", "v_proj"] and built["use_dora"] is True
    assert built["use_gradient_checkpointing"] is False
    assert fake_unsloth.kwargs_of("from_pretrained")["use_gradient_checkpointing"] is False
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "v_proj"}


def test_full_finetuning_is_unslothed_and_trains_every_weight(fake_unsloth, tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="full")
    assert fake_unsloth.kwargs_of("from_pretrained")["full_finetuning"] is True
    assert not [c for c, _ in fake_unsloth.calls if c == "get_peft_model"]
    assert all(p.requires_grad for p in model.parameters())
    _step(model)


def test_one_adapter_loads_through_unsloth_for_training_and_chat(fake_unsloth, tiny_chatml_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_chatml_model)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(adapter)

    model, _ = _load(tiny_chatml_model, tmp_path, adapter_name_or_path=str(adapter))
    assert fake_unsloth.kwargs_of("from_pretrained")["model_name"] == str(adapter)
    assert not [c for c, _ in fake_unsloth.calls if c == "get_peft_model"]  # continued, not a new adapter
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n and ".q_proj." in n for n in trainable)

    fake_unsloth.calls.clear()
    cfg = parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "adapter_name_or_path": str(adapter),
                                "use_unsloth": True, "infer_dtype": "float32"})
    chat_model = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=False)
    loaded = fake_unsloth.kwargs_of("from_pretrained")
    assert loaded["model_name"] == str(adapter) and loaded["use_gradient_checkpointing"] is False
    assert fake_unsloth.kwargs_of("for_inference")["model"] is chat_model
    assert not any(p.requires_grad for p in chat_model.parameters())

    fake_unsloth.calls.clear()  # no adapter: chat loads with transformers, as LLaMA-Factory does
    cfg = parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "use_unsloth": True,
                                "infer_dtype": "float32"})
    load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=False)
    assert fake_unsloth.calls == []


def test_multimodal_model_is_refused_when_its_config_is_read(fake_unsloth, tmp_path):
    from tunery.model import unsloth

    config = types.SimpleNamespace(model_type="llava")
    cfg = train_config(tmp_path, tmp_path / "out", use_unsloth=True, use_cpu=True)
    with pytest.raises(ConfigError, match="vision/audio-language model"):
        unsloth.load_model("m", config, cfg.model, cfg.finetuning, torch.float32, device="cuda:0", is_trainable=True)
    assert fake_unsloth.calls == []


def test_use_unsloth_gc_offloads_checkpointed_inputs_to_cpu_memory(monkeypatch, tiny_chatml_model, tmp_path):
    """use_unsloth_gc: transformers' offloaded checkpointing (saved layer inputs in pinned CPU memory)."""
    import transformers.modeling_utils as modeling_utils
    from torch.autograd.graph import save_on_cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    entered: list[dict[str, Any]] = []

    def recording_save_on_cpu(pin_memory: bool = False, device_type: str = "cuda"):
        entered.append({"pin_memory": pin_memory})
        return save_on_cpu(pin_memory=False, device_type=device_type)  # no pinned allocator without a GPU

    monkeypatch.setattr(modeling_utils, "save_on_cpu", recording_save_on_cpu)
    cfg = train_config(tiny_chatml_model, tmp_path / "out", use_unsloth_gc=True, use_cpu=True,
                       disable_gradient_checkpointing=False)
    model = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    before = _step(model)
    assert len(entered) == 2 and all(e["pin_memory"] for e in entered)  # one per decoder layer of the tiny model
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())

    entered.clear()  # without it: plain checkpointing, nothing offloaded
    cfg = train_config(tiny_chatml_model, tmp_path / "out2", use_cpu=True, disable_gradient_checkpointing=False)
    _step(load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training))
    assert entered == []


def test_unsloth_needs_cuda_and_the_package(monkeypatch, tiny_chatml_model, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for key in ("use_unsloth", "use_unsloth_gc"):
        with pytest.raises(ConfigError) as err:
            train_config(tiny_chatml_model, tmp_path / "out", **{key: True, "disable_gradient_checkpointing": False})
        assert err.value.message.startswith(f"{key} needs CUDA (") and "\n" not in err.value.message
    parse_config("chat", {"model_name_or_path": "m", "use_unsloth": True})  # nothing loads with Unsloth: accepted

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "unsloth", None)  # not installed
    with pytest.raises(DependencyError) as err:
        train_config(tiny_chatml_model, tmp_path / "out", use_unsloth=True, use_cpu=True)
    assert "run: pip install unsloth" in str(err.value) + str(err.value.hint)


def test_cli_refuses_use_unsloth_without_cuda_with_exit_2(tiny_chatml_model, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"model_name_or_path: {tiny_chatml_model}\ndataset: alpaca_en_demo\nuse_unsloth: true\n"
                      f"output_dir: {tmp_path / 'out'}\n")
    env_code = ("import sys, torch; torch.cuda.is_available = lambda: False; "
                "from tunery.cli.main import main; sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", env_code, "train", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "use_unsloth needs CUDA" in done.stderr and "Traceback" not in done.stderr
