"""GGUF -> safetensors, once per file: the model layer's import of ``.gguf`` models.

transformers dequantizes a GGUF model on every load (15-20 s for SmolLM2); Tunery converts it once
into a safetensors folder under the cache (``hub.cache_root()/gguf``), keyed by the file's size and
mtime, so later loads take about a second. ``hub.resolve_model`` finds the file; this module loads
it with transformers and writes the folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from tunery.hub import ResolvedModel, cache_root
from tunery.logging import get_logger

logger = get_logger(__name__)


def gguf_cache_dir(resolved: ResolvedModel) -> Path:
    """The folder a GGUF model is converted into (keyed by the file's identity)."""
    file = Path(resolved.path) / (resolved.gguf_file or "")
    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{file.stem}-{key}"


def materialize_gguf(resolved: ResolvedModel) -> ResolvedModel:
    """Convert a GGUF model once into a cached safetensors folder and return that folder.

    The conversion is written to a temporary folder and renamed, so a crash never leaves a
    half-written cache that later loads would trust.
    """
    if not resolved.is_gguf:
        return resolved
    target = gguf_cache_dir(resolved)
    if (target / "config.json").is_file():
        return ResolvedModel(str(target), None, "gguf")
    from transformers import (  # loaded when a conversion runs, as in loader.py
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    logger.info("converting %s to safetensors once (cached in %s)", resolved.gguf_file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, gguf_file=resolved.gguf_file, dtype="float32")
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except FileExistsError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ResolvedModel(str(target), None, "gguf")
