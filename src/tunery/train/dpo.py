"""Stages dpo, orpo and simpo: preference optimisation on pairwise data through trl.

``pref_loss`` picks the objective. sigmoid (DPO), hinge and ipo run on trl's DPOTrainer, against a
frozen reference (the base with the LoRA adapter off, or ``ref_model``). orpo and simpo need no
reference and trl 1.x keeps them apart, in ``trl.experimental``: ORPOTrainer and CPOTrainer with
``loss_type="simpo"`` (DPOTrainer has no odds-ratio or length-normalised margin loss), so they run there.
Each trainer gets Tunery's token ids (prompt / chosen / rejected) so training sees the sft template.
"""

from __future__ import annotations

import os
from typing import Any

from tunery.data import IGNORE_INDEX, DatasetModule, get_dataset
from tunery.data.media import KINDS, MediaEncoder
from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.model.loader import load_model
from tunery.train.media import media_encoder
from tunery.train.pref_common import (
    MEDIA_COLUMNS,
    drop_reference_adapter,
    load_reference_model,
    to_pairwise_columns,
    trl_config,
)
from tunery.train.trainer import build_trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

logger = get_logger(__name__)

DPO_LOSSES = ("sigmoid", "hinge", "ipo")
REFERENCE_FREE_LOSSES = ("orpo", "simpo")


def _dpo_trainer_cls() -> type:
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer fed with Tunery's token ids: dataset preparation keeps them as they are."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
            # trl re-tokenizes text with the tokenizer's own chat template; Tunery's ids are final.
            return to_pairwise_columns(dataset)

    return TokenizedDPOTrainer


def _legacy_row(feature: dict[str, Any], max_length: int | None) -> dict[str, Any]:
    """The column layout CPOTrainer/ORPOTrainer build in ``tokenize_row``, from ready token ids."""
    prompt = list(feature["prompt_ids"])
    row: dict[str, Any] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        ids = prompt + list(feature[f"{side}_ids"])
        labels = [IGNORE_INDEX] * len(prompt) + list(feature[f"{side}_ids"])
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        row[f"{side}_input_ids"] = ids
        row[f"{side}_attention_mask"] = [1] * len(ids)
        row[f"{side}_labels"] = labels
    return row


def _reference_free_trainer_cls(loss: str) -> type:
    if loss == "orpo":
        from trl.experimental.orpo import ORPOTrainer as Base
    else:
        from trl.experimental.cpo import CPOTrainer as Base

    class TokenizedTrainer(Base):
        """ORPO/CPO trainer fed with Tunery's token ids instead of text.

        With ``media`` (a vision/audio model's processor, set after construction) every forward pass
        also gets the media tensors: trl's ORPO/CPO forward passes only ids and attention mask, so the
        model call is wrapped to add them for the padded chosen + rejected ids it is given."""

        media: MediaEncoder | None = None

        def tokenize_row(self, feature, model=None):  # noqa: ANN001
            return _legacy_row(feature, self.max_length)

        def concatenated_forward(self, model, batch):  # noqa: ANN001
            if self.media is None:
                return super().concatenated_forward(model, batch)
            n = len(batch["chosen_labels"])
            rows = [{kind: (batch.get(MEDIA_COLUMNS[kind]) or [None] * n)[i] or [] for kind in KINDS}
                    for i in range(n)]

            def with_media(input_ids, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
                features = self.media.batch_features(rows + rows, input_ids)  # chosen rows, then rejected rows
                features = {k: v.to(input_ids.device) if hasattr(v, "to") else v for k, v in features.items()}
                return model(input_ids, *args, **kwargs, **features)

            return super().concatenated_forward(with_media, batch)

    return TokenizedTrainer


def trainer_parts(ft: Any, training_args: Any, max_length: int | None) -> tuple[type, Any]:
    """(trainer class, trl config) for ``ft.pref_loss`` (sigmoid, hinge, ipo, orpo or simpo)."""
    loss = ft.pref_loss
    common = {"max_length": max_length, "remove_unused_columns": False}
    if loss in DPO_LOSSES:
        from trl import DPOConfig

        loss_types, weights = [loss], [1.0]
        if ft.dpo_label_smoothing > 0:  # only with sigmoid: config rule label_smoothing_needs_sigmoid
            loss_types = ["robust"]  # trl's robust DPO: the sigmoid loss corrected for label noise ε
        if ft.pref_ftx > 0:
            loss_types.append("sft")
            weights.append(ft.pref_ftx)
        args = trl_config(DPOConfig, training_args, beta=ft.pref_beta, loss_type=loss_types, loss_weights=weights,
                          label_smoothing=ft.dpo_label_smoothing, ld_alpha=ft.ld_alpha, **common)
        return _dpo_trainer_cls(), args
    if loss == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return _reference_free_trainer_cls(loss), trl_config(ORPOConfig, training_args, beta=ft.pref_beta, **common)
    if loss == "simpo":
        from trl.experimental.cpo import CPOConfig

        args = trl_config(CPOConfig, training_args, loss_type="simpo", beta=ft.pref_beta, simpo_gamma=ft.simpo_gamma,
                          cpo_alpha=ft.pref_ftx, **common)
        return _reference_free_trainer_cls(loss), args
    raise ConfigError(f"unknown pref_loss '{loss}'", hint=f"use one of {', '.join(DPO_LOSSES + REFERENCE_FREE_LOSSES)}")


class MediaPreferenceCollator:
    """trl's preference batches (chosen rows, then rejected rows) plus the processor's media tensors of a
    vision/audio model, for both halves (each example's media twice, in batch order)."""

    def __init__(self, pad_token_id: int, media: MediaEncoder) -> None:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        self.base = DataCollatorForPreference(pad_token_id=pad_token_id)
        self.media = media

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{kind: f.get(MEDIA_COLUMNS[kind]) or [] for kind in KINDS} for f in features]
        batch = self.base([{k: f[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for f in features])
        batch.update(self.media.batch_features(rows + rows, batch["input_ids"]))
        return batch


def preference_trainer(cfg: Any, model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any = None, *,
                       ref_model: Any = None, callbacks: list | None = None, media: MediaEncoder | None = None) -> Any:
    """The trl trainer for ``cfg.finetuning.pref_loss``, with Tunery's callbacks and optimizer choices.

    ``media`` (a vision/audio model's processor): DPO batches carry the media tensors (the collator);
    orpo/simpo add them at each forward pass (trl's ORPO/CPO collators keep only ids)."""
    ft = cfg.finetuning
    trainer_cls, args = trainer_parts(ft, cfg.training, cfg.data.cutoff_len)
    if media is not None:
        extra_collator = {"data_collator": MediaPreferenceCollator(tokenizer.pad_token_id or 0, media)}
    else:
        extra_collator = {}
    if train_dataset is not None:
        train_dataset = to_pairwise_columns(train_dataset)
    if eval_dataset is not None:
        eval_dataset = to_pairwise_columns(eval_dataset)
    extra = {"ref_model": ref_model, **extra_collator} if ft.pref_loss in DPO_LOSSES else {}
    trainer = build_trainer(cfg, model, tokenizer, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            trainer_cls=trainer_cls, args=args, callbacks=callbacks, **extra)
    if ft.pref_loss in DPO_LOSSES and ref_model is None:
        drop_reference_adapter(trainer.model)
    if ft.pref_loss in REFERENCE_FREE_LOSSES:
        trainer.media = media
    return trainer


PLOT_KEYS = ("loss", "eval_loss", "rewards/accuracies", "rewards/margins")


class PreferenceStage:
    """dpo / orpo / simpo (the objective is ``pref_loss``; orpo and simpo set it themselves)."""

    plot_keys = PLOT_KEYS

    def __init__(self, name: str) -> None:
        self.name = name
        self.media: MediaEncoder | None = None

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        self.media = media_encoder(cfg)
        return get_dataset(cfg, tokenizer, template, self.name, media=self.media)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the policy (and the reference when the loss needs one), build the trl trainer."""
        ft = cfg.finetuning
        args = cfg.training
        model = load_model(tokenizer, cfg.model, ft, is_trainable=bool(args.do_train), training_args=args)
        ref_model = None if ft.pref_loss in REFERENCE_FREE_LOSSES else load_reference_model(cfg, tokenizer, model)
        return preference_trainer(cfg, model, tokenizer, data.train_dataset if args.do_train else None,
                                  data.eval_dataset, ref_model=ref_model, callbacks=callbacks,
                                  media=getattr(self, "media", None))
