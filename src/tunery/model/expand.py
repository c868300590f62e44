"""LLaMA Pro block expansion: copies of decoder blocks interleaved, their output projections zeroed.

``tunery expand`` calls :func:`expand_blocks` (LLaMA-Factory's ``scripts/llama_pro.py``): the model's
``N`` layers are split into ``num_expand`` groups of ``N / num_expand``; after each group a copy of
its last block is inserted, with every ``o_proj`` and ``down_proj`` weight (and bias) set to zero.
A zeroed block adds nothing to the residual stream, so the expanded model computes exactly what
the original did; training then learns in the new blocks only (``use_llama_pro: true`` with
``finetuning_type: freeze`` and ``freeze_trainable_layers: num_expand``, see ``model.adapter``).

The work is on the checkpoint's tensors (safetensors files), not on a model class, so any
architecture whose blocks are ``...layers.<i>...`` with ``o_proj``/``down_proj`` projections works.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunery.errors import ConfigError, ModelError
from tunery.hub import resolve_model
from tunery.logging import get_logger
from tunery.model.gguf_import import materialize_gguf

logger = get_logger(__name__)

_LAYER_KEY = re.compile(r"^(.*?\blayers\.)(\d+)(\..+)$")
ZEROED = ("o_proj", "down_proj")  # the projections that write into the residual stream
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class ExpandResult:
    """What :func:`expand_blocks` wrote: layer counts, the inserted blocks' indices, the files."""

    output_dir: str
    layers_before: int
    layers_after: int
    new_layer_ids: list[int]
    files: list[str] = field(default_factory=list)


def expanded_layer_ids(num_layers: int, num_expand: int) -> list[int]:
    """Indices of the inserted blocks in a model of ``num_layers`` original layers. [num_expand ints]"""
    split = num_layers // num_expand
    return [(k + 1) * (split + 1) - 1 for k in range(num_expand)]


def expand_blocks(model_name_or_path: str, output_dir: str, num_expand: int, *, shard_size: str = "5GB",
                  cache_dir: str | None = None, token: str | None = None) -> ExpandResult:
    """Write the block-expanded copy of ``model_name_or_path`` (folder, .gguf or hub id) to ``output_dir``.

    ``num_expand`` blocks are added (it must divide the layer count); ``shard_size`` is the largest
    safetensors shard (``"5GB"``). Tokenizer and generation files are copied unchanged.
    Raises ConfigError for a bad ``num_expand`` or a non-empty ``output_dir``, ModelError for a
    checkpoint without safetensors weights or without decoder blocks it can expand.
    """
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file

    source = Path(materialize_gguf(resolve_model(model_name_or_path, cache_dir=cache_dir, token=token)).path)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    num_layers = _layer_count(config, model_name_or_path)
    if num_expand < 1 or num_layers % num_expand:
        raise ConfigError(f"num_expand {num_expand} must divide the model's {num_layers} layers",
                          hint=f"use a divisor of {num_layers}, e.g. {_divisors(num_layers)}")
    out = Path(output_dir)
    if out.resolve() == source.resolve():
        raise ConfigError("output_dir is the model's own folder", hint="write the expanded model to a new folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output_dir {out} is not empty", hint="choose a new folder for the expanded model")

    weight_files = sorted(source.glob("*.safetensors"))
    if not weight_files:
        raise ModelError(f"{source} has no .safetensors weights to expand",
                         hint="save the model with safetensors first (transformers' save_pretrained does)")
    state: dict[str, Any] = {}
    for path in weight_files:
        state.update(load_file(str(path)))

    split = num_layers // num_expand
    expanded: dict[str, Any] = {}
    zeroed: dict[int, set[str]] = {}
    found_layers = False
    for key, tensor in state.items():
        match = _LAYER_KEY.match(key)
        if not match:
            expanded[key] = tensor
            continue
        found_layers = True
        prefix, index, rest = match.group(1), int(match.group(2)), match.group(3)
        new_index = index + index // split
        expanded[f"{prefix}{new_index}{rest}"] = tensor
        if (index + 1) % split == 0:  # the last block of a group: its zeroed copy follows it
            is_output = any(name in rest for name in ZEROED)
            copy = tensor.new_zeros(tensor.shape) if is_output else tensor.clone()
            expanded[f"{prefix}{new_index + 1}{rest}"] = copy
            if is_output:
                zeroed.setdefault(new_index + 1, set()).update(n for n in ZEROED if n in rest)
    new_ids = expanded_layer_ids(num_layers, num_expand)
    if not found_layers or any(zeroed.get(i) != set(ZEROED) for i in new_ids):
        raise ModelError(
            f"{model_name_or_path}: cannot expand its blocks (expected '...layers.<i>...' weights with "
            f"{' and '.join(ZEROED)} projections)",
            hint="LLaMA Pro expansion needs a Llama-style decoder (Llama, Qwen, Mistral, ...)")

    out.mkdir(parents=True, exist_ok=True)
    _copy_side_files(source, out)
    new_config = _expanded_config(config, num_layers, num_expand)
    (out / "config.json").write_text(json.dumps(new_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_torch_state_dict(expanded, str(out), max_shard_size=shard_size)
    logger.info("expanded %d layers to %d (new blocks %s) in %s", num_layers, num_layers + num_expand,
                ", ".join(map(str, new_ids)), out)
    return ExpandResult(str(out), num_layers, num_layers + num_expand, new_ids,
                        sorted(p.name for p in out.iterdir() if p.is_file()))


def _layer_count(config: dict[str, Any], name: str) -> int:
    if "text_config" in config or "vision_config" in config:
        raise ModelError(f"{name} is a multimodal model; LLaMA Pro expansion is for text decoders",
                         hint="multimodal models are not supported yet (issue #14)")
    count = config.get("num_hidden_layers")
    if not isinstance(count, int) or count < 1:
        raise ModelError(f"{name}: its config.json has no num_hidden_layers", hint="expand a decoder-only text model")
    return count


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0 and d < n) or "1"


def _expanded_config(config: dict[str, Any], num_layers: int, num_expand: int) -> dict[str, Any]:
    """config.json of the expanded model: the layer count, and per-layer lists grown with their copies."""
    split = num_layers // num_expand
    new = dict(config)
    new["num_hidden_layers"] = num_layers + num_expand
    for key, value in config.items():
        if isinstance(value, list) and len(value) == num_layers and key != "architectures":
            grown: list[Any] = []
            for index, item in enumerate(value):
                grown.append(item)
                if (index + 1) % split == 0:
                    grown.append(item)
            new[key] = grown  # e.g. layer_types: a copy keeps its source block's attention type
    return new


def _copy_side_files(source: Path, out: Path) -> None:
    """Tokenizer, chat template, generation config...: every file but the weights and config.json."""
    for path in source.iterdir():
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name == "config.json" or path.name in WEIGHT_INDEXES or path.suffix in WEIGHT_SUFFIXES:
            continue
        shutil.copy2(path, out / path.name)

