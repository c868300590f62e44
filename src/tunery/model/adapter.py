"""Make a loaded model trainable: full, freeze, the LoRA family or OFT, plus gradient checkpointing.

The loader gives every workflow the same model; this module decides which weights learn. LoRA and
OFT come from peft (targets, rsLoRA, DoRA, PiSSA, QLoRA preparation); only what peft has no notion
of is written here: LLaMA-Factory's freeze method (train the last/first N decoder layers, or the
blocks `tunery expand` inserted with ``use_llama_pro``) and the rules for stacking adapters given
by ``adapter_name_or_path``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from tunery.config import FinetuningArguments
from tunery.config.finetuning_args import split_list
from tunery.config.validation import fsdp_requested
from tunery.errors import ConfigError, ModelError
from tunery.logging import get_logger
from tunery.model import unsloth
from tunery.model.multimodal import family_of

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
    if quantized and kind not in ("lora", "oft"):
        raise ConfigError(
            f"a {model_args.quantization_bit}-bit quantized base can only be trained with an adapter (LoRA or OFT), "
            f"not finetuning_type: {kind}",
            hint="set finetuning_type: lora (or oft), or drop quantization_bit",
        )
    use_checkpointing = not model_args.disable_gradient_checkpointing or bool(
        getattr(training_args, "gradient_checkpointing", False)
    )
    offload = model_args.use_unsloth_gc
    if model_args.use_unsloth:
        pass  # Unsloth prepared the (quantized) base and set up its own gradient checkpointing (model.unsloth)
    elif quantized and fsdp_requested(getattr(training_args, "fsdp", None)):
        # QLoRA + FSDP: every weight keeps the one load dtype the 4-bit weights are stored in (FSDP flattens
        # tensors of one dtype), so no fp32 upcast of the other weights as peft's preparation does
        model.requires_grad_(False)
        if use_checkpointing:
            enable_gradient_checkpointing(model, reentrant=model_args.use_reentrant_gc, offload=offload)
    elif quantized:
        from peft import prepare_model_for_kbit_training

        # peft casts the non-quantized weights to fp32 and makes inputs require grad, which
        # gradient checkpointing needs when every base weight is frozen (offloaded checkpointing: ours).
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=use_checkpointing and not offload,
            gradient_checkpointing_kwargs={"use_reentrant": model_args.use_reentrant_gc},
        )
        if use_checkpointing and offload:
            enable_gradient_checkpointing(model, reentrant=model_args.use_reentrant_gc, offload=True)
    elif use_checkpointing:
        enable_gradient_checkpointing(model, reentrant=model_args.use_reentrant_gc, offload=offload)
    if model_args.upcast_layernorm:
        upcast_layernorms(model)

    parts = multimodal_parts(model)
    if kind == "full":
        model.requires_grad_(True)
        if parts:
            freeze_parts(model, parts, finetuning_args)
        logger.info("finetuning_type full: every weight is trained%s", frozen_note(parts, finetuning_args))
    elif kind == "freeze":
        apply_freeze(model, finetuning_args)
        if parts:
            unfreeze_media_parts(model, parts, finetuning_args)
    elif kind in ("lora", "oft"):
        model = apply_lora(model, model_args, finetuning_args, quantized=quantized, training_args=training_args)
    else:  # the config layer already restricts the values; keep a clear error for direct callers
        raise ConfigError(f"unknown finetuning_type '{kind}'", hint="choose lora, oft, freeze or full")

    # BAdam keeps fp32 copies of the active block itself; pure_bf16 trains the bf16 weights as they are
    if kind not in ("lora", "oft") and not finetuning_args.badam.use_badam and not finetuning_args.pure_bf16:
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


def enable_gradient_checkpointing(model: PreTrainedModel, *, reentrant: bool = True, offload: bool = False) -> None:
    """Trade compute for memory: recompute activations in backward instead of keeping them.

    ``offload`` (``use_unsloth_gc``, CUDA only): the inputs each checkpointed layer saves for its
    recompute wait in pinned CPU memory instead of GPU memory (transformers' ``offload``)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        logger.warning("%s does not support gradient checkpointing; training without it", type(model).__name__)
        return
    kwargs = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, offload=offload)
        if offload:
            logger.info("use_unsloth_gc: checkpointed layer inputs are kept in CPU memory until backward")
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


# ---------------------------------------------------------------- vision-language parts

# Where each part of a vision/audio-language model sits, by module name (transformers 5 layouts:
# LLaVA/Gemma 3/Qwen2-Audio/mllama use vision_tower/audio_tower + multi_modal_projector; Qwen-VL's
# projector is visual.merger inside its vision tower; InternVL uses mlp1).
VISION_NAMES = ("vision_tower", "visual", "vision_model", "audio_tower", "vpm")
PROJECTOR_NAMES = ("multi_modal_projector", "visual.merger", "mlp1", "resampler", "connector")
LANGUAGE_NAMES = ("language_model",)


def multimodal_parts(model: torch.nn.Module) -> dict[str, list[str]]:
    """{"vision": [...], "projector": [...], "language": [...]}: module name prefixes of each part of a
    vision/audio-language model: the family registry's names, else the first module of each usual
    name; {} for a text-only model."""
    family = family_of(getattr(model, "config", None))
    if family is not None:  # the registry names each part (model.multimodal)
        present = {name for name, _ in model.named_modules()} | {name for name, _ in model.named_parameters()}
        parts = {"vision": [n for n in family.vision_tower if n in present],
                 "projector": [n for n in family.projector if n in present],
                 "language": [n for n in family.language_model if n in present]}
        if parts["vision"] and parts["language"]:
            return parts
    found: dict[str, list[str]] = {"vision": [], "projector": [], "language": []}
    for name, _ in model.named_modules():
        for part, names in (("projector", PROJECTOR_NAMES), ("vision", VISION_NAMES), ("language", LANGUAGE_NAMES)):
            if any(name == n or name.endswith("." + n) for n in names) and \
                    not any(name.startswith(p + ".") for p in found[part]):
                found[part].append(name)
                break
    if not found["vision"] or not found["language"]:
        return {}
    return found


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden_prefixes(parts: dict[str, list[str]], finetuning_args: FinetuningArguments) -> list[str]:
    """Module prefixes that stay frozen: ``freeze_vision_tower`` (default true),
    ``freeze_multi_modal_projector`` (default true), ``freeze_language_model`` (default false).
    The projector is inside the vision tower for Qwen-VL, so it is judged on its own setting."""
    out: list[str] = []
    if finetuning_args.freeze_vision_tower:
        out += parts["vision"]
    if finetuning_args.freeze_multi_modal_projector:
        out += parts["projector"]
    if finetuning_args.freeze_language_model:
        out += parts["language"]
    return out


def _is_trainable_part(name: str, parts: dict[str, list[str]], finetuning_args: FinetuningArguments) -> bool:
    if _under(name, parts["projector"]):
        return not finetuning_args.freeze_multi_modal_projector
    return not _under(name, forbidden_prefixes(parts, finetuning_args))


def freeze_parts(model: torch.nn.Module, parts: dict[str, list[str]], finetuning_args: FinetuningArguments) -> None:
    """Full fine-tuning of a VLM: the frozen parts stop requiring grad (everything else trains)."""
    for name, param in model.named_parameters():
        if not _is_trainable_part(name, parts, finetuning_args):
            param.requires_grad_(False)


def unfreeze_media_parts(model: torch.nn.Module, parts: dict[str, list[str]],
                         finetuning_args: FinetuningArguments) -> None:
    """``finetuning_type: freeze`` trains the chosen decoder layers; the vision tower and projector
    train whole when their freeze_* setting is false, and ``freeze_language_model`` keeps the LM frozen."""
    for name, param in model.named_parameters():
        if _under(name, parts["projector"]):
            param.requires_grad_(not finetuning_args.freeze_multi_modal_projector)
        elif _under(name, parts["vision"]):
            param.requires_grad_(not finetuning_args.freeze_vision_tower)
        elif finetuning_args.freeze_language_model and _under(name, parts["language"]):
            param.requires_grad_(False)


def frozen_note(parts: dict[str, list[str]], finetuning_args: FinetuningArguments) -> str:
    if not parts:
        return ""
    frozen = [label for label, flag in (("vision tower", finetuning_args.freeze_vision_tower),
                                        ("projector", finetuning_args.freeze_multi_modal_projector),
                                        ("language model", finetuning_args.freeze_language_model)) if flag]
    return f" but the frozen {', '.join(frozen)}" if frozen else ""


def multimodal_lora_targets(model: torch.nn.Module, targets: list[str], parts: dict[str, list[str]],
                            finetuning_args: FinetuningArguments) -> list[str]:
    """Full module names for LoRA on a VLM: the linear layers ``targets`` name (``all``: every linear
    layer but the output head) outside the frozen parts, as LLaMA-Factory restricts them."""
    head = _module_name(model, model.get_output_embeddings())
    names = []
    for name, module in model.named_modules():
        if not (isinstance(module, torch.nn.Linear) or "Linear" in type(module).__name__):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if targets in ([], ["all"]):
            if leaf == head:
                continue
        elif not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if _is_trainable_part(name, parts, finetuning_args):
            names.append(name)
    if not names:
        raise ConfigError("no linear layer is left for the adapter outside the frozen parts of this model",
                          hint="set freeze_language_model: false, or freeze_vision_tower: false")
    return names


# ---------------------------------------------------------------- freeze


def decoder_layer_count(model: PreTrainedModel) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()  # a VLM's decoder layers are its language model's
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
    if finetuning_args.use_llama_pro:
        layer_ids = set(llama_pro_layer_ids(n_layers, n))
    else:
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
    language = multimodal_parts(model).get("language")  # a VLM: layers of its language model only
    for name, param in model.named_parameters():
        if language and not _under(name, language):
            param.requires_grad_(False)  # vision tower / projector: their freeze_* settings decide
            continue
        match = _LAYER_INDEX.search(name)
        if match:
            parts = name[match.end():].split(".")[:-1]
            train = int(match.group(1)) in layer_ids and ("all" in modules or any(p in modules for p in parts))
        else:
            train = any(p in extras for p in name.split(".")[:-1])
        param.requires_grad_(train)
    which = "expanded (LLaMA Pro)" if finetuning_args.use_llama_pro else "last" if n > 0 else "first"
    logger.info(
        "finetuning_type freeze: training the %s %d of %d layers (modules: %s%s)",
        which, abs(n), n_layers, ", ".join(modules), f"; extra: {', '.join(extras)}" if extras else "",
    )


def llama_pro_layer_ids(n_layers: int, n_expand: int) -> list[int]:
    """Indices of the blocks `tunery expand` inserted: the last of every ``n_layers / n_expand`` layers.

    ``n_layers`` counts the expanded model's layers; ``n_expand`` is freeze_trainable_layers (= the
    expansion's num_expand). Raises ConfigError when the layers do not split into that many groups.
    """
    if n_expand <= 0 or n_layers % n_expand:
        raise ConfigError(
            f"use_llama_pro: the model's {n_layers} layers do not split into freeze_trainable_layers: {n_expand} groups",
            hint="set freeze_trainable_layers to the --num_expand given to `tunery expand`",
        )
    stride = n_layers // n_expand
    return list(range(stride - 1, n_layers, stride))


# ---------------------------------------------------------------- lora


def lora_init_weights(finetuning_args: FinetuningArguments) -> bool | str:
    """peft's ``init_lora_weights`` value: default init, PiSSA (fast SVD unless pissa_iter == -1), or LoftQ."""
    if finetuning_args.loftq_init:
        return "loftq"
    if not finetuning_args.pissa_init:
        return True
    return "pissa" if finetuning_args.pissa_iter == -1 else f"pissa_niter_{finetuning_args.pissa_iter}"


def loftq_config(finetuning_args: FinetuningArguments) -> dict[str, int] | None:
    """peft's ``loftq_config`` (LoftQConfig's fields) when ``loftq_init`` is on, else None."""
    if not finetuning_args.loftq_init:
        return None
    return {"loftq_bits": finetuning_args.loftq_bits, "loftq_iter": finetuning_args.loftq_iter}


def _modules_to_save(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments) -> list[str]:
    modules_to_save = split_list(finetuning_args.additional_target)
    if model_args.resize_vocab:
        # New token rows must learn; an adapter alone cannot give them embeddings.
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            name = _module_name(model, module)
            if name and name not in modules_to_save:
                modules_to_save.append(name)
        logger.info("resize_vocab: training %s fully beside the adapter", ", ".join(modules_to_save))
    return modules_to_save


def adapter_targets(model: PreTrainedModel, finetuning_args: FinetuningArguments) -> str | list[str]:
    """peft's ``target_modules`` for lora_target (LoRA) or oft_target (OFT).

    'all' is peft's 'all-linear' (no head). With ``use_llama_pro`` only the layers inside the
    expanded blocks are targeted (full module names), as LLaMA-Factory does.
    Raises ConfigError for a name that matches no linear layer.
    """
    setting = "oft_target" if finetuning_args.finetuning_type == "oft" else "lora_target"
    names = split_list(finetuning_args.oft.oft_target) if setting == "oft_target" else finetuning_args.lora_targets
    everything = names in ([], ["all"])
    if not everything:
        check_lora_targets(model, names, setting=setting)
    parts = multimodal_parts(model)
    if parts:  # a VLM: only the layers outside the frozen parts (vision tower, projector, language model)
        return multimodal_lora_targets(model, names, parts, finetuning_args)
    if not finetuning_args.use_llama_pro:
        return "all-linear" if everything else names
    layer_ids = set(llama_pro_layer_ids(decoder_layer_count(model), finetuning_args.freeze_trainable_layers))
    head = _module_name(model, model.get_output_embeddings())
    chosen = []
    for name in _linear_layer_names(model):
        match = _LAYER_INDEX.search(name)
        if not match or int(match.group(1)) not in layer_ids or name.rsplit(".", 1)[-1] == head:
            continue
        if everything or any(name == t or name.endswith("." + t) for t in names):
            chosen.append(name)
    return chosen


def build_lora_config(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments) -> Any:
    """The peft LoraConfig (or OFTConfig for finetuning_type: oft) for these settings."""
    from peft import LoraConfig, OFTConfig, TaskType

    target_modules = adapter_targets(model, finetuning_args)
    modules_to_save = _modules_to_save(model, model_args, finetuning_args) or None
    if finetuning_args.finetuning_type == "oft":
        return OFTConfig(
            task_type=TaskType.CAUSAL_LM,
            r=finetuning_args.oft.oft_rank,
            oft_block_size=finetuning_args.oft.oft_block_size,
            module_dropout=finetuning_args.oft.module_dropout,
            target_modules=target_modules,
            modules_to_save=modules_to_save,
        )
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=finetuning_args.lora_rank,
        lora_alpha=finetuning_args.lora_alpha,
        lora_dropout=finetuning_args.lora_dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        use_rslora=finetuning_args.use_rslora,
        use_dora=finetuning_args.use_dora,
        init_lora_weights=lora_init_weights(finetuning_args),
        loftq_config=loftq_config(finetuning_args) or {},
    )


LORA_LAYER_TYPES = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def _linear_layer_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules()
            if isinstance(module, LORA_LAYER_TYPES) or type(module).__name__ in ("Conv1D",)
            or "Linear" in type(module).__name__]


def check_lora_targets(model: torch.nn.Module, targets: list[str], *, setting: str = "lora_target") -> None:
    """Each target must name layers an adapter can wrap (by name or dotted suffix, as peft matches).

    Raises ConfigError naming the target and the layer names the model has: peft would fail with
    an internal error for a name it does not find, or for a block (a decoder layer, a norm).
    """
    layers = _linear_layer_names(model)
    leaf_names = sorted({name.rsplit(".", 1)[-1] for name in layers})
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            raise ConfigError(
                f"{setting} '{target}' names no linear or embedding layer of this model",
                hint=f"use all, or names among: {', '.join(leaf_names[:20])}")


def _module_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    if module is None:
        return None
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.split(".")[-1]
    return None


def apply_lora(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments,
               *, quantized: bool, training_args: Any = None) -> Any:
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
    if resume and model_args.use_unsloth:
        logger.info("continuing training of adapter %s (loaded by Unsloth)", resume)
    elif resume:
        model = _load_peft(PeftModel, model, resume, is_trainable=True)
        logger.info("continuing training of adapter %s", resume)
    else:
        if finetuning_args.pissa_init and quantized:
            raise ConfigError("pissa_init needs a full-precision base", hint="drop quantization_bit or pissa_init")
        lora_config = build_lora_config(model, model_args, finetuning_args)
        if model_args.use_unsloth:  # Unsloth's LoRA builder, from the same resolved config (model.unsloth)
            model = unsloth.get_peft_model(model, lora_config, model_args, training_args)
        else:
            model = get_peft_model(model, lora_config)
        config = model.peft_config["default"]
        targets = ", ".join(sorted({t.split(".")[-1] for t in config.target_modules}))
        if finetuning_args.finetuning_type == "oft":
            logger.info("OFT %s on %s", f"rank {config.r}" if config.r else f"block size {config.oft_block_size}",
                        targets)
        else:
            logger.info(
                "LoRA rank %d alpha %s on %s%s%s%s",
                config.r, config.lora_alpha, targets,
                " (rsLoRA)" if config.use_rslora else "", " (DoRA)" if config.use_dora else "",
                " (PiSSA init)" if finetuning_args.pissa_init else "",
            )
        if finetuning_args.loftq_init:
            logger.info("LoftQ init: the base's adapted weights now hold their %d-bit quantized values; use the "
                        "adapter with that base loaded in %d bit (quantization_bit: %d)", finetuning_args.loftq_bits,
                        finetuning_args.loftq_bits, finetuning_args.loftq_bits)
    if not finetuning_args.pure_bf16:
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
