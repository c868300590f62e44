"""model.adapter: which weights train for each finetuning type, and the peft config LoRA gets."""

from __future__ import annotations

import pytest
import torch

from tests.unit.train_utils import train_config
from tunery.errors import ConfigError

ALL_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _load(model_path, tmp_path, **overrides):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(model_path, tmp_path / "out", **overrides)
    tokenizer = load_tokenizer(cfg.model)
    return load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training), cfg


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_all_targets_every_linear_but_the_head(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, lora_rank=4, lora_alpha=8, lora_dropout=0.1)
    config = model.peft_config["default"]
    assert {t.split(".")[-1] for t in config.target_modules} == ALL_LINEAR
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    names = _trainable(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert not any("lm_head" in n or "embed_tokens" in n for n in names)
    # 2 layers x 7 linear layers x (A + B)
    assert len(names) == 2 * 7 * 2


def test_lora_named_targets_rslora_dora_pissa(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, lora_target="q_proj,v_proj", use_rslora=True, use_dora=True,
                     pissa_init=True, pissa_iter=4)
    config = model.peft_config["default"]
    assert {t.split(".")[-1] for t in config.target_modules} == {"q_proj", "v_proj"}
    assert config.use_rslora and config.use_dora
    assert config.init_lora_weights == "pissa_niter_4"
    names = _trainable(model)
    assert any("lora_magnitude_vector" in n for n in names)
    assert {n.split(".lora_")[0].split(".")[-1] for n in names} == {"q_proj", "v_proj"}


@pytest.mark.parametrize("target", ["lora", "0", "input_layernorm", "q_proj,nope"])
def test_lora_target_naming_no_linear_layer_is_a_config_error(tiny_chatml_model, tmp_path, target):
    """Found by the settings fuzzer: peft raised NoMatchingPeftModuleError / ValueError (internal errors)."""
    with pytest.raises(ConfigError, match="names no linear or embedding layer") as info:
        _load(tiny_chatml_model, tmp_path, lora_target=target)
    assert "q_proj" in str(info.value)  # the hint lists the layer names the model has


def test_lora_target_by_dotted_suffix(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, lora_target="self_attn.q_proj")
    assert {n.split(".lora_")[0].split(".")[-1] for n in _trainable(model)} == {"q_proj"}


def test_lora_additional_target_is_trained_fully(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, additional_target="lm_head")
    assert "lm_head" in model.peft_config["default"].modules_to_save
    assert any("lm_head.modules_to_save" in n for n in _trainable(model))


def test_freeze_last_layer_modules_and_extra(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="freeze", freeze_trainable_layers=1,
                     freeze_trainable_modules="mlp", freeze_extra_modules="embed_tokens")
    assert _trainable(model) == {
        "model.embed_tokens.weight", "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight",
    }


def test_freeze_negative_trains_first_layers(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="freeze", freeze_trainable_layers=-1)
    names = _trainable(model)
    assert names and all(n.startswith("model.layers.0.") for n in names)


def test_freeze_unknown_module_names_the_choices(tiny_chatml_model, tmp_path):
    with pytest.raises(ConfigError, match="freeze_trainable_modules") as err:
        _load(tiny_chatml_model, tmp_path, finetuning_type="freeze", freeze_trainable_modules="attention")
    assert "self_attn" in str(err.value)


def test_full_trains_everything_and_checkpointing_is_a_choice(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="full", disable_gradient_checkpointing=False)
    assert all(p.requires_grad for p in model.parameters())
    assert model.is_gradient_checkpointing
    model, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="full", disable_gradient_checkpointing=True)
    assert not model.is_gradient_checkpointing


def test_quantized_base_only_with_lora(tiny_chatml_model, tmp_path):
    pytest.importorskip("bitsandbytes")
    with pytest.raises(ConfigError, match=r"only be trained with an adapter \(LoRA or OFT\)"):
        _load(tiny_chatml_model, tmp_path, finetuning_type="full", quantization_bit=4)
    model, _ = _load(tiny_chatml_model, tmp_path, quantization_bit=4, quantization_method="bitsandbytes")
    from tunery.model.loader import count_parameters

    trainable, total = count_parameters(model)
    plain, _ = _load(tiny_chatml_model, tmp_path)
    assert (trainable, total) == count_parameters(plain)  # packed 4-bit weights count as their values
    assert any(type(p).__name__ == "Params4bit" for p in model.parameters())


def test_continue_adapter_and_create_new_adapter(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, lora_rank=4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)

    resumed, _ = _load(tiny_chatml_model, tmp_path, adapter_name_or_path=str(adapter))
    b_weights = [p for n, p in resumed.named_parameters() if "lora_B" in n]
    assert b_weights and all(p.requires_grad and torch.allclose(p, torch.full_like(p, 0.01)) for p in b_weights)

    fresh, _ = _load(tiny_chatml_model, tmp_path, adapter_name_or_path=str(adapter), create_new_adapter=True)
    b_weights = [p for n, p in fresh.named_parameters() if "lora_B" in n]
    assert b_weights and all(float(p.abs().sum()) == 0.0 for p in b_weights)  # new adapter starts at zero
    base, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="full")
    merged_q = fresh.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(merged_q, base.model.layers[0].self_attn.q_proj.weight)  # old adapter merged


def test_upcast_layernorms_only_touches_norms():
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunery.model.adapter import upcast_layernorms

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).to(torch.bfloat16)
    upcast_layernorms(model)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["model.norm.weight"] == torch.float32
    assert dtypes["model.layers.0.input_layernorm.weight"] == torch.float32
    assert dtypes["model.layers.0.mlp.up_proj.weight"] == torch.bfloat16


def test_resize_vocab_trains_embeddings_beside_lora(tiny_chatml_model, tmp_path):
    model, cfg = _load(tiny_chatml_model, tmp_path, add_special_tokens="<tool_a>,<tool_b>")
    assert cfg.model.resize_vocab  # turned on because tokens were added
    assert set(model.peft_config["default"].modules_to_save) >= {"embed_tokens", "lm_head"}
    names = _trainable(model)
    assert any("embed_tokens.modules_to_save" in n for n in names)
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0


def test_train_from_scratch_starts_from_random_weights(tiny_chatml_model, tmp_path):
    scratch, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="full", train_from_scratch=True)
    loaded, _ = _load(tiny_chatml_model, tmp_path, finetuning_type="full")
    assert scratch.model.layers[0].mlp.up_proj.weight.shape == loaded.model.layers[0].mlp.up_proj.weight.shape
    assert not torch.allclose(scratch.model.layers[0].mlp.up_proj.weight, loaded.model.layers[0].mlp.up_proj.weight)


def test_rope_scaling_reaches_the_model_config(tiny_chatml_model, tmp_path):
    model, _ = _load(tiny_chatml_model, tmp_path, rope_scaling="linear")
    rope = model.get_base_model().config.rope_parameters
    # LLaMA-Factory's factor: ceil(cutoff_len 2048 (default) / the tiny model's 512 positions)
    assert rope["rope_type"] == "linear" and rope["factor"] == 4.0 and "rope_theta" in rope


def test_loftq_init_goes_through_peft_and_fits_the_quantization_error(tiny_chatml_model, tmp_path, monkeypatch):
    """loftq_init: peft's init_lora_weights="loftq" with LoftQConfig's bits and iterations, at LoRA scale 1.

    peft's LoftQ quantizes on a CUDA/XPU device only, so here "CUDA" is claimed and peft's quantize-and-fit
    step (peft.tuners.lora.layer.loftq_init) is a stand-in with its contract: (weight, num_bits, reduced_rank,
    num_iter) -> (quantized weight, A [r, in], B [out, r]) with B @ A the rank-r fit of weight - quantized.
    peft puts them into the layer; Tunery's part is the config and the scale that makes the fit count.
    """
    import peft.tuners.lora.layer as lora_layer
    from transformers import AutoModelForCausalLM

    calls = []

    def quantize_and_fit(weight, num_bits, reduced_rank, num_iter=1):
        calls.append((num_bits, reduced_rank, num_iter))
        w = weight.detach().float()
        q = torch.round(w * 16) / 16  # a coarse grid in place of nf4/int8
        u, s, vh = torch.linalg.svd(w - q, full_matrices=False)
        root = s[:reduced_rank].sqrt()
        return q.to(weight.dtype), (root[:, None] * vh[:reduced_rank]).to(weight.dtype), \
            (u[:, :reduced_rank] * root).to(weight.dtype)

    monkeypatch.setattr(lora_layer, "loftq_init", quantize_and_fit)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    full = AutoModelForCausalLM.from_pretrained(tiny_chatml_model).model.layers[0].self_attn.q_proj.weight.detach()
    model, _ = _load(tiny_chatml_model, tmp_path, use_cpu=True, lora_rank=4, loftq_init=True, loftq_bits=8,
                     loftq_iter=2)
    config = model.peft_config["default"]
    assert config.init_lora_weights == "loftq" and config.loftq_config == {"loftq_bits": 8, "loftq_iter": 2}
    assert config.lora_alpha == config.r == 4  # scale 1: the default alpha follows the rank with LoftQ
    assert calls and set(calls) == {(8, 4, 2)}
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    base = layer.base_layer.weight.detach().float()
    delta = layer.scaling["default"] * layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float()
    assert not torch.equal(base, full.float())  # the base now holds the quantized weights
    assert delta.abs().sum() > 0  # unlike the default init (B = 0)
    assert torch.linalg.norm(base + delta - full) < 0.9 * torch.linalg.norm(base - full)

    plain, _ = _load(tiny_chatml_model, tmp_path / "plain", use_cpu=True, lora_rank=4)
    assert plain.peft_config["default"].init_lora_weights is True and plain.peft_config["default"].lora_alpha == 8
    assert plain.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight.abs().sum() == 0
