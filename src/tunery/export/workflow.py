"""``tunery export``: base + adapters -> merged checkpoint, quantized checkpoint, or GGUF + Modelfile.

One function per output keeps each path short; ``run_export`` only decides which one runs.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunery.data.template import get_template
from tunery.errors import ConfigError, ResourceError
from tunery.export import merge
from tunery.export.chat_template import align_chat_template
from tunery.export.gguf_writer import write_gguf
from tunery.export.modelfile import write_modelfile
from tunery.export.quantize import quantize_checkpoint
from tunery.logging import get_logger
from tunery.model.loader import resolve
from tunery.model.multimodal import PROCESSOR_FILES, family_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tunery.config import RunConfig

logger = get_logger(__name__)


@dataclass
class ExportResult:
    """What an export wrote (the CLI prints it; tests and the web UI read it)."""

    export_dir: Path
    files: list[Path] = field(default_factory=list)
    gguf_file: Path | None = None
    modelfile: Path | None = None
    quantization_method: str | None = None
    hub_url: str | None = None


def validate(cfg: RunConfig) -> Path:
    """Catch contradictory settings before any model is loaded."""
    e = cfg.export  # export_dir set, no GGUF + export_quantization_bit, no quantized base: parse_config
    out = Path(e.export_dir)
    if out.exists() and not out.is_dir():
        raise ResourceError(f"export_dir {out} is a file", hint="choose a folder path for export_dir")
    family = family_of(Path(resolve(cfg.model).path))
    if e.export_format == "gguf" and family is not None:
        raise ConfigError(f"GGUF export of a multimodal model ({family.model_type}) is not supported: llama.cpp reads "
                          "the vision/audio tower from a separate projector file (mmproj) that Tunery does not write",
                          hint="export a merged checkpoint instead (export_format: safetensors), then convert it with "
                               "llama.cpp's convert_hf_to_gguf.py --mmproj")
    if e.export_format == "gguf" and e.export_hub_model_id:
        logger.info("the GGUF file and Modelfile will be pushed to %s", e.export_hub_model_id)
    merge.shard_size(e)
    return out


def run_export(cfg: RunConfig) -> ExportResult:
    """Merge the adapters into the base and write the export configured in ``cfg.export``."""
    out = validate(cfg)
    model, tokenizer = merge.load_merged(cfg)
    template = _tunery_template(cfg, tokenizer)
    align_chat_template(tokenizer, template)
    if cfg.export.export_format == "gguf":
        result = _export_gguf(cfg, model, tokenizer, template, out)
    else:
        result = _export_checkpoint(cfg, model, tokenizer, out)
        copy_processor_files(Path(resolve(cfg.model).path), out)
    merge.write_model_card(out, cfg, _settings(cfg, result))
    result.files = sorted(p for p in out.iterdir() if p.is_file())
    if cfg.export.export_hub_model_id:
        result.hub_url = merge.push_to_hub(out, cfg.export.export_hub_model_id, cfg.model.hf_hub_token)
    return result


def copy_processor_files(base_dir: Path, out: Path) -> list[Path]:
    """Copy a multimodal base model's processor files (image processor config, processor config, its chat
    template) into the export, so ``AutoProcessor`` loads the merged model; returns the files copied."""
    if family_of(base_dir) is None:
        return []
    copied = []
    for name in PROCESSOR_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out / name)  # the processor's chat template is the one it renders
            copied.append(out / name)
    return copied


def _settings(cfg: RunConfig, result: ExportResult) -> dict:
    e = cfg.export
    out = {"export_format": e.export_format}
    if e.export_format == "gguf":
        out["export_gguf_type"] = e.export_gguf_type
    else:
        out["export_size_gb"] = e.export_size
        if e.export_quantization_bit:
            out["export_quantization_bit"] = e.export_quantization_bit
            out["quantization_method"] = result.quantization_method
    return out


def _export_checkpoint(cfg: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       out: Path) -> ExportResult:
    dtype = merge.export_dtype(cfg, model)
    result = ExportResult(out)
    if cfg.export.export_quantization_bit is None:
        merge.save_checkpoint(model, tokenizer, out, cfg.export, dtype)
        return result
    # The quantizers work inside from_pretrained, so the merged weights go through a folder first.
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tunery-merged-", dir=out.parent))
    try:
        merge.save_checkpoint(model, tokenizer, staging, cfg.export, dtype)
        del model
        result.quantization_method = quantize_checkpoint(staging, out, cfg, tokenizer, merge.shard_size(cfg.export))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _export_gguf(cfg: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template,
                 out: Path) -> ExportResult:
    gguf_type = cfg.export.export_gguf_type
    gguf_path = out / f"{out.name}-{gguf_type}.gguf"
    stop_ids = _stop_ids(template, tokenizer)
    eot = next((i for i in stop_ids if i != tokenizer.eos_token_id), None)
    chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if chat_template is None:
        logger.warning("the tokenizer has no Jinja chat template to embed in the GGUF; the Modelfile still carries one")
    write_gguf(model, tokenizer, gguf_path, gguf_type, chat_template=chat_template, name=out.name, eot_token_id=eot)
    modelfile = write_modelfile(out, gguf_path.name, template, tokenizer, stop_ids)
    return ExportResult(out, gguf_file=gguf_path, modelfile=modelfile)


def _tunery_template(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase):
    """The chat template training used (``template:``), or None when it cannot be built."""
    try:
        return get_template(cfg.data.template, tokenizer, cfg.data)
    except ConfigError as exc:
        # an export must not fail over a LLaMA-Factory template name Tunery lacks: the tokenizer's
        # own chat template is what serving uses anyway
        logger.warning("%s; exporting with the tokenizer's own chat template", exc)
        return None


def _stop_ids(template, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    if template is not None:
        return list(template.stop_token_ids(tokenizer))
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
