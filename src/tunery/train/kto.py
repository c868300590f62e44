"""Stage ``kto``: Kahneman-Tversky optimisation on replies tagged desirable or not (``kto_tag``).

trl's KTOTrainer, fed with Tunery's token ids (prompt + one reply + label). The KL baseline pairs
each prompt with another example's reply in the same batch, as trl does; the reference is the base
with the LoRA adapter off, or ``ref_model``, or a frozen copy for full/freeze.
"""

from __future__ import annotations

from typing import Any

from tunery.data import DatasetModule, get_dataset
from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.model.loader import load_model
from tunery.train.media import media_encoder
from tunery.train.pref_common import drop_reference_adapter, load_reference_model, to_kto_columns, trl_config
from tunery.train.trainer import build_trainer

logger = get_logger(__name__)

PLOT_KEYS = ("loss", "eval_loss", "rewards/margins", "kl")


def with_kl_completions(dataset: Any, batch_size: int) -> Any:
    """Add ``KL_completion_ids``: each batch's replies rotated by one, so every prompt gets a foreign reply."""
    def rotate(batch: dict[str, list]) -> dict[str, list]:
        replies = batch["completion_ids"]
        return {"KL_completion_ids": replies[-1:] + replies[:-1]}

    return dataset.map(rotate, batched=True, batch_size=batch_size)


def _trainer_cls() -> type:
    from trl import KTOTrainer

    class TokenizedKTOTrainer(KTOTrainer):
        """KTOTrainer fed with Tunery's token ids: dataset preparation only adds the KL pairing."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
            # trl re-tokenizes text with the tokenizer's own chat template; Tunery's ids are final.
            dataset = to_kto_columns(dataset)
            if self.calculate_KL:
                dataset = with_kl_completions(dataset, args.per_device_train_batch_size)
            return dataset

    return TokenizedKTOTrainer


def kto_trainer(cfg: Any, model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any = None, *,
                ref_model: Any = None, callbacks: list | None = None) -> Any:
    """trl's KTOTrainer fed Tunery's ids; the reference is ``ref_model`` or the base with the adapter off."""
    from trl import KTOConfig  # trl's import is slow; only kto runs pay it

    ft = cfg.finetuning
    args = trl_config(
        KTOConfig, cfg.training, beta=ft.pref_beta, desirable_weight=ft.kto_chosen_weight,
        undesirable_weight=ft.kto_rejected_weight, max_length=cfg.data.cutoff_len, remove_unused_columns=False,
        train_sampling_strategy="sequential",
    )
    if train_dataset is not None and not ft.disable_shuffling:
        # trl reads KTO data in order (the KL pairs are fixed per batch), so mix it once here.
        train_dataset = train_dataset.shuffle(seed=cfg.training.seed)
    trainer = build_trainer(cfg, model, tokenizer, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            trainer_cls=_trainer_cls(), args=args, callbacks=callbacks, ref_model=ref_model)
    if ref_model is None:
        drop_reference_adapter(trainer.model)
    return trainer


class KTOStage:
    """kto: replies tagged desirable or not (``kto_tag``)."""

    name = "kto"
    plot_keys = PLOT_KEYS

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        if media_encoder(cfg) is not None:  # the KL pairs would need each prompt's media with a foreign reply
            raise ConfigError("stage kto does not train on images, video or audio yet",
                              hint="train multimodal preference data with stage: dpo (ranked pairs)")
        return get_dataset(cfg, tokenizer, template, self.name)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the policy and its reference, build the KTOTrainer."""
        args = cfg.training
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=bool(args.do_train), training_args=args)
        ref_model = load_reference_model(cfg, tokenizer, model)
        return kto_trainer(cfg, model, tokenizer, data.train_dataset if args.do_train else None, data.eval_dataset,
                           ref_model=ref_model, callbacks=callbacks)
