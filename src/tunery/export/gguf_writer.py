"""Write a merged llama-architecture model as one GGUF file for llama.cpp and Ollama.

The ``gguf`` package gives the writer, the tensor-name table and the quantizers; what is done
here is the part llama.cpp's converter does in its own scripts (which are not installable): pick
the metadata keys, permute the Q/K rows into llama.cpp's rotary layout, choose a type per tensor
and embed the tokenizer and chat template. ``transformers``' GGUF loader reverses exactly these
steps, which the round-trip tests rely on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tunery.errors import ModelError
from tunery.export.gguf_vocab import build_vocab
from tunery.logging import get_logger

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = get_logger(__name__)

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
# transformers model_type -> llama.cpp architecture. Mistral is written as llama, as llama.cpp's
# converter does (same tensors and math; transformers reads it back as a LlamaForCausalLM).
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K rows from Hugging Face's rotate-half layout to llama.cpp's interleaved pairs.

    Within each head, HF keeps the rotary pairs as (i, i + d/2); llama.cpp's llama arch expects
    them adjacent. transformers' GGUF loader applies the inverse (``_reverse_permute_weights``).
    """
    rows = weight.shape[0]
    head_dim = rows // n_head
    return weight.reshape(n_head, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def _check_rope(config) -> dict | None:
    """Unscaled, linear and Llama-3.1-style RoPE have a GGUF form llama.cpp reads; others are refused."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "default":
        return None
    if rope_type in ("linear", "llama3"):
        return {**params, "rope_type": rope_type}
    raise ModelError(
        f"GGUF export does not support rope scaling '{rope_type}' yet",
        hint="export to safetensors (export_format: safetensors) and convert with llama.cpp's convert_hf_to_gguf.py",
    )


def llama3_rope_factors(config) -> np.ndarray:
    """Per-frequency divisors llama.cpp applies from the ``rope_freqs`` tensor (Llama 3.1 scaling).

    transformers computes the scaled inverse frequencies; llama.cpp divides the unscaled ones by
    these factors, so factor = unscaled / scaled, taken from transformers' own RoPE code.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, device="cpu")
    dim = scaled.shape[0] * 2
    unscaled = 1.0 / (_rope_theta(config) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return (unscaled / scaled.float()).numpy().astype(np.float32)


def _tensor_for_type(data: np.ndarray, gguf_type: str):
    """(array, raw_dtype) for ``add_tensor``: norms and biases stay f32, as llama.cpp keeps them."""
    from gguf import GGMLQuantizationType, quants

    if data.ndim < 2 or gguf_type == "f32":
        return data.astype(np.float32), None
    if gguf_type == "f16":
        return data.astype(np.float16), None
    if gguf_type == "bf16":
        return quants.quantize(data.astype(np.float32), GGMLQuantizationType.BF16), GGMLQuantizationType.BF16
    if data.shape[-1] % 32 == 0:  # q8_0 packs rows in blocks of 32
        return quants.quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None  # rows not divisible by 32: fall back like llama.cpp does


def _file_type(gguf_type: str) -> int:
    from gguf import LlamaFileType

    return int({
        "f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
        "bf16": LlamaFileType.MOSTLY_BF16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
    }[gguf_type])


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    gguf_type: str = "f16",
    *,
    chat_template: str | None = None,
    name: str = "model",
    eot_token_id: int | None = None,
) -> Path:
    """Write ``model`` (no adapters left on it) with its tokenizer and chat template to ``path``."""
    import gguf

    config = model.config
    model_type = config.model_type
    if model_type not in ARCHITECTURES:
        raise ModelError(
            f"GGUF export supports llama-architecture models ({', '.join(sorted(ARCHITECTURES))}); "
            f"this model is '{model_type}'",
            hint="export to safetensors (export_format: safetensors) and convert with llama.cpp's convert_hf_to_gguf.py",
        )
    if gguf_type not in GGUF_TYPES:
        raise ModelError(f"export_gguf_type '{gguf_type}' is not supported", hint=f"use one of {', '.join(GGUF_TYPES)}")
    rope_scaling = _check_rope(config)
    arch_name = ARCHITECTURES[model_type]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    n_layers, n_head = config.num_hidden_layers, config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    n_vocab = model.get_input_embeddings().weight.shape[0]
    window = getattr(config, "sliding_window", None)
    if model_type == "mistral" and window and window < config.max_position_embeddings:
        logger.warning("llama.cpp attends over the whole context: the model's sliding window of %d tokens is not "
                       "kept in the GGUF (outputs differ only on prompts longer than the window)", window)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # tensors spool to a temporary file as they are converted, so peak memory stays near one copy
    # of the model (the merged weights) instead of two
    partial = path.with_name(path.name + ".partial")  # renamed when complete: no half-written .gguf
    writer = gguf.GGUFWriter(partial, arch_name, use_temp_file=True)
    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(n_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(n_head))
    writer.add_head_count_kv(int(n_kv))
    writer.add_rope_dimension_count(int(head_dim))
    if head_dim * n_head != config.hidden_size:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    writer.add_rope_freq_base(_rope_theta(config))
    if rope_scaling is not None and rope_scaling["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope_scaling["factor"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(n_vocab))
    writer.add_file_type(_file_type(gguf_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    build_vocab(tokenizer, n_vocab, eot_token_id).add_to(writer)
    if chat_template:
        writer.add_chat_template(chat_template)

    try:
        if rope_scaling is not None and rope_scaling["rope_type"] == "llama3":
            # llama.cpp reads Llama 3.1 scaling from this tensor (transformers' GGUF loader ignores it)
            writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(config))
        _add_tensors(writer, model, gguf.get_tensor_name_map(arch, n_layers), gguf_type,
                     permute=arch_name == "llama", n_head=n_head, n_kv=n_kv)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    logger.info("wrote %s (%s, %.1f MB)", path, gguf_type, path.stat().st_size / 1e6)
    return path


def _add_tensors(writer, model: PreTrainedModel, name_map, gguf_type: str, *, permute: bool, n_head: int,
                 n_kv: int) -> None:
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ModelError(f"no GGUF name for tensor {hf_name}", hint="this model variant is not supported by GGUF export")
        data = tensor.detach().to("cpu", torch.float32).numpy()
        if permute and gguf_name.endswith("attn_q.weight"):
            data = permute_qk(data, n_head)
        elif permute and gguf_name.endswith("attn_k.weight"):
            data = permute_qk(data, n_kv)
        array, raw_dtype = _tensor_for_type(data, gguf_type)
        writer.add_tensor(gguf_name, array, raw_dtype=raw_dtype)
