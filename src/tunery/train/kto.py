"""Stage ``kto``: Kahneman-Tversky optimisation on replies tagged desirable or not (``kto_tag``).

trl's KTOTrainer, fed with Tunery's token ids (prompt + one reply + label). The KL baseline pairs
each prompt with another example's reply in the same batch, as trl does; the reference is the base
with the LoRA adapter off, or ``ref_model``, or a frozen copy for full/freeze.

A vision/audio-language model trains the same way: the media sit in the prompt (encoded through the
model's processor), so a KL pair keeps its prompt's media and only borrows the reply, as in
LLaMA-Factory. trl's own vision path re-tokenizes raw text in its collator; Tunery's ids are final,
so the batches come from :class:`MediaKTOCollator` (trl's unpaired collator plus the media tensors)
and trl's trainer passes those tensors to the model for the policy, the KL pairs and the reference.
"""

from __future__ import annotations

from typing import Any

import torch

from tunery.data import DatasetModule, get_dataset
from tunery.data.media import KINDS, MediaEncoder
from tunery.logging import get_logger
from tunery.model.loader import load_model
from tunery.train.media import media_encoder
from tunery.train.pref_common import (
    MEDIA_COLUMNS,
    drop_reference_adapter,
    load_reference_model,
    to_kto_columns,
    trl_config,
)
from tunery.train.trainer import build_trainer

logger = get_logger(__name__)

PLOT_KEYS = ("loss", "eval_loss", "rewards/margins", "kl")


def with_kl_completions(dataset: Any, batch_size: int) -> Any:
    """Add ``KL_completion_ids``: each batch's replies rotated by one, so every prompt gets a foreign reply."""
    def rotate(batch: dict[str, list]) -> dict[str, list]:
        replies = batch["completion_ids"]
        return {"KL_completion_ids": replies[-1:] + replies[:-1]}

    return dataset.map(rotate, batched=True, batch_size=batch_size)


class MediaKTOCollator:
    """trl's unpaired-preference batches (prompt + reply, and prompt + the KL reply) plus the processor's
    media tensors of a vision/audio model: each example's media once, shared by its row and its KL row
    (both start with the same prompt, so the media tokens match); the KL rows get their own media
    token types (Qwen-VL's 3-D rope, Gemma 3's image attention), as trl's vision collator does."""

    def __init__(self, pad_token_id: int, media: MediaEncoder, max_length: int | None = None) -> None:
        from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

        # max_length cuts only a KL row's borrowed reply: every prompt fits cutoff_len with all its media tokens
        self.base = DataCollatorForUnpairedPreference(pad_token_id=pad_token_id, max_length=max_length)
        self.media = media

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{kind: f.get(MEDIA_COLUMNS[kind]) or [] for kind in KINDS} for f in features]
        keys = [k for k in ("prompt_ids", "completion_ids", "KL_completion_ids", "label") if k in features[0]]
        batch = self.base([{k: f[k] for k in keys} for f in features])
        if "KL_input_ids" in batch:
            # one width for both halves: media inputs that follow token positions (mllama's cross-attention
            # mask) are built once and fit the KL rows, which share each prompt and so its media positions
            width = max(batch["input_ids"].shape[1], batch["KL_input_ids"].shape[1])
            for prefix in ("", "KL_"):
                for key, value in (("input_ids", self.base.pad_token_id), ("attention_mask", 0),
                                   ("completion_mask", 0)):
                    tensor = batch[prefix + key]
                    batch[prefix + key] = torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)
        batch.update(self.media.batch_features(rows, batch["input_ids"]))
        if "KL_input_ids" in batch:
            kl = self.media.batch_features(rows, batch["KL_input_ids"])
            for key in ("mm_token_type_ids", "token_type_ids"):
                if key in kl:
                    batch[f"KL_{key}"] = kl[key]
        return batch


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
                ref_model: Any = None, callbacks: list | None = None, media: MediaEncoder | None = None) -> Any:
    """trl's KTOTrainer fed Tunery's ids; the reference is ``ref_model`` or the base with the adapter off.

    ``media`` (a vision/audio model's processor): batches carry each example's media tensors."""
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
    extra = {}
    if media is not None:
        # media columns renamed first: trl takes a dataset with an "images" column for raw text to tokenize
        train_dataset = to_kto_columns(train_dataset) if train_dataset is not None else None
        eval_dataset = to_kto_columns(eval_dataset) if eval_dataset is not None else None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra["data_collator"] = MediaKTOCollator(pad, media, cfg.data.cutoff_len)
    trainer = build_trainer(cfg, model, tokenizer, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            trainer_cls=_trainer_cls(), args=args, callbacks=callbacks, ref_model=ref_model, **extra)
    if ref_model is None:
        drop_reference_adapter(trainer.model)
    return trainer


class KTOStage:
    """kto: replies tagged desirable or not (``kto_tag``)."""

    name = "kto"
    plot_keys = PLOT_KEYS

    def __init__(self) -> None:
        self.media: MediaEncoder | None = None

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        self.media = media_encoder(cfg)
        return get_dataset(cfg, tokenizer, template, self.name, media=self.media)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the policy and its reference, build the KTOTrainer."""
        args = cfg.training
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=bool(args.do_train), training_args=args)
        ref_model = load_reference_model(cfg, tokenizer, model)
        return kto_trainer(cfg, model, tokenizer, data.train_dataset if args.do_train else None, data.eval_dataset,
                           ref_model=ref_model, callbacks=callbacks, media=getattr(self, "media", None))
