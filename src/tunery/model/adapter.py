"""Make a loaded model trainable: full, freeze or the LoRA family, plus gradient checkpointing.

The loader gives every workflow the same model; this module decides which weights learn. LoRA
comes from peft (targets, rsLoRA, DoRA, PiSSA, QLoRA preparation); only what peft has no notion
of is written here: LLaMA-Factory's freeze method (train the last/first N decoder layers) and the
rules for stacking adapters given by ``adapter_name_or_path``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from tunery.config import FinetuningArguments
from tunery.config.finetuning_args import split_list
from tunery.errors import ConfigError, ModelError
from tunery.logging import get_logger

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tunery.config import FinetuningArguments, ModelArguments

logger = get_logger(__name__)

_LAYER_INDEX = re.compile(r"\.(\d+)\.")
NORM_MARKERS = ("norm", "ln_")


def prepare_for_training(
    model: PreTrainedModel,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments | None,
    training_args: Any = None,
) -> Any:
    """Return the model ready for the Trainer, with only the chosen weights requiring grad."""
    finetuning_args = finetuning_args or FinetuningArguments()
    kind = finetuning_args.finetuning_type
    seed = getattr(training_args, "seed", None)
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)  # new adapter weights are random: the same seed must give the same run
    quantized = is_quantized(model)
    if quantized and kind != "lora":
        raise ConfigError(
            f"a {model_args.quantization_bit}-bit quantized base can only be trained with LoRA (QLoRA), "
            f"not finetuning_type: {kind}",
            hint="set finetuning_type: lora, or drop quantization_bit",
        )
    use_checkpointing = not model_args.disable_gradient_checkpointing or bool(
        getattr(training_args, "gradient_checkpointing", False)
    )
    if quantized:
        from peft import prepare_model_for_kbit_training

        # peft casts the non-quantized weights to fp32 and makes inputs require grad, which
        # gradient checkpointing needs when every base weight is frozen.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=use_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": model_args.use_reentrant_gc},
        )
    elif use_checkpointing:
        enable_gradient_checkpointing(model, reentrant=model_args.use_reentrant_gc)
    if model_args.upcast_layernorm:
        upcast_layernorms(model)

    if kind == "full":
        model.requires_grad_(True)
        logger.info("finetuning_type full: every weight is trained")
    elif kind == "freeze":
        apply_freeze(model, finetuning_args)
    elif kind == "lora":
        model = apply_lora(model, model_args, finetuning_args, quantized=quantized)
    else:  # the config layer already restricts the values; keep a clear error for direct callers
        raise ConfigError(f"unknown finetuning_type '{kind}'", hint="choose lora, freeze or full")

    if kind != "lora":
        _cast_trainable_to_fp32(model)
    log_parameter_counts(model, print_each=model_args.print_param_status)
    return model


def unwrap_peft(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (LoRA layers stay injected in it), else ``model``."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        try:
            return get_base()
        except AttributeError:
            return model
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None))


def enable_gradient_checkpointing(model: PreTrainedModel, *, reentrant: bool = True) -> None:
    """Trade compute for memory: recompute activations in backward instead of keeping them."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        logger.warning("%s does not support gradient checkpointing; training without it", type(model).__name__)
        return
    kwargs = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # Reentrant checkpointing only builds a graph when its inputs require grad; with frozen
    # embeddings (LoRA, freeze) they do not, so make the embedding output require grad.
    model.enable_input_require_grads()
    model.config.use_cache = False
    logger.info("gradient checkpointing on (set disable_gradient_checkpointing: true to trade memory for speed)")


def checkpointable_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers gradient checkpointing can switch one by one, in model order."""
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def limit_checkpointed_layers(model: torch.nn.Module, count: int) -> int:
    """Keep gradient checkpointing on the first ``count`` decoder layers only; the others keep their
    activations (faster backward, more memory). Returns how many layers stay checkpointed. Call it
    after :func:`enable_gradient_checkpointing`; a model without per-layer switches is left as it is."""
    layers = checkpointable_layers(model)
    if not layers or not any(layer.gradient_checkpointing for layer in layers):
        return sum(1 for layer in layers if layer.gradient_checkpointing)
    count = max(0, min(int(count), len(layers)))
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < count
    return count


def upcast_layernorms(model: torch.nn.Module) -> None:
    """Keep normalization weights in fp32, which keeps half-precision training stable."""
    for name, param in model.named_parameters():
        if param.ndim == 1 and any(m in name for m in NORM_MARKERS) and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)


def _cast_trainable_to_fp32(model: torch.nn.Module) -> None:
    """Optimizer states of half-precision weights lose updates; train the learned weights in fp32."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)


# ---------------------------------------------------------------- freeze


def decoder_layer_count(model: PreTrainedModel) -> int:
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
    if not count:
        raise ModelError(f"cannot tell how many layers {type(model).__name__} has (no num_hidden_layers in its config)")
    return int(count)


def _layer_module_names(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    """Module names found inside decoder layers, and top-level names outside them."""
    inside, outside = set(), set()
    for name, _ in model.named_parameters():
        match = _LAYER_INDEX.search(name)
        if match:
            inside.update(name[match.end():].split(".")[:-1])
        else:
            outside.update(name.split(".")[:-1])
    return inside, outside


def apply_freeze(model: PreTrainedModel, finetuning_args: FinetuningArguments) -> None:
    """Train the last N decoder layers (first N when negative), optionally only some modules in them.

    peft has no such method; LLaMA-Factory's ``freeze`` semantics are reproduced here.
    """
    n_layers = decoder_layer_count(model)
    n = finetuning_args.freeze_trainable_layers
    if n == 0 or abs(n) > n_layers:
        raise ConfigError(
            f"freeze_trainable_layers {n} does not fit a model with {n_layers} layers",
            hint=f"use 1..{n_layers} for the last layers, or -1..-{n_layers} for the first ones",
        )
    layer_ids = set(range(n_layers - n, n_layers)) if n > 0 else set(range(-n))
    modules = split_list(finetuning_args.freeze_trainable_modules)
    extras = split_list(finetuning_args.freeze_extra_modules)
    inside, outside = _layer_module_names(model)
    unknown = [m for m in modules if m != "all" and m not in inside]
    if unknown:
        raise ConfigError(
            f"freeze_trainable_modules names {unknown} not found inside the decoder layers",
            hint=f"choose from: all, {', '.join(sorted(inside))}",
        )
    unknown_extra = [m for m in extras if m not in outside]
    if unknown_extra:
        raise ConfigError(
            f"freeze_extra_modules names {unknown_extra} not found outside the decoder layers",
            hint=f"choose from: {', '.join(sorted(outside))}",
        )
    for name, param in model.named_parameters():
        match = _LAYER_INDEX.search(name)
        if match:
            parts = name[match.end():].split(".")[:-1]
            train = int(match.group(1)) in layer_ids and ("all" in modules or any(p in modules for p in parts))
        else:
            train = any(p in extras for p in name.split(".")[:-1])
        param.requires_grad_(train)
    which = "last" if n > 0 else "first"
    logger.info(
        "finetuning_type freeze: training the %s %d of %d layers (modules: %s%s)",
        which, abs(n), n_layers, ", ".join(modules), f"; extra: {', '.join(extras)}" if extras else "",
    )


# ---------------------------------------------------------------- lora


def lora_init_weights(finetuning_args: FinetuningArguments) -> bool | str:
    """peft's ``init_lora_weights`` value: default init, or PiSSA (fast SVD unless pissa_iter == -1)."""
    if not finetuning_args.pissa_init:
        return True
    return "pissa" if finetuning_args.pissa_iter == -1 else f"pissa_niter_{finetuning_args.pissa_iter}"


def build_lora_config(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments) -> Any:
    """The peft LoraConfig for these settings. ``lora_target: all`` is peft's 'all-linear' (no head)."""
    from peft import LoraConfig, TaskType

    targets = finetuning_args.lora_targets
    target_modules: str | list[str] = "all-linear" if targets in ([], ["all"]) else targets
    if isinstance(target_modules, list):
        check_lora_targets(model, target_modules)
    modules_to_save = split_list(finetuning_args.additional_target)
    if model_args.resize_vocab:
        # New token rows must learn; LoRA alone cannot give them embeddings.
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            name = _module_name(model, module)
            if name and name not in modules_to_save:
                modules_to_save.append(name)
        logger.info("resize_vocab: training %s fully beside the adapter", ", ".join(modules_to_save))
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=finetuning_args.lora_rank,
        lora_alpha=finetuning_args.lora_alpha,
        lora_dropout=finetuning_args.lora_dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save or None,
        use_rslora=finetuning_args.use_rslora,
        use_dora=finetuning_args.use_dora,
        init_lora_weights=lora_init_weights(finetuning_args),
    )


LORA_LAYER_TYPES = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def check_lora_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Each ``lora_target`` must name layers LoRA can wrap (by name or dotted suffix, as peft matches).

    Raises ConfigError naming the target and the layer names the model has: peft would fail with
    an internal error for a name it does not find, or for a block (a decoder layer, a norm).
    """
    layers = [name for name, module in model.named_modules()
              if isinstance(module, LORA_LAYER_TYPES) or type(module).__name__ in ("Conv1D",)
              or "Linear" in type(module).__name__]
    leaf_names = sorted({name.rsplit(".", 1)[-1] for name in layers})
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            raise ConfigError(
                f"lora_target '{target}' names no linear or embedding layer of this model",
                hint=f"use all, or names among: {', '.join(leaf_names[:20])}")


def _module_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    if module is None:
        return None
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.split(".")[-1]
    return None


def apply_lora(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments,
               *, quantized: bool) -> Any:
    """New LoRA adapter, or continue the last of ``adapter_name_or_path`` (earlier ones merged first)."""
    from peft import PeftModel, get_peft_model

    adapters = model_args.adapters
    if finetuning_args.create_new_adapter or not adapters:
        to_merge, resume = adapters, None
    else:
        to_merge, resume = adapters[:-1], adapters[-1]
    if to_merge and quantized:
        raise ConfigError(
            "adapters cannot be merged into a quantized base before training",
            hint="pass a single adapter_name_or_path to continue it, without create_new_adapter",
        )
    for path in to_merge:
        model = _load_peft(PeftModel, model, path, is_trainable=False).merge_and_unload()
        logger.info("merged adapter %s into the base", path)
    if resume:
        model = _load_peft(PeftModel, model, resume, is_trainable=True)
        logger.info("continuing training of adapter %s", resume)
    else:
        if finetuning_args.pissa_init and quantized:
            raise ConfigError("pissa_init needs a full-precision base", hint="drop quantization_bit or pissa_init")
        model = get_peft_model(model, build_lora_config(model, model_args, finetuning_args))
        config = model.peft_config["default"]
        logger.info(
            "LoRA rank %d alpha %s on %s%s%s%s",
            config.r, config.lora_alpha, ", ".join(sorted({t.split(".")[-1] for t in config.target_modules})),
            " (rsLoRA)" if config.use_rslora else "", " (DoRA)" if config.use_dora else "",
            " (PiSSA init)" if finetuning_args.pissa_init else "",
        )
    _cast_trainable_to_fp32(model)
    return model


def _load_peft(peft_cls: Any, model: Any, path: str, *, is_trainable: bool) -> Any:
    try:
        return peft_cls.from_pretrained(model, path, is_trainable=is_trainable)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load adapter {path}: {exc}", hint="point adapter_name_or_path at a folder with adapter_config.json"
        ) from exc


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; packed 4-bit weights count as the values they hold."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        quant_state = getattr(param, "quant_state", None)
        if param.__class__.__name__ == "Params4bit" and quant_state is not None:
            n = quant_state.shape.numel()
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def log_parameter_counts(model: torch.nn.Module, *, print_each: bool = False) -> tuple[int, int]:
    trainable, total = count_parameters(model)
    logger.info(
        "trainable params: %s || all params: %s || trainable%%: %.4f",
        f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1),
    )
    if print_each:
        for name, param in model.named_parameters():
            logger.info("%s %s %s trainable=%s", name, tuple(param.shape), param.dtype, param.requires_grad)
    return trainable, total
