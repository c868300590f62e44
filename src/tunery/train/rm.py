"""Stage ``rm``: a reward model trained on pairwise data with trl's RewardTrainer.

The reward model is the base model with a one-output score head (transformers'
``AutoModelForSequenceClassification``), so what ``rm`` saves loads back with plain transformers
(full/freeze) or peft (LoRA: the adapter plus the score head, saved beside it as ``modules_to_save``),
and ppo/grpo read it through ``tunery.train.rewards``. Sequences are Tunery's prompt + reply ids.
"""

from __future__ import annotations

from typing import Any

from peft import get_peft_model, prepare_model_for_kbit_training

from tunery.data import DatasetModule, get_dataset
from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.model.adapter import (
    build_lora_config,
    enable_gradient_checkpointing,
    is_quantized,
    prepare_for_training,
)
from tunery.train.media import media_encoder
from tunery.train.pref_common import to_pairwise_columns, trl_config
from tunery.train.rewards import load_sequence_classifier
from tunery.train.trainer import build_trainer

logger = get_logger(__name__)

SCORE_HEAD = "score"
PLOT_KEYS = ("loss", "eval_loss", "accuracy", "margin")


def to_reward_columns(dataset: Any) -> Any:
    """``chosen_ids`` / ``rejected_ids`` as whole sequences (prompt + reply), RewardTrainer's tokenized form."""
    pairs = to_pairwise_columns(dataset)
    return pairs.map(
        lambda ex: {"chosen_ids": ex["prompt_ids"] + ex["chosen_ids"],
                    "rejected_ids": ex["prompt_ids"] + ex["rejected_ids"]},
        remove_columns=["prompt_ids"],
    )


def prepare_reward_model(model: Any, cfg: Any) -> Any:
    """Trainable setup for a reward model: Tunery's adapter rules, with the score head always trained.

    ``model.adapter`` builds causal-LM LoRA adapters; a reward model needs peft's sequence-
    classification task (score head kept out of LoRA and saved fully), so LoRA is set up here with
    the same LoraConfig, only the task and the head changed.
    """
    ft = cfg.finetuning
    if ft.finetuning_type != "lora":
        model = prepare_for_training(model, cfg.model, ft, cfg.training)
        getattr(model, SCORE_HEAD).requires_grad_(True)
        getattr(model, SCORE_HEAD).float()
        return model
    use_checkpointing = not cfg.model.disable_gradient_checkpointing
    if is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=use_checkpointing)
    elif use_checkpointing:
        enable_gradient_checkpointing(model, reentrant=cfg.model.use_reentrant_gc)
    model.requires_grad_(False)
    config = build_lora_config(model, cfg.model, ft)
    config.task_type = "SEQ_CLS"
    config.modules_to_save = [*(config.modules_to_save or []), SCORE_HEAD]
    model = get_peft_model(model, config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model


def reward_trainer(cfg: Any, model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any = None,
                   callbacks: list | None = None) -> Any:
    """trl's RewardTrainer for ``model`` (a prepared sequence classifier) on Tunery's pairwise rows."""
    from trl import RewardConfig, RewardTrainer  # trl's import is slow; only reward runs pay it

    args = trl_config(RewardConfig, cfg.training, max_length=cfg.data.cutoff_len * 2, remove_unused_columns=False)
    if train_dataset is not None:
        train_dataset = to_reward_columns(train_dataset)
    if eval_dataset is not None:
        eval_dataset = to_reward_columns(eval_dataset)
    trainer = build_trainer(cfg, model, tokenizer, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            trainer_cls=RewardTrainer, args=args, callbacks=callbacks)
    # With a quantized base, trl casts every trainable weight to bf16 (QLoRA's recipe); LoRA layers
    # cast their inputs, but the score head is a plain Linear fed the compute dtype, so it goes back.
    compute = trainer.model.get_input_embeddings().weight.dtype
    for name, param in trainer.model.named_parameters():
        if param.requires_grad and f"{SCORE_HEAD}." in name:
            param.data = param.data.to(compute)
    return trainer


class RewardStage:
    """rm: a sequence classifier trained on pairwise data; pairwise accuracy in the log."""

    name = "rm"
    plot_keys = PLOT_KEYS

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        if media_encoder(cfg) is not None:  # never a reward model trained without the pictures
            raise ConfigError("stage rm does not train on images, video or audio yet",
                              hint="train multimodal preference data with stage: dpo")
        return get_dataset(cfg, tokenizer, template, self.name)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the score-head model, prepare it for training, build the RewardTrainer."""
        args = cfg.training
        model = load_sequence_classifier(tokenizer, cfg.model, args)
        if args.do_train:
            model = prepare_reward_model(model, cfg)
        return reward_trainer(cfg, model, tokenizer, data.train_dataset if args.do_train else None,
                              data.eval_dataset, callbacks)
