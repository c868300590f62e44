"""Training's rows of the run log (``tunery.runlog``, trainer_log.jsonl): one per logging step.

The field names are LLaMA-Factory's (current_steps, total_steps, loss, eval_loss, lr, epoch,
percentage, elapsed_time, remaining_time) plus throughput (non-padding tokens/s) and total_tokens.
Any other number the trainer logs (rewards/chosen for preference stages, grad_norm) is kept under
its own name, so a generic plot can draw it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from transformers import TrainerCallback

from tunery import runlog
from tunery.logging import format_seconds

# Trainer's final summary log carries train_loss; it goes to train_results.json instead.
_SUMMARY_KEYS = ("train_loss",)
_RENAMED = {"learning_rate": "lr", "num_input_tokens_seen": "total_tokens"}
# Per-session speed figures Trainer adds to each log when counting tokens: throughput replaces them.
_DROPPED = {"step", "total_flos", "train_tokens_per_second", "train_runtime"}


class LogCallback(TrainerCallback):
    """Append one line per ``on_log`` to ``output_dir/trainer_log.jsonl`` (main process only)."""

    def __init__(self) -> None:
        self.start_time = 0.0
        self.start_step = 0
        self.start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.start_time = time.time()
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        logs = logs or {}
        if not state.is_world_process_zero or any(k in logs for k in _SUMMARY_KEYS):
            return
        runlog.append(args.output_dir, self.record(state, logs))

    def record(self, state: Any, logs: dict[str, Any]) -> dict[str, Any]:
        elapsed = time.time() - self.start_time if self.start_time else 0.0
        done = state.global_step - self.start_step
        total = state.max_steps or 0
        remaining = elapsed / done * (total - state.global_step) if done > 0 else 0.0
        tokens = state.num_input_tokens_seen
        record: dict[str, Any] = {
            "current_steps": state.global_step,
            "total_steps": total,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"),
            "epoch": round(logs.get("epoch", state.epoch or 0.0), 4),
            "percentage": round(100 * state.global_step / total, 2) if total else 0.0,
            "elapsed_time": format_seconds(elapsed),
            "remaining_time": format_seconds(remaining),
            "throughput": round((tokens - self.start_tokens) / elapsed, 2) if elapsed > 0 else 0.0,
            "total_tokens": tokens,
        }
        for key, value in logs.items():
            name = _RENAMED.get(key, key)
            if name not in record and key not in _DROPPED and isinstance(value, (int, float)):
                record[name] = value
        return record


class SavePissaInit(TrainerCallback):
    """pissa_convert: keep the PiSSA starting adapter so the final one can be saved as plain LoRA."""

    FOLDER = "pissa_init"

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        path = os.path.join(args.output_dir, self.FOLDER)
        if state.is_world_process_zero and model is not None and not os.path.isdir(path):
            model.save_pretrained(path)


class LogLastStep(TrainerCallback):
    """Log the last step whatever ``logging_steps`` is, so every run has its final loss in the run log
    (and a loss plot): transformers logs only on multiples of ``logging_steps``, so ``max_steps: 4``
    with ``logging_steps: 10`` logged nothing. ``logging_strategy: no`` is respected. The Trainer logs
    a step once, so a last step that is also a logging step is not logged twice."""

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        strategy = getattr(args.logging_strategy, "value", args.logging_strategy)
        if strategy != "no" and state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control
