"""Merged exports behave exactly like base + adapters; shards, legacy .bin, model card, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunery.config import parse_config
from tunery.errors import ConfigError

PROMPT = "What is the capital of France? The capital"


def make_adapter(base: Path, out: Path, seed: int, rank: int = 4) -> Path:
    """A LoRA adapter with random non-zero B (a fresh LoRA is a no-op, which would prove nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out)
    return out


def logits_of(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0]


def reference_logits(base: Path, adapters: list[Path], tokenizer) -> torch.Tensor:
    """Base with every adapter active and NOT merged: what training and chat with adapters compute."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = PeftModel.from_pretrained(model, adapters[0], adapter_name="a0")
    for i, adapter in enumerate(adapters[1:], start=1):
        peft_model.load_adapter(adapter, adapter_name=f"a{i}")
    peft_model.base_model.set_adapter([f"a{i}" for i in range(len(adapters))])
    peft_model.eval()
    return logits_of(peft_model, tokenizer)


def export_cfg(base: Path, out: Path, adapters: list[Path] | None = None, **export):
    raw = {"model_name_or_path": str(base), "export_dir": str(out), **export}
    if adapters:
        raw["adapter_name_or_path"] = ",".join(str(a) for a in adapters)
    return parse_config("export", raw)


@pytest.fixture(scope="module")
def adapters(tiny_chatml_model, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_chatml_model, root / "first", 1), make_adapter(tiny_chatml_model, root / "second", 2)]


def test_merged_export_equals_base_plus_adapters(tiny_chatml_model, adapters, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.export.workflow import run_export

    out = tmp_path / "merged"
    result = run_export(export_cfg(tiny_chatml_model, out, adapters))
    tokenizer = AutoTokenizer.from_pretrained(out)
    exported = logits_of(AutoModelForCausalLM.from_pretrained(out), tokenizer)
    expected = reference_logits(tiny_chatml_model, adapters, tokenizer)
    base = logits_of(AutoModelForCausalLM.from_pretrained(tiny_chatml_model), tokenizer)
    assert (expected - base).abs().max() > 1e-2, "the adapters must change the output for this test to mean anything"
    torch.testing.assert_close(exported, expected, atol=1e-5, rtol=1e-5)
    names = {p.name for p in result.files}
    assert {"config.json", "generation_config.json", "tokenizer.json", "README.md", "model.safetensors"} <= names
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_chatml_model).chat_template
    card = (out / "README.md").read_text()
    assert str(adapters[0]) in card and str(adapters[1]) in card and card.index(str(adapters[0])) < card.index(str(adapters[1]))


def test_small_export_size_writes_several_shards_that_reload(tiny_chatml_model, adapters, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.export.workflow import run_export

    out = tmp_path / "sharded"
    cfg = export_cfg(tiny_chatml_model, out, adapters[:1])
    cfg.export.export_size = 0.0002  # GB, about 210 KB: the tiny model (~0.6 MB) needs several shards
    run_export(cfg)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.testing.assert_close(
        logits_of(AutoModelForCausalLM.from_pretrained(out), tokenizer),
        reference_logits(tiny_chatml_model, adapters[:1], tokenizer), atol=1e-5, rtol=1e-5,
    )


def test_legacy_format_writes_bin_shards(tiny_chatml_model, adapters, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.export.workflow import run_export

    out = tmp_path / "legacy"
    cfg = export_cfg(tiny_chatml_model, out, adapters[:1], export_legacy_format=True)
    cfg.export.export_size = 0.0002
    run_export(cfg)
    assert not list(out.glob("*.safetensors"))
    assert len(list(out.glob("pytorch_model-*.bin"))) >= 3
    assert (out / "pytorch_model.bin.index.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.testing.assert_close(
        logits_of(AutoModelForCausalLM.from_pretrained(out), tokenizer),
        reference_logits(tiny_chatml_model, adapters[:1], tokenizer), atol=1e-5, rtol=1e-5,
    )


def test_refuses_to_merge_into_quantized_base_before_loading(tmp_path):
    from tunery.export.workflow import run_export

    with pytest.raises(ConfigError) as err:  # refused by parse_config (rule export_refuses_quantized_base)
        run_export(export_cfg(tmp_path / "does-not-exist", tmp_path / "out", [tmp_path / "adapter"], quantization_bit=4))
    message = str(err.value)
    assert "quantized base" in message and "export_quantization_bit: 4" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({}, "export_dir"),
        ({"export_format": "gguf", "export_quantization_bit": 4}, "export_gguf_type: q8_0"),
    ],
)
def test_contradictory_settings_fail_fast(tmp_path, raw, needle):
    from tunery.export.workflow import run_export

    raw = {"model_name_or_path": str(tmp_path), **raw}
    if raw.get("export_format"):
        raw["export_dir"] = str(tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        run_export(parse_config("export", raw))
    assert needle in str(err.value)


def test_cli_handler_exports_from_yaml(tiny_chatml_model, adapters, tmp_path, capsys):
    from tunery.cli.export import main

    out = tmp_path / "cli"
    cfg_file = tmp_path / "export.yaml"
    cfg_file.write_text(
        f"model_name_or_path: {tiny_chatml_model}\nadapter_name_or_path: {adapters[0]}\n"
        f"template: auto\nfinetuning_type: lora\nexport_dir: {out}\n"
    )
    assert main([str(cfg_file), "--export_legacy_format", "false"]) == 0
    assert (out / "model.safetensors").is_file()
    assert str(out) in capsys.readouterr().out


def test_push_to_hub_uploads_the_export_folder(tiny_chatml_model, tmp_path, monkeypatch):
    """export_hub_model_id runs the real upload code against a recording stand-in for the Hub client."""
    import huggingface_hub

    from tunery.export.workflow import run_export

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, exist_ok=False):
            calls.append(("create", repo_id, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out = tmp_path / "pushed"
    cfg = export_cfg(tiny_chatml_model, out, export_hub_model_id="me/tiny-merged", hf_hub_token="hf_x")
    result = run_export(cfg)
    assert calls[0] == ("token", "hf_x") and calls[1] == ("create", "me/tiny-merged", True)
    assert calls[2][0] == "upload" and {"README.md", "model.safetensors", "config.json"} <= set(calls[2][2])
    assert result.hub_url == "https://hub/me/tiny-merged/commit/1"


def test_llamafactory_merge_examples_parse(reference_dir):
    from tunery.config import load_config

    files = sorted((reference_dir / "lf" / "examples" / "merge_lora").glob("*.yaml"))
    assert files
    for path in files:
        cfg, rest = load_config("export", [str(path)])
        assert not rest and cfg.export.export_dir and cfg.export.export_size == 5, path.name
        if "gptq" in path.name:
            assert cfg.export.export_quantization_bit == 4 and cfg.export.export_quantization_dataset


def test_quantized_base_without_adapters_points_to_export_quantization(tmp_path):
    from tunery.export.workflow import run_export

    with pytest.raises(ConfigError, match="export_quantization_bit: 8"):
        run_export(export_cfg(tmp_path, tmp_path / "out", quantization_bit=8))


def test_adapter_trained_with_added_tokens_merges_into_resized_base(tiny_chatml_model, tmp_path):
    """Training added a token and saved the tokenizer + full embeddings beside the adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.export.workflow import run_export

    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|tool|>"]}, replace_extra_special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_chatml_model)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    torch.manual_seed(5)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                                  modules_to_save=["embed_tokens", "lm_head"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    adapter = tmp_path / "adapter-with-tokens"
    peft_model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)

    out = tmp_path / "merged"
    run_export(export_cfg(tiny_chatml_model, out, [adapter]))
    exported_tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|tool|>" in exported_tokenizer.get_vocab()
    ids = exported_tokenizer("call <|tool|> now", return_tensors="pt")["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|tool|>") in ids[0].tolist()
    base = AutoModelForCausalLM.from_pretrained(tiny_chatml_model)
    base.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    reference = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(out)(ids).logits, reference(ids).logits,
                                   atol=1e-5, rtol=1e-5)
