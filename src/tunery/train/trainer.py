"""Build a transformers/trl trainer with Tunery's settings, callbacks and optimizer choices.

One function for every stage, with the parts that vary as arguments: ``trainer_cls`` (Trainer,
a trl trainer, or a subclass with a leaner loss), ``data_collator`` (padded or padding-free) and
``args`` (a trl config converted from the training settings). Everything else — token counting
for throughput, the log and signal callbacks, LoRA+ — is set here once.
"""

from __future__ import annotations

import os
from types import MethodType
from typing import Any

import torch
from accelerate.utils import AORecipeKwargs, KwargsHandler, MSAMPRecipeKwargs, TERecipeKwargs
from peft.optimizers import create_loraplus_optimizer
from transformers import EarlyStoppingCallback, Trainer

from tunery.config import fp8_backend_in_use
from tunery.errors import require
from tunery.logging import get_logger
from tunery.train.callbacks import LogCallback, LogLastStep, SavePissaInit, use_readable_logs
from tunery.train.continue_run import with_replanned_schedule
from tunery.train.optimizers import (
    adam_mini_optimizer,
    apply_optimizer_settings,
    badam_optimizer,
    muon_optimizer,
)
from tunery.train.signals import StopOnSignal

logger = get_logger(__name__)

# report_to value -> (module to import, pip package) for a clear error before the Trainer fails.
REPORTERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
             "mlflow": ("mlflow", "mlflow"), "swanlab": ("swanlab", "swanlab")}


# SwanLab settings -> the environment variables transformers' SwanLabCallback reads.
SWANLAB_ENV = {"swanlab_project": "SWANLAB_PROJECT", "swanlab_mode": "SWANLAB_MODE",
               "swanlab_api_key": "SWANLAB_API_KEY", "swanlab_logdir": "SWANLAB_LOG_DIR"}


def standard_callbacks(cfg: Any) -> list[Any]:
    """trainer_log.jsonl writer (and its last step), SIGTERM/SIGINT checkpointing, and when asked PiSSA
    bookkeeping and early stopping (``early_stopping_steps`` evaluations without a better ``metric_for_best_model``)."""
    callbacks: list[Any] = [LogCallback(), LogLastStep(), StopOnSignal()]
    if getattr(cfg.finetuning, "pissa_convert", False) and cfg.finetuning.pissa_init:
        callbacks.append(SavePissaInit())
    if getattr(cfg.finetuning, "early_stopping_steps", None) is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.finetuning.early_stopping_steps))
    return callbacks


def apply_run_settings(cfg: Any, args: Any) -> None:
    """Tunery settings that become training arguments of whichever args object a stage trains with.

    ``disable_shuffling``: transformers' sequential sampler (and trl GRPO's ``shuffle_dataset: false``);
    ``use_swanlab``: the SwanLab settings go to the environment transformers' SwanLab callback reads;
    ``enable_liger_kernel``: transformers' ``use_liger_kernel``; ``fp8``: accelerate's ``mixed_precision``
    "fp8" (the library's recipe joins the trainer's accelerator through :func:`with_fp8_recipe`).
    """
    ft = cfg.finetuning
    if cfg.model.enable_liger_kernel:
        args.use_liger_kernel = True  # transformers patches Liger's kernels into the model when training starts
    if getattr(cfg.training, "fp8", False):
        args.mixed_precision = "fp8"  # accelerate's FP8 mode; the library's recipe: fp8_recipe
    if ft.disable_shuffling:
        args.train_sampling_strategy = "sequential"
        if hasattr(args, "shuffle_dataset"):
            args.shuffle_dataset = False
    if ft.swanlab.use_swanlab:
        for key, env in SWANLAB_ENV.items():
            value = getattr(ft.swanlab, key)
            if value is not None:
                os.environ[env] = str(value)
        if ft.swanlab.swanlab_run_name:
            args.run_name = ft.swanlab.swanlab_run_name


def fp8_recipe(training: Any) -> KwargsHandler | None:
    """accelerate's recipe for the FP8 library of ``fp8_backend`` (None without ``fp8``).

    torchao: ``AORecipeKwargs`` (its default layer filter: linear layers whose sizes divide by 16),
    with ``fp8_enable_fsdp_float8_all_gather``; te: ``TERecipeKwargs``; msamp: ``MSAMPRecipeKwargs``.
    The library must be installed (checked at parse time, tunery.config.require_fp8_backend).
    """
    if not getattr(training, "fp8", False):
        return None
    backend = fp8_backend_in_use(training.fp8_backend)
    if backend == "torchao":
        return AORecipeKwargs(enable_fsdp_float8_all_gather=bool(training.fp8_enable_fsdp_float8_all_gather))
    if backend == "te":
        return TERecipeKwargs()
    return MSAMPRecipeKwargs()


def with_fp8_recipe(trainer_cls: type, recipe: KwargsHandler) -> type:
    """``trainer_cls`` whose accelerator gets ``recipe`` beside transformers' own handlers (a new subclass).

    transformers builds the Accelerator from ``_build_accelerator_args`` with only its DDP handler, so the
    FP8 recipe is added there; ``args.mixed_precision`` "fp8" (apply_run_settings) turns FP8 on.
    """

    def _build_accelerator_args(self: Any, **kwargs: Any) -> dict[str, Any]:
        built = super(subclass, self)._build_accelerator_args(**kwargs)
        built["kwargs_handlers"] = [*built.get("kwargs_handlers", []), recipe]
        return built

    subclass = type(f"FP8{trainer_cls.__name__}", (trainer_cls,), {"_build_accelerator_args": _build_accelerator_args})
    return subclass


def configure_training_args(args: Any) -> Any:
    """Adjust transformers' arguments for Tunery's conventions (in place, returned for chaining).

    - the model arrives already prepared (gradient checkpointing is set by ``model.adapter``), so the
      Trainer must not enable it a second time;
    - non-padding tokens are counted so throughput is the useful tokens/s;
    - the collator picks the columns it needs, so none are dropped by forward-signature matching;
    - ``logging_dir`` (a removed transformers name LLaMA-Factory still uses) reaches TensorBoard.
    """
    args.gradient_checkpointing = False
    if args.include_num_input_tokens_seen in ("no", False, None):
        args.include_num_input_tokens_seen = "non_padding"
    args.remove_unused_columns = False
    if args.use_cpu or not _has_accelerator():
        args.dataloader_pin_memory = False  # pinning needs an accelerator; it only warns on a CPU
    reporters = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    for name in reporters:
        if name in REPORTERS:
            module, package = REPORTERS[name]
            require(module, f"report_to: {name}", package=package)
    if getattr(args, "logging_dir", None) and "tensorboard" in reporters:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", args.logging_dir)
    return args


def _has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def loraplus_optimizer(model: Any, args: Any, ratio: float, embedding_lr: float) -> Any:
    """LoRA+ (B matrices learn ``ratio`` times faster) through peft's own optimizer builder."""
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k != "lr"}
    logger.info("LoRA+ with lr ratio %.1f", ratio)
    return create_loraplus_optimizer(
        model, optimizer_cls, lr=args.learning_rate, loraplus_lr_ratio=ratio,
        loraplus_lr_embedding=embedding_lr, weight_decay=args.weight_decay, **optimizer_kwargs,
    )


def build_trainer(
    cfg: Any,
    model: Any,
    tokenizer: Any,
    *,
    train_dataset: Any,
    eval_dataset: Any = None,
    data_collator: Any = None,
    trainer_cls: type | None = None,
    args: Any = None,
    callbacks: list[Any] | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """A ready trainer. Extension points: ``trainer_cls``, ``data_collator``, ``args``, extra kwargs.

    ``callbacks`` are added after :func:`standard_callbacks`; pass ``args`` to use a trl config
    (DPOConfig...) instead of ``cfg.training``; ``trainer_kwargs`` go to the trainer (e.g.
    ``ref_model``, ``compute_loss_func``; ppo's scorer and settings). ``data_collator`` is passed only
    when given (trl's GRPOTrainer takes none). Every stage builds its trainer here.
    """
    trainer_cls = with_replanned_schedule(trainer_cls or Trainer)  # a continued run follows its own schedule
    recipe = fp8_recipe(cfg.training)
    if recipe is not None:
        trainer_cls = with_fp8_recipe(trainer_cls, recipe)
    args = configure_training_args(args if args is not None else cfg.training)
    apply_run_settings(cfg, args)
    apply_optimizer_settings(cfg, model, args)
    if args.ddp_find_unused_parameters is None and getattr(model, "peft_config", None):
        # DDP: every adapter weight takes part in each forward, and the search for unused ones breaks
        # with gradient checkpointing (transformers turns it off itself only for a plain model)
        args.ddp_find_unused_parameters = False
    ratio = getattr(cfg.finetuning, "loraplus_lr_ratio", None)
    if ratio and getattr(model, "peft_config", None) and "optimizers" not in trainer_kwargs:
        optimizer = loraplus_optimizer(model, args, ratio, cfg.finetuning.loraplus_lr_embedding)
        trainer_kwargs["optimizers"] = (optimizer, None)
    if getattr(cfg.finetuning, "use_adam_mini", False) and "optimizers" not in trainer_kwargs:
        trainer_kwargs["optimizers"] = (adam_mini_optimizer(model, args), None)
    if cfg.finetuning.use_muon and "optimizers" not in trainer_kwargs:
        trainer_kwargs["optimizers"] = (muon_optimizer(model, args), None)
    badam = cfg.finetuning.badam
    if badam.use_badam and "optimizers" not in trainer_kwargs:
        trainer_kwargs["optimizers"] = (badam_optimizer(model, args, badam), None)
    extra = list(callbacks or [])
    given = {type(c) for c in extra}
    all_callbacks = [c for c in standard_callbacks(cfg) if type(c) not in given] + extra
    if data_collator is not None:
        trainer_kwargs["data_collator"] = data_collator
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=all_callbacks,
        **trainer_kwargs,
    )
    if badam.use_badam and badam.badam_mode == "ratio":
        # ratio mode leaves sparse gradients, which torch's foreach gradient clipping rejects;
        # badam ships the clipping that handles them
        trainer.accelerator.clip_grad_norm_ = MethodType(
            require("badam", "use_badam: true", "badam").clip_grad_norm_old_version, trainer.accelerator)
    return use_readable_logs(trainer)
