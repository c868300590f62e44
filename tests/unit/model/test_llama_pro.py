"""LLaMA Pro: `tunery expand` inserts zeroed copies (output unchanged); use_llama_pro trains exactly those blocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.tiny_models import build_tiny_model
from tests.unit.train_utils import train_config
from tunery.errors import ConfigError
from tunery.model.expand import expand_blocks, expanded_layer_ids

IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64, 3, 250]])


@pytest.fixture(scope="module")
def four_layer_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("four") / "model", num_layers=4, seed=3)


@pytest.fixture(scope="module")
def expanded(four_layer_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("pro") / "expanded"
    return expand_blocks(str(four_layer_model), str(out), 2)


def _logits(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits, model


def test_expansion_interleaves_zeroed_copies_and_keeps_the_output(four_layer_model, expanded):
    assert (expanded.layers_before, expanded.layers_after, expanded.new_layer_ids) == (4, 6, [2, 5])
    assert expanded_layer_ids(4, 2) == [2, 5] and expanded_layer_ids(24, 8) == [3, 7, 11, 15, 19, 23, 27, 31]
    config = json.loads((Path(expanded.output_dir) / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors"} <= set(expanded.files)
    before, original = _logits(str(four_layer_model))
    after, model = _logits(expanded.output_dir)
    torch.testing.assert_close(after, before)  # the inserted blocks add nothing to the residual stream
    old, new = original.model.layers, model.model.layers
    for new_id, source_id in ((0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (5, 3)):
        assert torch.equal(new[new_id].self_attn.q_proj.weight, old[source_id].self_attn.q_proj.weight)
        assert torch.equal(new[new_id].mlp.up_proj.weight, old[source_id].mlp.up_proj.weight)
    for new_id in (2, 5):
        assert not new[new_id].self_attn.o_proj.weight.any() and not new[new_id].mlp.down_proj.weight.any()
    assert new[1].self_attn.o_proj.weight.any()


def test_expansion_refuses_a_count_that_does_not_divide_and_a_used_folder(four_layer_model, tmp_path):
    with pytest.raises(ConfigError, match="num_expand 3 must divide the model's 4 layers"):
        expand_blocks(str(four_layer_model), str(tmp_path / "x"), 3)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        expand_blocks(str(four_layer_model), str(tmp_path / "used"), 2)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _load(path, tmp_path, **overrides):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(path, tmp_path / "out", **overrides)
    return load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True,
                      training_args=cfg.training)


def test_use_llama_pro_freeze_trains_exactly_the_new_blocks(expanded, tmp_path):
    model = _load(expanded.output_dir, tmp_path, finetuning_type="freeze", use_llama_pro=True,
                  freeze_trainable_layers=2)
    names = _trainable(model)
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n in names}
    assert layers == {2, 5}
    every = {n for n, _ in model.named_parameters() if ".layers.2." in n or ".layers.5." in n}
    assert names == every
    # without use_llama_pro the same setting means the last 2 layers, as in LLaMA-Factory
    plain = _load(expanded.output_dir, tmp_path, finetuning_type="freeze", freeze_trainable_layers=2)
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in _trainable(plain)} == {4, 5}


def test_use_llama_pro_freeze_modules_and_lora_targets(expanded, tmp_path):
    model = _load(expanded.output_dir, tmp_path, finetuning_type="freeze", use_llama_pro=True,
                  freeze_trainable_layers=2, freeze_trainable_modules="mlp")
    assert all(".mlp." in n and (".layers.2." in n or ".layers.5." in n) for n in _trainable(model))
    lora = _load(expanded.output_dir, tmp_path, finetuning_type="lora", use_llama_pro=True,
                 freeze_trainable_layers=2, lora_target="q_proj,down_proj")
    wrapped = {n.split(".lora_")[0] for n in _trainable(lora)}
    assert {w.split(".layers.")[1] for w in wrapped} == {"2.self_attn.q_proj", "2.mlp.down_proj",
                                                         "5.self_attn.q_proj", "5.mlp.down_proj"}


def test_use_llama_pro_with_layers_that_do_not_split_is_a_config_error(expanded, tmp_path):
    with pytest.raises(ConfigError, match="do not split into freeze_trainable_layers: 4 groups"):
        _load(expanded.output_dir, tmp_path, finetuning_type="freeze", use_llama_pro=True, freeze_trainable_layers=4)


def test_tunery_expand_command(four_layer_model, tmp_path):
    out = tmp_path / "pro"
    cmd = [sys.executable, "-m", "tunery", "expand", "--model_name_or_path", str(four_layer_model),
           "--output_dir", str(out), "--num_expand", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "expanded 4 layers to 8: new blocks 1, 3, 5, 7" in done.stdout
    assert "freeze_trainable_layers: 4" in done.stdout
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 8
    bad = subprocess.run([*cmd[:-1], "3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("tunery: error: num_expand 3 must divide")
