"""Quantized export: bitsandbytes 4/8-bit checkpoints that reload quantized; method choice; calibration."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from tunery.config import parse_config
from tunery.errors import ConfigError, DataError, DependencyError

pytest.importorskip("bitsandbytes")


def cfg_for(base, out, **export):
    return parse_config("export", {"model_name_or_path": str(base), "export_dir": str(out), **export})


@pytest.mark.parametrize("bits", [4, 8])
def test_bnb_export_reloads_quantized_and_close_to_full_precision(tiny_chatml_model, tmp_path, bits):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.export.workflow import run_export

    out = tmp_path / f"q{bits}"
    result = run_export(cfg_for(tiny_chatml_model, out, export_quantization_bit=bits))
    assert result.quantization_method == "bnb"
    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "bitsandbytes" and quant[f"load_in_{bits}bit"] is True
    assert not any(p.name.startswith(".tunery-merged-") for p in tmp_path.iterdir())  # staging folder removed
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("What is the capital of France?", return_tensors="pt")["input_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(out, device_map={"": "cpu"})
        layer = model.model.layers[0].self_attn.q_proj
        assert type(layer).__name__ == ("Linear4bit" if bits == 4 else "Linear8bitLt")
        with torch.no_grad():
            got = model(ids).logits.float()
            expected = AutoModelForCausalLM.from_pretrained(tiny_chatml_model)(ids).logits
    diff = (got - expected).abs().max().item()
    assert 0 < diff < 0.25 * expected.abs().max().item(), diff
    assert "export_quantization_bit" in (out / "README.md").read_text()


def test_quantization_bit_must_be_4_or_8(tmp_path):
    from tunery.export.quantize import pick_method

    with pytest.raises(ConfigError, match="'export_quantization_bit' got 3") as err:  # its domain, at parse time
        pick_method(cfg_for(tmp_path, tmp_path / "o", export_quantization_bit=3))
    assert "4, 8" in str(err.value)


def test_auto_method_without_gptq_uses_bnb_even_with_calibration_data(tmp_path, monkeypatch):
    from tunery.export import quantize

    monkeypatch.setattr(quantize, "_gptq_installed", lambda: False)
    cfg = cfg_for(tmp_path, tmp_path / "o", export_quantization_bit=4, export_quantization_dataset="c4")
    assert quantize.pick_method(cfg) == "bnb"
    cfg.export.export_quantization_method = "gptq"
    with pytest.raises(DependencyError, match="gptqmodel"):
        quantize.pick_method(cfg)


def test_calibration_texts_from_jsonl_txt_and_errors(tmp_path):
    from tunery.export.quantize import calibration_texts

    jsonl = tmp_path / "c4.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"document {i}"}) for i in range(5)))
    assert calibration_texts(str(jsonl), 3) == ["document 0", "document 1", "document 2"]
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hi", "input": "", "output": "hi"}]))
    assert calibration_texts(str(alpaca), 8) == ["Say hi\nhi"]
    txt = tmp_path / "lines.txt"
    txt.write_text("one\n\ntwo\n")
    assert calibration_texts(str(txt), 8) == ["one", "two"]
    assert calibration_texts("wikitext2", 8) == "wikitext2"
    with pytest.raises(DataError, match="not found"):
        calibration_texts(str(tmp_path / "missing.jsonl"), 8)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DataError, match="row 2"):
        calibration_texts(str(bad), 8)
