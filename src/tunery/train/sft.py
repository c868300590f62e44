"""Stages ``sft`` and ``pt``: supervised fine-tuning on chat data and continued pre-training on
plain text, through transformers' Trainer.

Why not trl's SFTTrainer: Tunery's data pipeline already renders the template and masks the
prompt, which is most of what SFTTrainer adds; on a CPU its extras (an entropy/accuracy head every
step, bf16 and checkpointing defaults) cost time for nothing (see NOTES.md). Pre-training (``pt``)
is the same loop on plain text (packed by default), so both are one :class:`CausalLMStage`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from transformers import Trainer

from tunery.data import DatasetModule, get_collator, get_dataset
from tunery.data.collator import PaddingFreeCollator
from tunery.data.media import MediaEncoder
from tunery.logging import get_logger
from tunery.model.adapter import limit_checkpointed_layers
from tunery.model.attention import enable_packed_attention
from tunery.model.loader import load_model
from tunery.train.dry_run import count_tokens, shape_of
from tunery.train.estimate import CheckpointingPlan, assumed_shape, checkpointing_for_run
from tunery.train.fast_path import fast_path_enabled, fast_trainer_parts
from tunery.train.losses import dft_loss, eaft_loss, with_asft_loss
from tunery.train.media import media_encoder
from tunery.train.metrics import argmax_logits, compute_token_accuracy
from tunery.train.pref_common import load_reference_model
from tunery.train.trainer import build_trainer

logger = get_logger(__name__)


def trainer_parts(cfg: Any, model: Any, tokenizer: Any, stage: str,
                  media: MediaEncoder | None = None) -> tuple[type, Any]:
    """(trainer class, data collator) for a causal-LM stage: the one place a faster loss or a
    padding-free collator plugs in (the collator itself is chosen by ``tunery.data.get_collator``).

    With ``media`` (a vision/audio model's processor) the fast path is off: its chunked loss and
    padding-free rows do not carry the media tensors or Qwen-VL's 3-D positions (a notice says so)."""
    if media is not None:
        if getattr(cfg.finetuning, "fast_path", True):
            logger.warning("fast_path is off for this vision/audio model: padded batches with the processor's "
                           "media tensors and the model's own loss")
        return Trainer, get_collator(stage, tokenizer, cfg, media=media)
    trainer_cls, padding_free = fast_trainer_parts(cfg, model, Trainer)  # fast_path: true (the default)
    collator = get_collator(stage, tokenizer, cfg, padding_free=padding_free)
    if isinstance(collator, PaddingFreeCollator) and getattr(cfg, "training", None) is not None:
        # A padding-free row has no pad tokens, but the Trainer's "non_padding" count (there is
        # no attention mask) drops every token equal to pad_token_id, which is often eos: the
        # logged throughput would miss the real end-of-turn tokens. Every token is useful here.
        cfg.training.include_num_input_tokens_seen = "all"
    return trainer_cls, collator


def checkpointing_plan(cfg: Any, dataset: Any, stage: str) -> CheckpointingPlan | None:
    """How many layers this pt/sft run checkpoints (``estimate.checkpointing_for_run`` on the
    tokenized data), or None to leave the model's checkpointing as it was set up."""
    counts = count_tokens(dataset, stage)
    return checkpointing_for_run(cfg, shape_of(counts) if counts.examples else assumed_shape(cfg))


def apply_checkpointing_plan(cfg: Any, model: Any, dataset: Any, stage: str) -> CheckpointingPlan | None:
    """Checkpoint only the layers the memory budget needs (see :func:`checkpointing_plan`).

    The plan only saves time: a model the estimator cannot build (a remote-code or multimodal
    architecture, say) keeps every layer checkpointed, with a warning, and trains as configured."""
    try:
        plan = checkpointing_plan(cfg, dataset, stage)
    except Exception as exc:  # noqa: BLE001 - any estimator failure falls back to LLaMA-Factory's behaviour
        logger.warning("gradient checkpointing stays on every layer: no memory estimate for this model (%s)", exc)
        return None
    if plan is not None:
        limit_checkpointed_layers(model, plan.checkpointed)
        logger.info("%s", plan.describe())
    return plan


class CausalLMStage:
    """pt / sft: next-token cross-entropy on tokenized rows (prompt masked for sft)."""

    plot_keys = ("loss", "eval_loss", "eval_accuracy")  # eval_accuracy: with compute_accuracy

    def __init__(self, name: str) -> None:
        self.name = name
        self.media: MediaEncoder | None = None

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        self.media = media_encoder(cfg) if self.name == "sft" else None
        return get_dataset(cfg, tokenizer, template, self.name, media=self.media)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the model to train, pick the trainer class and collator, build the trainer."""
        args = cfg.training
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=bool(args.do_train), training_args=args)
        if args.do_train and self.media is None:  # the estimate counts text activations only
            apply_checkpointing_plan(cfg, model, data.train_dataset, self.name)
        trainer_cls, collator = trainer_parts(cfg, model, tokenizer, self.name, self.media)
        metrics: dict[str, Any] = {}
        if cfg.finetuning.compute_accuracy:  # config/validation.py allows it for sft only
            metrics = {"compute_metrics": compute_token_accuracy, "preprocess_logits_for_metrics": argmax_logits}
        ft = cfg.finetuning
        if ft.use_dft_loss:  # the fast path's chunked loss steps aside for a compute_loss_func
            metrics["compute_loss_func"] = dft_loss
        if ft.use_eaft_loss:
            metrics["compute_loss_func"] = partial(eaft_loss, alpha=ft.eaft_alpha)
        if ft.use_asft_loss and args.do_train:
            trainer_cls = with_asft_loss(trainer_cls, self._asft_reference(cfg, tokenizer, model), ft.asft_alpha)
        return build_trainer(
            cfg, model, tokenizer, train_dataset=data.train_dataset if args.do_train else None,
            eval_dataset=data.eval_dataset, data_collator=collator, trainer_cls=trainer_cls, callbacks=callbacks,
            **metrics,
        )

    @staticmethod
    def _asft_reference(cfg: Any, tokenizer: Any, model: Any) -> Any:
        """ASFT's frozen reference (as for dpo: ``ref_model``, a copy of the start for full/freeze, None
        for LoRA), on the model's device and with the same attention kernel as the trained model."""
        reference = load_reference_model(cfg, tokenizer, model)
        if reference is None:
            return None
        if fast_path_enabled(cfg):
            enable_packed_attention(reference)  # padding-free rows need the per-example kernel here too
        return reference.to(cfg.training.device).eval()
