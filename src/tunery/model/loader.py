"""Load a tokenizer and a causal LM the way every workflow needs them.

One place decides the dtype (fp32 on a CPU), the attention kernel, quantization and the adapters,
so chat, predict, eval, export and train see the same model for the same settings.
Training-only setup (new adapters, freezing, gradient checkpointing) lives in ``model.adapter``.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import torch

from tunery.config.validation import fsdp_requested
from tunery.errors import ModelError, require
from tunery.hub import ResolvedModel, resolve_model
from tunery.logging import get_logger
from tunery.model import unsloth
from tunery.model.adapter import count_parameters, prepare_for_training
from tunery.model.attention import enable_shift_attention
from tunery.model.gguf_import import materialize_gguf
from tunery.model.multimodal import family_of, model_class

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tunery.config import FinetuningArguments, ModelArguments

__all__ = ["count_parameters", "load_adapters", "load_model", "load_tokenizer", "pick_dtype", "quantization_config",
           "resolve"]  # count_parameters lives in model.adapter (its parameter report uses it)

logger = get_logger(__name__)

ATTENTION_IMPL = {"disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2", "fa3": "flash_attention_3"}


def resolve(model_args: ModelArguments, *, tokenizer_only: bool = False) -> ResolvedModel:
    """Resolve ``model_name_or_path`` to a loadable folder (GGUF converted once and cached).

    ``tokenizer_only``: a folder with only tokenizer files is enough (no config.json, no weights).
    """
    resolved = resolve_model(
        model_args.model_name_or_path,
        gguf_file=model_args.gguf_file,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.hf_hub_token,
        ms_token=model_args.ms_hub_token,
        tokenizer_only=tokenizer_only,
    )
    return materialize_gguf(resolved)


def _common_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    return {
        "trust_remote_code": model_args.trust_remote_code,
        "cache_dir": model_args.cache_dir,
        "token": model_args.hf_hub_token,
    }


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """The model's tokenizer, left-padding-ready, with a pad token and any added tokens.

    A folder holding only the tokenizer files loads too (``tunery data`` needs nothing more).
    """
    from transformers import AutoTokenizer

    path = resolve(model_args, tokenizer_only=True).path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, use_fast=model_args.use_fast_tokenizer, split_special_tokens=model_args.split_special_tokens,
            **_common_kwargs(model_args),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {model_args.model_name_or_path}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    added = 0
    if model_args.add_tokens:
        added += tokenizer.add_tokens([t.strip() for t in model_args.add_tokens.split(",") if t.strip()])
    if model_args.add_special_tokens:
        specials = [t.strip() for t in model_args.add_special_tokens.split(",") if t.strip()]
        added += tokenizer.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
    if added:
        logger.info("added %d tokens to the tokenizer", added)  # parse_config turned resize_vocab on for them
    return tokenizer


def pick_dtype(model_args: ModelArguments, training_args: Any = None, *, pure_bf16: bool = False) -> torch.dtype:
    """fp32 on a CPU (bf16/fp16 are many times slower there); otherwise what was asked or bf16.

    ``pure_bf16`` (training a model for pure bf16, CUDA only: config rule pure_bf16_needs_cuda): bf16."""
    if not torch.cuda.is_available():
        return torch.float32
    if pure_bf16:
        return torch.bfloat16
    if training_args is not None:
        if getattr(training_args, "bf16", False):
            return torch.bfloat16
        if getattr(training_args, "fp16", False):
            return torch.float16
        return torch.float32
    requested = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if model_args.infer_dtype in requested:
        return requested[model_args.infer_dtype]
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def quantization_config(model_args: ModelArguments, dtype: torch.dtype | None = None) -> Any:
    """A transformers quantization config for ``quantization_bit``, or None.

    ``dtype``: the dtype the model loads in (default :func:`pick_dtype` without training settings).
    bitsandbytes 4-bit computes in it and packs the 4-bit weights into it (``bnb_4bit_quant_storage``):
    FSDP shards only floating-point tensors of one dtype, so QLoRA + FSDP needs storage == load dtype
    (transformers then sets FSDP's mixed precision to it)."""
    bits = model_args.quantization_bit
    if bits is None:
        return None
    method = model_args.quantization_method
    if method == "bnb":
        require("bitsandbytes", "QLoRA with quantization_method: bnb", "quantization")
        from transformers import BitsAndBytesConfig

        if bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        if bits == 4:
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=model_args.quantization_type,
                bnb_4bit_use_double_quant=model_args.double_quantization,
                bnb_4bit_compute_dtype=dtype or pick_dtype(model_args),
                bnb_4bit_quant_storage=dtype or pick_dtype(model_args),
            )
        raise ModelError(f"quantization_bit {bits} is not supported by bitsandbytes", hint="use 4 or 8")
    if method == "hqq":
        require("hqq", "quantization_method: hqq", package="hqq")
        from transformers import HqqConfig

        return HqqConfig(nbits=bits)
    if method == "eetq":
        require("eetq", "quantization_method: eetq", package="eetq")
        from transformers import EetqConfig

        return EetqConfig()
    raise ModelError(
        f"quantization_method '{method}' quantizes offline",
        hint="load a pre-quantized GPTQ/AWQ model instead (its folder's config says how it is quantized)",
    )


def load_model(
    tokenizer: PreTrainedTokenizerBase,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments | None = None,
    *,
    is_trainable: bool = False,
    training_args: Any = None,
) -> PreTrainedModel:
    """The causal LM (or, for a registered multimodal family, its image/audio-text model) with adapters applied.

    Trainable setup is delegated to ``model.adapter``. A multimodal checkpoint (``model.multimodal``'s
    registry, by ``config.json``'s ``model_type``) loads with its family's class, so its vision or
    audio tower and projector load too; its processor comes from ``model.multimodal.load_processor``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve(model_args).path
    kwargs = _common_kwargs(model_args)
    config = AutoConfig.from_pretrained(path, **kwargs)
    if model_args.rope_scaling:
        apply_rope_scaling(config, model_args.rope_scaling, model_args.model_max_length, is_trainable=is_trainable)
    dtype = pick_dtype(model_args, training_args, pure_bf16=is_trainable and finetuning_args.pure_bf16)
    if model_args.use_unsloth and (is_trainable or model_args.adapters):
        # LLaMA-Factory's use_unsloth: Unsloth loads the model to train, or the one adapter to run (model.unsloth)
        model = unsloth.load_model(path, config, model_args, finetuning_args, dtype, device=default_device(),
                                   is_trainable=is_trainable, training_args=training_args)
        return _finish(model, tokenizer, model_args, finetuning_args, is_trainable=is_trainable,
                       training_args=training_args)
    load_kwargs: dict[str, Any] = {"config": config, "dtype": dtype, **kwargs}
    if model_args.flash_attn != "auto":
        load_kwargs["attn_implementation"] = ATTENTION_IMPL[model_args.flash_attn]
    quant = quantization_config(model_args, dtype)
    if quant is not None:
        load_kwargs["quantization_config"] = quant
        if not fsdp_requested(getattr(training_args, "fsdp", None)):
            # under FSDP the weights stay off the GPU until FSDP shards them (rank 0 loads, the others get
            # them broadcast: fsdp_cpu_ram_efficient_loading)
            load_kwargs["device_map"] = {"": default_device()}
    family = family_of(config)
    auto_class = model_class(family) if family is not None else AutoModelForCausalLM
    if family is not None and getattr(config, "thinker_config", None) is not None:
        load_kwargs["config"] = config.thinker_config  # an omni checkpoint: the thinker (text out) is trained
    if family is not None:
        logger.info("%s is a multimodal model (%s); loading %s", model_args.model_name_or_path,
                    "/".join(family.media), auto_class.__name__)
    try:
        if model_args.train_from_scratch:
            model = auto_class.from_config(config, dtype=dtype, trust_remote_code=model_args.trust_remote_code)
        else:
            model = auto_class.from_pretrained(path, **load_kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load model {model_args.model_name_or_path}: {exc}") from exc
    return _finish(model, tokenizer, model_args, finetuning_args, is_trainable=is_trainable, training_args=training_args)


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_args: ModelArguments,
            finetuning_args: FinetuningArguments | None, *, is_trainable: bool, training_args: Any) -> PreTrainedModel:
    """Vocabulary, padding and the trainable setup (or the adapters and eval mode) of a loaded model."""
    if model_args.resize_vocab and model.get_input_embeddings().weight.shape[0] != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if is_trainable:
        if model_args.shift_attn:
            enable_shift_attention(model)
            logger.info("shift_attn: LongLoRA shift short attention while training (groups of a quarter of the sequence)")
        model = prepare_for_training(model, model_args, finetuning_args, training_args)
    else:
        if not model_args.use_unsloth:  # Unsloth loaded the adapter itself
            model = load_adapters(model, model_args)
        model.generation_config.use_cache = model_args.use_cache  # KV cache while generating (LF: use_kv_cache)
        model.eval()
        model.requires_grad_(False)
    return model


def model_class_for(config: Any) -> Any:
    """The transformers class of a registered vision/audio-language family (``model.multimodal``), None for
    a causal LM (for code that builds a model from a config, e.g. the weightless estimate)."""
    family = family_of(config)
    return model_class(family) if family is not None else None


def load_adapters(model: PreTrainedModel, model_args: ModelArguments, *, merge: bool = True) -> PreTrainedModel:
    """Apply ``adapter_name_or_path`` in order for inference (merged unless the base is quantized)."""
    adapters = model_args.adapters
    if not adapters:
        return model
    from peft import PeftModel

    quantized = model_args.quantization_bit is not None
    for i, adapter in enumerate(adapters):
        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load adapter {adapter}: {exc}", hint="point adapter_name_or_path at a folder with adapter_config.json") from exc
        if merge and not quantized and i < len(adapters):
            model = model.merge_and_unload()
    logger.info("loaded adapter(s): %s", ", ".join(adapters))
    return model


def rope_scaling_factor(max_positions: int | None, target_length: int | None) -> float:
    """The RoPE scaling factor LLaMA-Factory uses: ``ceil(target / max_positions)`` when the target is longer.

    ``target_length`` is ``cutoff_len`` (None outside training: 2.0); a target that fits gives 1.0.
    """
    if target_length is None:
        return 2.0
    if max_positions and target_length > max_positions:
        return float(math.ceil(target_length / max_positions))
    return 1.0


def apply_rope_scaling(config: Any, kind: str, target_length: int | None, *, is_trainable: bool = False) -> float:
    """Set ``kind`` RoPE scaling (linear, dynamic, yarn, llama3) on a transformers config; returns the factor.

    When ``target_length`` exceeds ``max_position_embeddings``, that grows to ``target_length`` and the
    factor is the ratio rounded up. yarn and llama3 also record the original length (llama3 with
    Llama 3.1's frequency bounds 1 and 4). A model without RoPE raises ModelError.
    """
    current = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if not current and getattr(config, "rope_theta", None) is None:
        raise ModelError(f"rope_scaling: {kind} needs a model with rotary position embeddings; "
                         f"{type(config).__name__} has none", hint="drop rope_scaling")
    original = getattr(config, "max_position_embeddings", None)
    factor = rope_scaling_factor(original, target_length)
    if factor > 1.0 and target_length is not None:
        logger.info("context grows from %d to %d positions", original, target_length)
        config.max_position_embeddings = target_length
    elif target_length is not None:
        logger.warning("rope_scaling: cutoff_len %d fits the model's %s positions; the scaling factor is 1",
                       target_length, original)
    if is_trainable and kind == "dynamic":
        logger.warning("dynamic NTK scaling changes with the input length; it may not suit fine-tuning")
    scaled = {key: current[key] for key in ("rope_theta", "partial_rotary_factor") if key in current}
    scaled.update(rope_type=kind, factor=factor)
    if kind in ("yarn", "llama3"):
        scaled["original_max_position_embeddings"] = original  # the length the factor is relative to
    if kind == "llama3":
        scaled["low_freq_factor"] = current.get("low_freq_factor", 1.0)
        scaled["high_freq_factor"] = current.get("high_freq_factor", 4.0)
    if hasattr(config, "rope_parameters"):  # transformers 5: rope_scaling is a deprecated alias
        config.rope_parameters = scaled
    else:
        config.rope_scaling = scaled
    logger.info("rope scaling %s with factor %.1f", kind, factor)
    return factor


def default_device() -> str:
    """Where a quantized model loads: this process's GPU (``cuda:LOCAL_RANK``: each process of a DDP run
    has its own), or the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
