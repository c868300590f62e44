"""Quantize a merged checkpoint to 4 or 8 bit on export (``export_quantization_bit``).

Two maintained libraries do the work through transformers' ``quantization_config``:
- bitsandbytes (installed with Tunery's ``quantization`` extra, runs on CPU too): NF4 / int8
  weights serialized into the checkpoint; needs no calibration data.
- GPTQ (``optimum`` + ``gptqmodel``, when they install): calibrated on
  ``export_quantization_dataset`` (``_nsamples`` texts of up to ``_maxlen`` tokens), as
  LLaMA-Factory does.
``export_quantization_method`` (auto | bnb | gptq) picks one; auto uses GPTQ when a calibration
dataset is given and GPTQ is installed, bitsandbytes otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tunery.errors import ConfigError, DataError, DependencyError, require
from tunery.logging import get_logger

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunery.config import RunConfig

logger = get_logger(__name__)

GPTQ_CORPORA = ("wikitext2", "c4", "c4-new")  # names transformers' GPTQ path downloads itself


def _gptq_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("optimum", "gptqmodel"))


def pick_method(cfg: RunConfig) -> str:
    """bnb or gptq, from ``export_quantization_method`` (auto when unset)."""
    method = str(getattr(cfg.export, "export_quantization_method", None) or "auto").lower()
    if method in ("bitsandbytes", "bnb"):
        return "bnb"
    if method == "gptq":
        if not _gptq_installed():
            raise DependencyError("gptqmodel optimum", "GPTQ quantization (export_quantization_method: gptq)", "gptq")
        return "gptq"
    if method != "auto":
        raise ConfigError(f"unknown export_quantization_method '{method}'", hint="use auto, bnb or gptq")
    if cfg.export.export_quantization_dataset and _gptq_installed():
        return "gptq"
    if cfg.export.export_quantization_dataset:
        logger.info(
            "export_quantization_dataset is set but GPTQ (optimum + gptqmodel) is not installed: quantizing with "
            "bitsandbytes, which needs no calibration data"
        )
    return "bnb"


def calibration_texts(path: str, nsamples: int) -> list[str] | str:
    """Up to ``nsamples`` texts from a .txt/.json/.jsonl file (or a GPTQ corpus name)."""
    if path in GPTQ_CORPORA:
        return path
    file = Path(path)
    if not file.is_file():
        raise DataError("calibration dataset not found", file=path,
                        hint="point export_quantization_dataset at a .txt, .json or .jsonl file with text")
    raw = file.read_text(encoding="utf-8")
    if file.suffix == ".txt":
        texts = [line for line in raw.splitlines() if line.strip()]
    else:
        texts = [_row_text(r) for r in _json_rows(raw, path, lines=file.suffix != ".json")]
    texts = [t for t in texts if t.strip()][:nsamples]
    if not texts:
        raise DataError("no text found for calibration", file=path, hint="use rows with a 'text' field, or plain lines")
    return texts


def _json_rows(raw: str, path: str, *, lines: bool) -> list:
    if not lines:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg} (line {exc.lineno})", file=path) from exc
    rows = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON: {exc.msg}", file=path, row=number) from exc
    return rows


def _row_text(row) -> str:
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        if isinstance(row.get("text"), str):
            return row["text"]
        return "\n".join(v for v in row.values() if isinstance(v, str) and v.strip())
    return ""


def quantization_config(cfg: RunConfig, method: str, tokenizer: PreTrainedTokenizerBase):
    """The transformers config that quantizes while ``from_pretrained`` loads the merged weights."""
    bits = cfg.export.export_quantization_bit
    if method == "bnb":
        require("bitsandbytes", "export_quantization_bit with bitsandbytes", "quantization")
        from transformers import BitsAndBytesConfig

        if bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=cfg.model.quantization_type,
            bnb_4bit_use_double_quant=cfg.model.double_quantization, bnb_4bit_compute_dtype=torch.float32,
        )
    from transformers import GPTQConfig

    texts = calibration_texts(cfg.export.export_quantization_dataset, cfg.export.export_quantization_nsamples)
    return GPTQConfig(bits=bits, dataset=texts, tokenizer=tokenizer, model_seqlen=cfg.export.export_quantization_maxlen)


def quantize_checkpoint(src_dir: Path, out_dir: Path, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase,
                        max_shard_size: int) -> str:
    """Load the merged checkpoint in ``src_dir`` quantized, save it to ``out_dir``; returns the method."""
    from transformers import AutoModelForCausalLM

    method = pick_method(cfg)
    qconfig = quantization_config(cfg, method, tokenizer)
    device = "cuda:0" if cfg.export.export_device == "auto" and torch.cuda.is_available() else "cpu"
    logger.info("quantizing to %d bit with %s on %s", cfg.export.export_quantization_bit, method, device)
    model = AutoModelForCausalLM.from_pretrained(
        src_dir, quantization_config=qconfig, device_map={"": device}, dtype=torch.float32 if device == "cpu" else "auto",
    )
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    return method
