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

from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.train.pref_common import (
    drop_reference_adapter,
    load_reference_model,
    to_pairwise_columns,
    trl_config,
)

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
        labels = [-100] * len(prompt) + list(feature[f"{side}_ids"])
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
        """ORPO/CPO trainer fed with Tunery's token ids instead of text."""

        def tokenize_row(self, feature, model=None):  # noqa: ANN001
            return _legacy_row(feature, self.max_length)

    return TokenizedTrainer


def build_trainer(
    model: Any,
    tokenizer: Any,
    finetuning_args: Any,
    training_args: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    *,
    ref_model: Any = None,
    callbacks: list | None = None,
    max_length: int | None = None,
) -> Any:
    """The trl trainer for ``finetuning_args.pref_loss`` (sigmoid, hinge, ipo, orpo or simpo)."""
    loss = finetuning_args.pref_loss
    train_dataset = to_pairwise_columns(train_dataset)
    if eval_dataset is not None:
        eval_dataset = to_pairwise_columns(eval_dataset)
    common = {"max_length": max_length, "remove_unused_columns": False}
    if loss in DPO_LOSSES:
        from trl import DPOConfig

        loss_types = [loss]
        weights = [1.0]
        if finetuning_args.dpo_label_smoothing > 0:
            if loss != "sigmoid":
                raise ConfigError(f"dpo_label_smoothing works with pref_loss sigmoid, not {loss}")
            loss_types = ["robust"]  # trl's robust DPO is the sigmoid loss with label noise ε
        if finetuning_args.pref_ftx > 0:
            loss_types.append("sft")
            weights.append(finetuning_args.pref_ftx)
        args = trl_config(
            DPOConfig, training_args, beta=finetuning_args.pref_beta, loss_type=loss_types, loss_weights=weights,
            label_smoothing=finetuning_args.dpo_label_smoothing, **common,
        )
        trainer = _dpo_trainer_cls()(
            model=model, ref_model=ref_model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=tokenizer, callbacks=callbacks,
        )
        if ref_model is None:
            drop_reference_adapter(trainer.model)
        return trainer
    if loss in REFERENCE_FREE_LOSSES:
        if loss == "orpo":
            from trl.experimental.orpo import ORPOConfig

            args = trl_config(ORPOConfig, training_args, beta=finetuning_args.pref_beta, **common)
        else:
            from trl.experimental.cpo import CPOConfig

            args = trl_config(
                CPOConfig, training_args, loss_type="simpo", beta=finetuning_args.pref_beta,
                simpo_gamma=finetuning_args.simpo_gamma, cpo_alpha=finetuning_args.pref_ftx, **common,
            )
        return _reference_free_trainer_cls(loss)(
            model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=tokenizer, callbacks=callbacks,
        )
    if loss == "kto_pair":
        raise ConfigError("pref_loss kto_pair was removed from trl", hint="use stage: kto with a kto_tag dataset")
    raise ConfigError(f"unknown pref_loss '{loss}'", hint=f"use one of {', '.join(DPO_LOSSES + REFERENCE_FREE_LOSSES)}")


def run(cfg: Any, tokenizer: Any, template: Any, callbacks: list | None = None) -> None:
    """Train with dpo/orpo/simpo on ``cfg``'s pairwise datasets and write sft's outputs."""
    from tunery.data import get_dataset
    from tunery.model.loader import load_model
    from tunery.train.pref_common import finish_training

    ft = cfg.finetuning
    data = get_dataset(cfg, tokenizer, template, "dpo")
    model = load_model(tokenizer, cfg.model, ft, is_trainable=True, training_args=cfg.training)
    ref_model = None if ft.pref_loss in REFERENCE_FREE_LOSSES else load_reference_model(cfg, tokenizer, model)
    trainer = build_trainer(
        model, tokenizer, ft, cfg.training, data.train_dataset, data.eval_dataset, ref_model=ref_model,
        callbacks=callbacks, max_length=cfg.data.cutoff_len,
    )
    finish_training(trainer, cfg)
