"""Unsloth (``use_unsloth``, CUDA only): its FastLanguageModel loads the model and builds the LoRA adapter.

This module is Tunery's one contract with the ``unsloth`` package, with LLaMA-Factory 0.9.5's meaning:

- training: ``FastLanguageModel.from_pretrained`` loads the base with the sequence length from
  ``cutoff_len``, the compute dtype, bitsandbytes 4/8-bit for ``quantization_bit``, the RoPE scaling
  Tunery computed, ``full_finetuning`` for ``finetuning_type: full`` and Unsloth's offloaded gradient
  checkpointing (unless ``disable_gradient_checkpointing``); then ``FastLanguageModel.get_peft_model``
  builds the LoRA adapter from the peft LoraConfig Tunery resolved (targets, rank, alpha, dropout,
  rsLoRA, DoRA, PiSSA/LoftQ init) with the run's seed;
- one adapter in ``adapter_name_or_path`` loads through ``from_pretrained`` of the adapter's folder
  (Unsloth reads the base from its adapter_config.json): trainable for training, switched to
  ``for_inference`` for chat/predict/api/eval. Without an adapter those commands load with
  transformers, as LLaMA-Factory does.

Which settings combine with Unsloth is decided at parse time (``config/validation.py``, rules
``unsloth_*``); only a multimodal checkpoint, known once its config is read, is refused here.
Unsloth's own tokenizer is dropped: Tunery's (added tokens, templates) stays the one in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from tunery.errors import ConfigError, ModelError
from tunery.logging import get_logger
from tunery.model.multimodal import family_of

if TYPE_CHECKING:
    from tunery.config import FinetuningArguments, ModelArguments

logger = get_logger(__name__)

UNSLOTH_GC = "unsloth"  # Unsloth's gradient checkpointing (layer inputs offloaded to CPU memory)
DEFAULT_MAX_SEQ_LENGTH = 4096  # LLaMA-Factory's value when no cutoff_len is known (inference)


def fast_language_model() -> Any:
    """``unsloth.FastLanguageModel`` (the parse-time check already said how to install a missing package)."""
    import unsloth  # optional, CUDA-only and heavy (it patches transformers on import): only use_unsloth pays it

    return unsloth.FastLanguageModel


def checkpointing_mode(model_args: ModelArguments, training_args: Any = None) -> str | bool:
    """``use_gradient_checkpointing`` for Unsloth: "unsloth" while gradient checkpointing is on, else False."""
    on = not model_args.disable_gradient_checkpointing or bool(getattr(training_args, "gradient_checkpointing", False))
    return UNSLOTH_GC if on else False


def from_pretrained_kwargs(
    name: str,
    config: Any,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments | None,
    dtype: torch.dtype,
    *,
    device: str,
    is_trainable: bool,
    training_args: Any = None,
) -> dict[str, Any]:
    """The keyword arguments of ``FastLanguageModel.from_pretrained`` for a model (or adapter) folder ``name``.

    ``config``: the transformers config Tunery prepared (RoPE scaling already applied when
    ``rope_scaling`` is set); ``dtype``: the compute dtype; ``device``: where the weights go.
    """
    bits = model_args.quantization_bit
    rope = None
    if model_args.rope_scaling:
        rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}) or None
    full = bool(is_trainable and finetuning_args is not None and finetuning_args.finetuning_type == "full")
    return {
        "model_name": name,
        "max_seq_length": model_args.model_max_length or DEFAULT_MAX_SEQ_LENGTH,
        "dtype": dtype,
        "load_in_4bit": bits == 4,  # Unsloth's default is True: always say it
        "load_in_8bit": bits == 8,
        "full_finetuning": full,
        "token": model_args.hf_hub_token,
        "revision": model_args.model_revision,
        "device_map": {"": device},
        "rope_scaling": rope,
        "fix_tokenizer": False,
        "trust_remote_code": model_args.trust_remote_code,
        "use_gradient_checkpointing": checkpointing_mode(model_args, training_args) if is_trainable else False,
    }


def load_model(
    path: str,
    config: Any,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments | None,
    dtype: torch.dtype,
    *,
    device: str,
    is_trainable: bool,
    training_args: Any = None,
) -> Any:
    """The model Unsloth loads: the base at ``path`` for a new adapter or full training, else the one adapter
    of ``adapter_name_or_path`` (a trainable peft model; for inference switched to Unsloth's inference mode).

    Raises ConfigError for a vision/audio-language model and ModelError for an architecture Unsloth lacks.
    """
    if family_of(config) is not None:
        raise ConfigError(f"use_unsloth loads text models with FastLanguageModel, and {model_args.model_name_or_path} "
                          f"is a vision/audio-language model ({config.model_type})", hint="drop use_unsloth")
    adapters = model_args.adapters
    name = adapters[0] if adapters else path
    kwargs = from_pretrained_kwargs(name, config, model_args, finetuning_args, dtype, device=device,
                                    is_trainable=is_trainable, training_args=training_args)
    fast = fast_language_model()
    try:
        model, _ = fast.from_pretrained(**kwargs)
    except NotImplementedError as exc:
        raise ModelError(f"use_unsloth: Unsloth cannot load model type {getattr(config, 'model_type', None)!r} ({exc})",
                         hint="drop use_unsloth to train it with transformers") from exc
    logger.info("use_unsloth: %s loaded by Unsloth's FastLanguageModel (%s, max_seq_length %d%s)", name,
                str(dtype).replace("torch.", ""), kwargs["max_seq_length"],
                ", 4-bit" if kwargs["load_in_4bit"] else ", 8-bit" if kwargs["load_in_8bit"] else "")
    if not is_trainable:
        fast.for_inference(model)
    return model


def get_peft_model(model: Any, lora_config: Any, model_args: ModelArguments, training_args: Any = None) -> Any:
    """``FastLanguageModel.get_peft_model`` with the fields of Tunery's peft ``LoraConfig`` and the run's seed."""
    targets = lora_config.target_modules
    kwargs: dict[str, Any] = {
        "r": lora_config.r,
        "lora_alpha": lora_config.lora_alpha,
        "lora_dropout": lora_config.lora_dropout,
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "bias": "none",
        "use_rslora": bool(lora_config.use_rslora),
        "modules_to_save": sorted(lora_config.modules_to_save) if lora_config.modules_to_save else None,
        "init_lora_weights": lora_config.init_lora_weights,
        "loftq_config": _as_dict(lora_config.loftq_config),
        "random_state": int(getattr(training_args, "seed", 42)),
        "max_seq_length": model_args.model_max_length or DEFAULT_MAX_SEQ_LENGTH,
        "use_gradient_checkpointing": checkpointing_mode(model_args, training_args),
    }
    if lora_config.use_dora:
        kwargs["use_dora"] = True  # Unsloth takes DoRA through its extra keyword arguments
    return fast_language_model().get_peft_model(model, **kwargs)


def _as_dict(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    return dict(value) if isinstance(value, dict) else dict(vars(value))
