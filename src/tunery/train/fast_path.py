"""Tunery's fast path for causal-LM training (pt, sft): same loss, less work, less memory.

On by default for pt/sft (``fast_path: false`` turns it off). Three levers, each measured in
``bench/train_sft.py``, each owned elsewhere; this module only switches them on together:

1. **Padding-free batches** (``tunery.data.collator``): the examples of one step are concatenated
   into a single row without pad tokens, ``position_ids`` restarting at 0 for every example.
   :func:`fast_trainer_parts` asks for them; ``tunery.data.get_collator`` decides (packed rows win).
2. **Attention kept inside each example** (``tunery.model.attention``): the ``tunery_packed_sdpa``
   kernel attends per example of a packed row instead of over a block-diagonal ``T x T`` mask.
3. **A memory-lean loss over the vocabulary** (``tunery.train.losses``): head + cross-entropy in
   chunks, only for labelled positions.

Gradient checkpointing is a separate switch (``disable_gradient_checkpointing``); with the levers
above the activations of a 4 x 512 batch of SmolLM2 fit easily, so the demo and bench turn it off.
"""

from __future__ import annotations

from typing import Any

import torch

from tunery.model.attention import enable_packed_attention
from tunery.train.losses import with_fast_loss

FAST_PATH_STAGES = ("pt", "sft")


def fast_path_enabled(cfg: Any) -> bool:
    """Whether a run takes the fast loss and packed attention: on by default for pt/sft.

    Off with ``fast_path: false``, for the other stages (their losses are not token CE) and with
    ``use_unsloth`` (Unsloth's model brings its own attention, loss and checkpointing).
    """
    finetuning = cfg.finetuning
    if getattr(getattr(cfg, "model", None), "use_unsloth", False):
        return False
    return bool(getattr(finetuning, "fast_path", True)) and finetuning.stage in FAST_PATH_STAGES


def padding_free_applies(cfg: Any) -> bool:
    """The fast path wants padding-free batches unless prediction needs left-padded batches for
    generation (rows the data pipeline already packs stay packed: ``get_collator`` decides)."""
    training = getattr(cfg, "training", None)
    return fast_path_enabled(cfg) and not (training is not None and getattr(training, "predict_with_generate", False))


def fast_trainer_parts(cfg: Any, model: torch.nn.Module, trainer_cls: type) -> tuple[type, bool]:
    """The hook for the pt/sft trainer: ``(trainer class, padding-free batches wanted)``.

    With the fast path on, the model attends per packed example and the trainer class gets the
    chunked loss; the boolean goes to ``tunery.data.get_collator(..., padding_free=)``. Call it after
    the model is prepared and before the trainer is built. Off: ``(trainer_cls, False)`` unchanged.
    """
    if not fast_path_enabled(cfg):
        return trainer_cls, False
    if getattr(cfg.model, "shift_attn", False):
        # S^2-Attn groups the positions of a row: examples concatenated into one row would share
        # groups, so batches stay padded and the model keeps the shift short attention.
        return with_fast_loss(trainer_cls), False
    enable_packed_attention(model)
    return with_fast_loss(trainer_cls), padding_free_applies(cfg)
