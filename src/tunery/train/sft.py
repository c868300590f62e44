"""Stage ``sft``: supervised fine-tuning on chat data, through transformers' Trainer.

Why not trl's SFTTrainer: Tunery's data pipeline already renders the template and masks the
prompt, which is most of what SFTTrainer adds; on a CPU its extras (an entropy/accuracy head every
step, bf16 and checkpointing defaults) cost time for nothing (see NOTES.md). Pre-training (``pt``)
is the same loop on plain text, so it reuses :func:`run_causal_lm`.
"""

from __future__ import annotations

from typing import Any

from tunery.logging import get_logger
from tunery.train.loop import TrainOutcome, fit

logger = get_logger(__name__)


def trainer_parts(cfg: Any, model: Any, tokenizer: Any, stage: str) -> tuple[type, Any]:
    """(trainer class, data collator) for a causal-LM stage: the one place a faster loss or a
    padding-free collator plugs in."""
    from transformers import Trainer

    from tunery.data import get_collator
    from tunery.train.fast_path import fast_trainer_parts

    trainer_cls, collator = fast_trainer_parts(cfg, model, Trainer)  # fast_path: true (the default)
    return trainer_cls, collator or get_collator(stage, tokenizer, cfg)


def run_causal_lm(cfg: Any, tokenizer: Any, template: Any, stage: str, callbacks: list | None = None) -> TrainOutcome:
    """Load data and model for ``stage`` (pt or sft), train, and write the outputs."""
    from tunery.data import get_dataset
    from tunery.model.loader import load_model
    from tunery.train.trainer import build_trainer

    data = get_dataset(cfg, tokenizer, template, stage)
    args = cfg.training
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=bool(args.do_train), training_args=args)
    trainer_cls, collator = trainer_parts(cfg, model, tokenizer, stage)
    trainer = build_trainer(
        cfg, model, tokenizer, train_dataset=data.train_dataset if args.do_train else None,
        eval_dataset=data.eval_dataset, data_collator=collator, trainer_cls=trainer_cls, callbacks=callbacks,
    )
    return fit(trainer, cfg)


def run(cfg: Any, tokenizer: Any, template: Any, callbacks: list | None = None) -> TrainOutcome:
    return run_causal_lm(cfg, tokenizer, template, "sft", callbacks)
