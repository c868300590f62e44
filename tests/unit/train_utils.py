"""Helpers for the training tests: a small tokenized dataset and a config for a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea and the sky.",
]


def tokenized_dataset(tokenizer: Any, repeat: int = 4) -> Any:
    """Rows of input_ids/attention_mask/labels; the first 3 tokens are prompt (label -100)."""
    from datasets import Dataset

    rows = []
    for text in TEXTS * repeat:
        ids = tokenizer(text)["input_ids"]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * 3 + ids[3:]})
    return Dataset.from_list(rows)


def train_config(model_path: Path, output_dir: Path, **overrides: Any) -> Any:
    from tunery.config import parse_config

    raw = {
        "model_name_or_path": str(model_path), "output_dir": str(output_dir), "do_train": True,
        "finetuning_type": "lora", "max_steps": 8, "learning_rate": 1e-2, "per_device_train_batch_size": 4,
        "logging_steps": 1, "save_steps": 1000, "report_to": "none", "disable_gradient_checkpointing": True,
        "seed": 7, "dataloader_num_workers": 0, "disable_tqdm": True,
    }
    raw.update(overrides)
    return parse_config("train", raw)


def run_tiny_training(cfg: Any, dataset: Any = None, callbacks: list | None = None, eval_dataset: Any = None,
                      fingerprint: str | None = None) -> Any:
    """Load the model for ``cfg``, build the trainer and fit; returns (outcome, trainer).

    ``fingerprint``: passed to the output-dir rules, as ``tunery train`` does (see settings_fingerprint).
    """
    from transformers import DataCollatorForSeq2Seq

    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.loop import fit
    from tunery.train.outputs import prepare_output_dir
    from tunery.train.trainer import build_trainer

    tokenizer = load_tokenizer(cfg.model)
    prepare_output_dir(cfg.training, fingerprint=fingerprint)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    trainer = build_trainer(
        cfg, model, tokenizer, train_dataset=dataset if dataset is not None else tokenized_dataset(tokenizer),
        eval_dataset=eval_dataset, data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        callbacks=callbacks,
    )
    return fit(trainer, cfg), trainer


def logged_losses(output_dir: Path) -> dict[int, float]:
    from tunery.runlog import read as read_log

    return {r["current_steps"]: r["loss"] for r in read_log(str(output_dir)) if r.get("loss") is not None}
