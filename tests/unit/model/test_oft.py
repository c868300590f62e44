"""finetuning_type: oft — peft's OFT layers on the targets, identity at start, trained, saved and merged."""

from __future__ import annotations

import json

import pytest
import torch

from tests.unit.train_utils import logged_losses, run_tiny_training, train_config
from tunery.errors import ConfigError

ALL_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64]])


def _load(model_path, tmp_path, *, trainable=True, **overrides):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(model_path, tmp_path / "out", **overrides)
    tokenizer = load_tokenizer(cfg.model)
    return load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=trainable, training_args=cfg.training), cfg


def test_oft_wraps_the_targets_in_oft_layers_that_start_as_identity(tiny_chatml_model, tmp_path):
    from peft.tuners.oft.layer import OFTLayer

    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="oft", oft_block_size=16, module_dropout=0.1)
    config = model.peft_config["default"]
    assert type(config).__name__ == "OFTConfig"
    assert (config.r, config.oft_block_size, config.module_dropout) == (0, 16, 0.1)
    wrapped = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, OFTLayer)}
    assert wrapped == ALL_LINEAR
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".oft_R." in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)
    base, _ = _load(tiny_chatml_model, tmp_path, trainable=False, finetuning_type="oft")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS).logits, base(input_ids=IDS).logits)


def test_oft_rank_and_named_targets(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="oft", oft_rank=4, oft_block_size=0,
                     oft_target="q_proj,v_proj", lora_target="o_proj")
    config = model.peft_config["default"]
    assert config.r == 4 and config.oft_block_size == 0
    assert {t.split(".")[-1] for t in config.target_modules} == {"q_proj", "v_proj"}  # oft_target, not lora_target


def test_oft_target_naming_no_linear_layer_is_a_config_error(tiny_chatml_model, tmp_path):
    with pytest.raises(ConfigError, match="oft_target 'input_layernorm' names no linear"):
        _load(tiny_chatml_model, tmp_path, finetuning_type="oft", oft_target="input_layernorm")


def test_oft_trains_saves_an_oft_adapter_and_merges_for_inference(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="oft", oft_block_size=16,
                       learning_rate=3e-2)
    outcome, trainer = run_tiny_training(cfg)
    assert outcome.stopped_by is None
    losses = logged_losses(tmp_path / "out")
    assert (losses[7] + losses[8]) / 2 < (losses[1] + losses[2]) / 2 - 0.05, losses
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "OFT" and saved["oft_block_size"] == 16
    trained = trainer.model.eval()
    chat_cfg = train_config(tiny_chatml_model, tmp_path / "unused", adapter_name_or_path=str(tmp_path / "out"))
    merged = load_model(load_tokenizer(chat_cfg.model), chat_cfg.model)
    base, _ = _load(tiny_chatml_model, tmp_path, trainable=False)
    with torch.no_grad():
        ids = IDS.to(next(trained.parameters()).device)
        out_trained, out_merged = trained(input_ids=ids).logits, merged(input_ids=ids).logits
        torch.testing.assert_close(out_merged, out_trained, atol=1e-4, rtol=1e-4)
        assert (out_merged - base(input_ids=ids).logits).abs().max() > 1e-3  # the rotations learned something


def test_oft_on_a_4bit_base_trains_only_the_rotations(tiny_chatml_model, tmp_path):
    """QOFT, as LLaMA-Factory allows: OFT layers on bitsandbytes 4-bit linears."""
    pytest.importorskip("bitsandbytes")
    from peft.tuners.oft.layer import OFTLayer

    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="oft", oft_block_size=16, quantization_bit=4,
                     quantization_method="bitsandbytes")
    wrapped = [m for m in model.modules() if isinstance(m, OFTLayer)]
    assert wrapped and all(type(m.get_base_layer()).__name__ == "Linear4bit" for m in wrapped)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".oft_R." in n for n in trainable)
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
