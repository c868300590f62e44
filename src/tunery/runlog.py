"""The run log ``trainer_log.jsonl``: one JSON object a line, the progress of a training or prediction run.

This module is its only owner: training callbacks, batch prediction and the web UI append, read
and trim it through these functions, so the file name and the field names live in one place.

Fields (LLaMA-Factory's names): ``current_steps``, ``total_steps``, ``percentage`` (0-100),
``elapsed_time`` and ``remaining_time`` ("H:MM:SS"); training adds ``loss``, ``eval_loss``,
``lr``, ``epoch``, ``throughput`` (non-padding tokens/s), ``total_tokens`` and any other number
the trainer logs (``grad_norm``, ``rewards/chosen``...); prediction and evaluation add ``stage``
(``"predict"`` / ``"eval"``) and count samples or questions as steps.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tunery.logging import format_seconds

LOG_FILE = "trainer_log.jsonl"
# Fields every row has, whoever writes it.
PROGRESS_FIELDS = ("current_steps", "total_steps", "percentage", "elapsed_time", "remaining_time")
# Fields a training row adds.
TRAIN_FIELDS = ("loss", "eval_loss", "lr", "epoch", "throughput", "total_tokens")


def log_path(output_dir: str | os.PathLike) -> str:
    """``output_dir/trainer_log.jsonl``."""
    return os.path.join(os.fspath(output_dir), LOG_FILE)


def progress_record(done: int, total: int, elapsed: float) -> dict[str, Any]:
    """The common fields for ``done`` of ``total`` steps after ``elapsed`` seconds (remaining time extrapolated)."""
    remaining = elapsed / done * (total - done) if done > 0 else 0.0
    return {
        "current_steps": done,
        "total_steps": total,
        "percentage": round(100 * done / total, 2) if total else 0.0,
        "elapsed_time": format_seconds(elapsed),
        "remaining_time": format_seconds(remaining),
    }


def append(output_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Add one row (creating the folder and the file when needed)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(log_path(output_dir), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete row, in order; empty when there is no log. A line that is not JSON (the half-written
    last line of a run still writing) is skipped."""
    path = log_path(output_dir)
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def trim(output_dir: str | os.PathLike, last_step: int) -> None:
    """Drop rows logged after ``last_step``: a run resumed from that checkpoint logs those steps again."""
    rows = read(output_dir)
    kept = [r for r in rows if r.get("current_steps", 0) <= last_step]
    if len(kept) != len(rows):
        with open(log_path(output_dir), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)


def remove(output_dir: str | os.PathLike) -> None:
    """Delete the log (a fresh run must not append to an older run's rows)."""
    path = log_path(output_dir)
    if os.path.isfile(path):
        os.unlink(path)


class ProgressWriter:
    """Appends a progress row (``stage`` named) each time it is called with the number of items done.

    Batch prediction and evaluation use it, so the web UI and scripts follow them like training.
    """

    def __init__(self, output_dir: str | os.PathLike, total: int, stage: str) -> None:
        self.output_dir, self.total, self.stage = output_dir, total, stage
        self.start = time.perf_counter()

    def __call__(self, done: int) -> None:
        row = progress_record(done, self.total, time.perf_counter() - self.start)
        append(self.output_dir, {**row, "stage": self.stage})
