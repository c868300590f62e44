"""Export settings: merge, shard, quantize, GGUF (LLaMA-Factory's names plus GGUF)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PATH = "a path, checked when it is opened"


@dataclass
class ExportArguments:
    export_dir: str | None = field(default=None, metadata={"help": "Where the exported model is written.", "domain": PATH})
    export_size: float = field(default=5, metadata={"help": "Max GB per shard (fractions allowed, e.g. 0.5).", "gt": 0})
    export_device: Literal["cpu", "auto"] = field(default="cpu", metadata={"help": "Device used for merging."})
    export_quantization_bit: int | None = field(default=None, metadata={"help": "Quantize the export to 4 or 8 bit.", "choices": (4, 8)})
    export_quantization_method: Literal["auto", "bnb", "gptq"] = field(
        default="auto",
        metadata={"help": "Library for export_quantization_bit: auto (GPTQ with a calibration dataset when installed, else bitsandbytes), bnb, gptq."},
    )
    export_quantization_dataset: str | None = field(default=None, metadata={"help": "Calibration data file.", "domain": "a text/jsonl file or c4"})
    export_quantization_nsamples: int = field(default=128, metadata={"help": "Calibration samples.", "min": 1})
    export_quantization_maxlen: int = field(default=1024, metadata={"help": "Calibration sample length.", "min": 1})
    export_legacy_format: bool = field(default=False, metadata={"help": "Save .bin instead of safetensors."})
    export_hub_model_id: str | None = field(default=None, metadata={"help": "Push the export to this hub repo.", "domain": "a hub repo id"})
    export_format: Literal["safetensors", "gguf"] = field(default="safetensors", metadata={"help": "Output format."})
    export_gguf_type: Literal["f32", "f16", "bf16", "q8_0"] = field(
        default="f16", metadata={"help": "GGUF tensor type."}
    )
