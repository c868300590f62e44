"""Optimizer choices beyond AdamW: GaLore and APOLLO through transformers' table, Adam-mini built here.

GaLore (``use_galore``) and APOLLO (``use_apollo``) are optimizer names transformers knows
(``galore_adamw``, ``apollo_adamw`` and their ``_layerwise`` forms) with the modules they act on in
``optim_target_modules`` and their hyper-parameters in ``optim_args``. :func:`apply_optimizer_settings`
writes those three training arguments from Tunery's settings (LLaMA-Factory's names); the Trainer
then builds the packages' optimizers (galore-torch, apollo-torch) itself. Called by
``build_trainer`` once the model is prepared, because ``all`` means every linear layer of that model
but the output head. Adam-mini (``use_adam_mini``) is not in transformers' table:
:func:`adam_mini_optimizer` builds the package's optimizer from the model's attention shape and the
training arguments, and ``build_trainer`` hands it to the Trainer. Muon (``use_muon``) is torch's
own ``torch.optim.Muon`` for the 2-D hidden weight matrices beside AdamW for the rest, joined in
:class:`MuonWithAdamW`; BAdam (``use_badam``) wraps AdamW in the badam package's block optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import Trainer
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


def muon_split(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``(muon, adamw)``: the trainable 2-D hidden matrices, and everything else that trains.

    As in LLaMA-Factory: a trainable parameter goes to Muon when it is 2-D and is neither an
    embedding nor the output head (by name: ``embed`` / ``lm_head``; also by identity with the
    model's input/output embeddings, whatever their names). Biases, norms, embeddings and the
    head take AdamW.
    """
    special: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            special.add(id(module.weight))
    muon, adamw = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hidden = param.ndim == 2 and "embed" not in name and "lm_head" not in name and id(param) not in special
        (muon if hidden else adamw).append(param)
    return muon, adamw


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer for the Trainer: ``torch.optim.Muon`` on some parameters, ``torch.optim.AdamW`` on the others.

    ``param_groups`` are the two optimizers' own group dicts, read live (loading a state dict
    replaces them), so a learning-rate scheduler moves both; ``step``/``zero_grad`` act on both;
    the state dict holds both under ``muon``/``adamw``.
    """

    def __init__(self, muon: torch.optim.Optimizer | None, adamw: torch.optim.Optimizer | None) -> None:
        inner = [o for o in (muon, adamw) if o is not None]
        super().__init__([{"params": g["params"]} for o in inner for g in o.param_groups], {})
        self.optimizers = inner  # from here on, param_groups reads the inner optimizers' groups
        self.muon, self.adamw = muon, adamw

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in getattr(self, "optimizers", []) for g in o.param_groups]

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        pass  # torch.optim.Optimizer.__init__ assigns its own copy; the inner optimizers own the groups

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"muon": self.muon.state_dict() if self.muon else None,
                "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        for key, optimizer in (("muon", self.muon), ("adamw", self.adamw)):
            if optimizer is not None and state_dict.get(key) is not None:
                optimizer.load_state_dict(state_dict[key])


def muon_optimizer(model: torch.nn.Module, args: Any) -> MuonWithAdamW:
    """Muon for the hidden matrices of :func:`muon_split`, AdamW for the rest, as LLaMA-Factory trains ``use_muon``.

    Muon: momentum 0.95 (Nesterov), 5 Newton-Schulz steps, learning rate scaled by
    ``0.2 * sqrt(max(rows, cols))`` (torch's ``adjust_lr_fn="match_rms_adamw"``, the scaling
    LLaMA-Factory's copy applies); AdamW with the training arguments' betas and eps. Both decay
    every weight by ``weight_decay`` (LLaMA-Factory exempts none).
    """
    muon_params, adamw_params = muon_split(model)
    muon = torch.optim.Muon(muon_params, lr=args.learning_rate, weight_decay=args.weight_decay,
                            momentum=0.95, nesterov=True, ns_steps=5,
                            adjust_lr_fn="match_rms_adamw") if muon_params else None
    adamw = torch.optim.AdamW(adamw_params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                              eps=args.adam_epsilon, weight_decay=args.weight_decay) if adamw_params else None
    logger.info("optimizer Muon on %d matrices, AdamW on %d other tensors", len(muon_params), len(adamw_params))
    return MuonWithAdamW(muon, adamw)


def badam_optimizer(model: torch.nn.Module, args: Any, badam_settings: Any) -> torch.optim.Optimizer:
    """BAdam (package badam) around the Trainer's own optimizer (AdamW by default), as LLaMA-Factory builds it.

    ``layer`` mode: ``badam.BlockOptimizer`` trains one decoder layer at a time (blocks found from
    the ``layers.N.`` names), switching every ``badam_switch_interval`` optimizer steps in
    ``badam_switch_mode`` order from ``badam_start_block``; the frozen layers have
    ``requires_grad`` off. ``ratio`` mode: ``badam.BlockOptimizerRatio`` updates a
    ``badam_update_ratio`` share of each weight's entries. Weight decay spares biases and norms
    (the Trainer's rule).
    """
    badam = require("badam", "use_badam: true", "badam")
    decay_names = set(Trainer.get_decay_parameter_names(None, model))  # type: ignore[arg-type]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n in decay_names]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n not in decay_names]
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": args.weight_decay}]
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    named = list(model.named_parameters())
    if badam_settings.badam_mode == "ratio":
        logger.info("optimizer BAdam, ratio mode (%.3f of each weight, %s mask)",
                    badam_settings.badam_update_ratio, badam_settings.badam_mask_mode)
        return badam.BlockOptimizerRatio(
            param_groups=groups, named_parameters_list=named, update_ratio=badam_settings.badam_update_ratio,
            mask_mode=badam_settings.badam_mask_mode, verbose=badam_settings.badam_verbose,
            include_embedding=False, **{k: v for k, v in optimizer_kwargs.items() if k in ("lr", "betas", "eps")},
        )
    interval = badam_settings.badam_switch_interval
    logger.info("optimizer BAdam, layer mode (switch %s every %s steps)", badam_settings.badam_switch_mode,
                "never" if interval == -1 else interval)
    return badam.BlockOptimizer(
        base_optimizer=optimizer_cls(groups, **optimizer_kwargs), named_parameters_list=named,
        block_prefix_list=None, switch_block_every=math.inf if interval == -1 else interval,
        start_block=badam_settings.badam_start_block, switch_mode=badam_settings.badam_switch_mode,
        verbose=badam_settings.badam_verbose,
    )
