"""Multiple-choice benchmark settings (LLaMA-Factory's `tunery eval` names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class EvaluationArguments:
    task: str | None = field(
        default=None, metadata={"help": "Task and split, e.g. mmlu_test, ceval_validation, or a local folder."}
    )
    task_dir: str = field(default="evaluation", metadata={"help": "Folder holding the task folders."})
    batch_size: int = field(default=4, metadata={"help": "Questions per forward pass."})
    seed: int = field(default=42, metadata={"help": "Seed for reproducible shots."})
    lang: Literal["en", "zh"] = field(default="en", metadata={"help": "Prompt language."})
    n_shot: int = field(default=5, metadata={"help": "Examples shown before each question."})
    save_dir: str | None = field(default=None, metadata={"help": "Where results.json and results.log go."})
    download_mode: str = field(default="reuse_dataset_if_exists", metadata={"help": "Hub download mode."})
    split: str | None = field(default=None, metadata={"help": "Split to evaluate (overrides the task suffix)."})
    harness_tasks: str | None = field(
        default=None, metadata={"help": "lm-evaluation-harness tasks to run too, comma separated."}
    )
