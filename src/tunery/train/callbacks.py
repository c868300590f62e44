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
from transformers.trainer_callback import PrinterCallback, ProgressCallback

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


# Keys the readable line shows in its own words (or not at all: per-session speed figures).
_LINE_SKIP = {"loss", "eval_loss", "learning_rate", "epoch", "grad_norm", *_DROPPED, "train_samples_per_second",
              "train_steps_per_second", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
              "num_input_tokens_seen"}


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def log_line(logs: dict[str, Any], step: int, total: int, seconds_per_step: float | None = None,
             remaining: float | None = None, first_step: int = 0) -> str:
    """One readable line for a Trainer log (what the terminal shows instead of a dict of strings).

    ``step 10/40  epoch 0.25  loss 1.234  lr 9.0e-05  3.2 s/step  eta 0:01:40`` for a training log,
    ``eval step 10/40  eval_loss 1.1`` for an evaluation, ``done  40 steps in 0:02:10  train_loss 1.3``
    for the final summary; other numbers (rewards/chosen, ...) follow as ``name value``.
    ``seconds_per_step`` / ``remaining`` (seconds) are left out when None. ``first_step``: the step a
    resumed session started from; the summary then names the steps it trained
    (``done  steps 3-4 (resumed after step 2) in 0:00:09  train_loss 2.7 over these steps``: the
    Trainer's train_loss covers this session; train_results.json holds the whole run's).
    """
    if "train_loss" in logs:
        runtime = format_seconds(logs.get("train_runtime", 0.0))
        if 0 < first_step < step:
            return (f"done  steps {first_step + 1}-{step} (resumed after step {first_step}) in {runtime}  "
                    f"train_loss {_num(logs['train_loss'])} over these steps")
        return f"done  {step} steps in {runtime}  train_loss {_num(logs['train_loss'])}"
    evaluating = "eval_loss" in logs and "loss" not in logs
    parts = [f"{'eval step' if evaluating else 'step'} {step}/{total}" if total else f"step {step}"]
    if "epoch" in logs and not evaluating:
        parts.append(f"epoch {logs['epoch']:.2f}")
    if logs.get("loss") is not None:
        parts.append(f"loss {logs['loss']:.4f}" if isinstance(logs["loss"], float) else f"loss {logs['loss']}")
    if logs.get("eval_loss") is not None:
        parts.append(f"eval_loss {_num(logs['eval_loss'])}")
    if isinstance(logs.get("learning_rate"), (int, float)):
        parts.append(f"lr {logs['learning_rate']:.1e}")
    for key, value in logs.items():
        if key not in _LINE_SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key} {_num(value)}")
    if not evaluating and seconds_per_step is not None:
        parts.append(f"{seconds_per_step:.2f} s/step" if seconds_per_step < 10 else f"{seconds_per_step:.0f} s/step")
    if not evaluating and remaining is not None:
        parts.append(f"eta {format_seconds(remaining)}")
    return "  ".join(parts)


class _Pace:
    """Seconds per step and time left since this session's first step (resumed runs count from there)."""

    def start(self, state: Any) -> None:
        self.start_time, self.start_step = time.time(), state.global_step

    def figures(self, state: Any) -> tuple[float | None, float | None]:
        done = state.global_step - getattr(self, "start_step", 0)
        if done <= 0 or not getattr(self, "start_time", 0):
            return None, None
        per_step = (time.time() - self.start_time) / done
        return per_step, per_step * max((state.max_steps or 0) - state.global_step, 0)


class ReadableProgressCallback(ProgressCallback):
    """transformers' progress bar, with each log written as :func:`log_line` instead of a dict."""

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.pace = _Pace()
        self.pace.start(state)
        return super().on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero and self.training_bar is not None and logs:
            pace = getattr(self, "pace", None)
            per_step, remaining = pace.figures(state) if pace else (None, None)
            self.training_bar.write(log_line(logs, state.global_step, state.max_steps, per_step, remaining,
                                             getattr(pace, "start_step", 0)))


class ReadablePrinterCallback(PrinterCallback):
    """``disable_tqdm: true``: one :func:`log_line` per log on stdout instead of a printed dict."""

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.pace = _Pace()
        self.pace.start(state)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if state.is_local_process_zero and logs:
            pace = getattr(self, "pace", None)
            per_step, remaining = pace.figures(state) if pace else (None, None)
            print(log_line(logs, state.global_step, state.max_steps, per_step, remaining,
                           getattr(pace, "start_step", 0)), flush=True)


def use_readable_logs(trainer: Any) -> Any:
    """Swap the Trainer's own log printer (progress bar or plain printer) for the readable one; returns ``trainer``."""
    for plain, readable in ((ProgressCallback, ReadableProgressCallback), (PrinterCallback, ReadablePrinterCallback)):
        if trainer.pop_callback(plain) is not None:
            trainer.add_callback(readable)
    return trainer


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
