"""Multiple-choice benchmark settings (LLaMA-Factory's `tunery eval` names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PATH = "a path, checked when it is opened"


@dataclass
class EvaluationArguments:
    task: str | None = field(
        default=None, metadata={"help": "Task and split, e.g. mmlu_test, ceval_validation, or a local folder.",
                  "domain": "a task name or folder, read before the model loads"}
    )
    task_dir: str = field(default="evaluation", metadata={"help": "Folder holding the task folders.", "domain": PATH})
    batch_size: int = field(default=4, metadata={"help": "Questions per forward pass.", "min": 1})
    seed: int = field(default=42, metadata={"help": "Seed for reproducible shots.", "min": 0})
    lang: Literal["en", "zh"] = field(default="en", metadata={"help": "Prompt language."})
    n_shot: int = field(default=5, metadata={"help": "Examples shown before each question.", "min": 0})
    save_dir: str | None = field(default=None, metadata={"help": "Where results.json and results.log go.", "domain": PATH})
    download_mode: str = field(
        default="reuse_dataset_if_exists",
        metadata={"help": "Hub download mode.",
                  "choices": ("reuse_dataset_if_exists", "reuse_cache_if_exists", "force_redownload")},
    )
    split: str | None = field(
        default=None,
        metadata={"help": "Split to evaluate (overrides the task suffix).", "choices": ("test", "validation", "val", "dev")},
    )
    harness_tasks: str | None = field(
        default=None, metadata={"help": "lm-evaluation-harness tasks to run too, comma separated.",
                          "domain": "lm-eval task names, checked by lm-eval"}
    )
