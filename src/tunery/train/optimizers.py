"""Optimizer choices beyond AdamW: GaLore and APOLLO through transformers' table, Adam-mini built here.

GaLore (``use_galore``) and APOLLO (``use_apollo``) are optimizer names transformers knows
(``galore_adamw``, ``apollo_adamw`` and their ``_layerwise`` forms) with the modules they act on in
``optim_target_modules`` and their hyper-parameters in ``optim_args``. :func:`apply_optimizer_settings`
writes those three training arguments from Tunery's settings (LLaMA-Factory's names); the Trainer
then builds the packages' optimizers (galore-torch, apollo-torch) itself. Called by
``build_trainer`` once the model is prepared, because ``all`` means every linear layer of that model
but the output head. Adam-mini (``use_adam_mini``) is not in transformers' table:
:func:`adam_mini_optimizer` builds the package's optimizer from the model's attention shape and the
training arguments, and ``build_trainer`` hands it to the Trainer.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.training_args import OptimizerNames

from tunery.config.finetuning_args import split_list
from tunery.errors import ConfigError, require
from tunery.logging import get_logger

logger = get_logger(__name__)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Sorted short names (``q_proj``, ...) of the model's ``nn.Linear`` modules, the output head excluded."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(names)


def _targets(model: torch.nn.Module, setting: str, value: str) -> list[str]:
    available = linear_module_names(model)
    wanted = split_list(value)
    if wanted in ([], ["all"]):
        return available
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise ConfigError(f"{setting}: {', '.join(unknown)} is not a linear module of this model",
                          hint=f"choose from: all, {', '.join(available)}")
    return wanted


def low_rank_settings(finetuning: Any, model: torch.nn.Module) -> dict[str, Any] | None:
    """``{optim, optim_target_modules, optim_args}`` for GaLore or APOLLO, or None when neither is on."""
    g, a = finetuning.galore, finetuning.apollo
    if g.use_galore:
        return {
            "optim": OptimizerNames("galore_adamw_layerwise" if g.galore_layerwise else "galore_adamw"),
            "optim_target_modules": _targets(model, "galore_target", g.galore_target),
            "optim_args": f"rank={g.galore_rank},update_proj_gap={g.galore_update_interval},"
                          f"scale={g.galore_scale},proj_type={g.galore_proj_type}",
        }
    if a.use_apollo:
        return {
            "optim": OptimizerNames("apollo_adamw_layerwise" if a.apollo_layerwise else "apollo_adamw"),
            "optim_target_modules": _targets(model, "apollo_target", a.apollo_target),
            "optim_args": f"rank={a.apollo_rank},update_proj_gap={a.apollo_update_interval},"
                          f"scale={a.apollo_scale},proj={a.apollo_proj},proj_type={a.apollo_proj_type},"
                          f"scale_type={a.apollo_scale_type}",
        }
    return None


def apply_optimizer_settings(cfg: Any, model: torch.nn.Module, args: Any) -> None:
    """Point ``args`` (TrainingArguments or a trl config) at GaLore/APOLLO when asked; in place."""
    settings = low_rank_settings(cfg.finetuning, model)
    if settings is None:
        return
    for key, value in settings.items():
        setattr(args, key, value)
    logger.info("optimizer %s on %s (%s)", settings["optim"].value, ", ".join(settings["optim_target_modules"]),
                settings["optim_args"])


def adam_mini_optimizer(model: torch.nn.Module, args: Any) -> torch.optim.Optimizer:
    """Adam-mini (package adam-mini) over the trainable parameters, with the training arguments' lr/betas/eps/decay.

    It keeps one second-moment value per block (per attention head for q/k, per output neuron
    elsewhere), so it needs the model's hidden size and head counts (read from its config).
    """
    adam_mini = require("adam_mini", "use_adam_mini: true", "adam-mini")
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = adam_mini.Adam_mini(
        named_parameters=named, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon, weight_decay=args.weight_decay, model_sharding=False,
        dim=getattr(text, "hidden_size", 2048), n_heads=heads or 32, n_kv_heads=kv_heads, verbose=False,
    )
    logger.info("optimizer Adam-mini (%d parameter tensors)", len(named))
    return optimizer
