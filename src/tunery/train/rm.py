"""Stage ``rm``: a reward model trained on pairwise data with trl's RewardTrainer.

The reward model is the base model with a one-output score head (transformers'
``AutoModelForSequenceClassification``), so what ``rm`` saves loads back with plain transformers
(full/freeze) or peft (LoRA: the adapter plus the score head, saved beside it as ``modules_to_save``),
and ppo/grpo read it through ``tunery.train.rewards``. Sequences are Tunery's prompt + reply ids.

A vision/audio-language model becomes a reward model the same way: the score head reads the
language model's last hidden state (``model.multimodal.sequence_classifier_class``); chosen and
rejected are each encoded through the model's processor with the example's media (the media sit in
the shared prompt), and every batch carries the media tensors once for the chosen half and once
for the rejected half.
"""

from __future__ import annotations

from typing import Any

from peft import get_peft_model, prepare_model_for_kbit_training

from tunery.data import DatasetModule, get_dataset
from tunery.data.media import KINDS, MediaEncoder
from tunery.logging import get_logger
from tunery.model.adapter import (
    build_lora_config,
    enable_gradient_checkpointing,
    is_quantized,
    prepare_for_training,
)
from tunery.train.media import media_encoder
from tunery.train.pref_common import MEDIA_COLUMNS, to_pairwise_columns, trl_config
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
    offload = cfg.model.use_unsloth_gc  # checkpointed layer inputs kept in CPU memory
    if is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=use_checkpointing and not offload)
    if use_checkpointing and (offload or not is_quantized(model)):
        enable_gradient_checkpointing(model, reentrant=cfg.model.use_reentrant_gc, offload=offload)
    model.requires_grad_(False)
    config = build_lora_config(model, cfg.model, ft)
    if not isinstance(config.target_modules, str):  # a VLM's full layer names: the head is saved whole, not adapted
        config.target_modules = [t for t in config.target_modules if t.rsplit(".", 1)[-1] != SCORE_HEAD]
    config.task_type = "SEQ_CLS"
    config.modules_to_save = [*(config.modules_to_save or []), SCORE_HEAD]
    model = get_peft_model(model, config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model


class MediaRewardCollator:
    """trl's reward batches (chosen sequences, then rejected ones, right-padded) plus the processor's
    media tensors of a vision/audio model for both halves (each example's media twice, in batch order)."""

    def __init__(self, pad_token_id: int, media: MediaEncoder) -> None:
        from trl.trainer.reward_trainer import DataCollatorForPreference

        self.base = DataCollatorForPreference(pad_token_id=pad_token_id)
        self.media = media

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{kind: f.get(MEDIA_COLUMNS[kind]) or [] for kind in KINDS} for f in features]
        keys = [k for k in ("chosen_ids", "rejected_ids", "margin") if k in features[0]]
        batch = self.base([{k: f[k] for k in keys} for f in features])
        batch.update(self.media.batch_features(rows + rows, batch["input_ids"]))
        return batch


def reward_trainer(cfg: Any, model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any = None,
                   callbacks: list | None = None, media: MediaEncoder | None = None) -> Any:
    """trl's RewardTrainer for ``model`` (a prepared sequence classifier) on Tunery's pairwise rows.

    ``media`` (a vision/audio model's processor): batches carry the media tensors of every example."""
    from trl import RewardConfig, RewardTrainer  # trl's import is slow; only reward runs pay it

    args = trl_config(RewardConfig, cfg.training, max_length=cfg.data.cutoff_len * 2, remove_unused_columns=False)
    extra = {}
    if media is not None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra["data_collator"] = MediaRewardCollator(pad, media)
    if train_dataset is not None:
        train_dataset = to_reward_columns(train_dataset)
    if eval_dataset is not None:
        eval_dataset = to_reward_columns(eval_dataset)
    trainer = build_trainer(cfg, model, tokenizer, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            trainer_cls=RewardTrainer, args=args, callbacks=callbacks, **extra)
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

    def __init__(self) -> None:
        self.media: MediaEncoder | None = None

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        self.media = media_encoder(cfg)
        return get_dataset(cfg, tokenizer, template, self.name, media=self.media)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the score-head model, prepare it for training, build the RewardTrainer."""
        args = cfg.training
        model = load_sequence_classifier(tokenizer, cfg.model, args)
        if args.do_train:
            model = prepare_reward_model(model, cfg)
        return reward_trainer(cfg, model, tokenizer, data.train_dataset if args.do_train else None,
                              data.eval_dataset, callbacks, media=getattr(self, "media", None))
