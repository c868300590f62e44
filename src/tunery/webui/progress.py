"""A run's progress for the web UI, from its run log (``tunery.runlog``, trainer_log.jsonl)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunery import runlog


@dataclass
class Progress:
    current: int = 0
    total: int = 0
    percentage: float = 0.0
    elapsed: str = ""
    remaining: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        if not self.total:
            return "0%"
        return f"{self.current}/{self.total} ({self.percentage:.0f}%) · {self.elapsed} elapsed · {self.remaining} left"


def read_progress(output_dir: str | Path) -> Progress:
    """Parse every complete line of the log; a half-written last line is ignored."""
    progress = Progress()
    for entry in runlog.read(output_dir):
        step = int(entry.get("current_steps", 0))
        progress.current = max(progress.current, step)
        progress.total = int(entry.get("total_steps", progress.total) or progress.total)
        progress.percentage = float(entry.get("percentage", progress.percentage) or 0.0)
        progress.elapsed = str(entry.get("elapsed_time", progress.elapsed))
        progress.remaining = str(entry.get("remaining_time", progress.remaining))
        if entry.get("loss") is not None:
            progress.losses.append((step, float(entry["loss"])))
        if entry.get("eval_loss") is not None:
            progress.eval_losses.append((step, float(entry["eval_loss"])))
    if progress.total and progress.current >= progress.total:
        progress.percentage = 100.0
    return progress


def loss_table(progress: Progress):
    """A DataFrame for gr.LinePlot: step, loss, series (train/eval)."""
    import pandas as pd

    rows = [{"step": s, "loss": v, "series": "train"} for s, v in progress.losses]
    rows += [{"step": s, "loss": v, "series": "eval"} for s, v in progress.eval_losses]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def progress_html(percentage: float, label: str = "") -> str:
    """A read-only progress bar (HTML, ARIA progressbar) filled to ``percentage`` (0-100), caption ``label``."""
    pct = max(0.0, min(100.0, float(percentage or 0.0)))
    caption = label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f"<div class='tunery-progress' role='progressbar' aria-valuemin='0' aria-valuemax='100' "
        f"aria-valuenow='{pct:.0f}' style='width:100%'>"
        f"<div style='height:14px;border-radius:7px;background:var(--neutral-200,#e5e7eb);overflow:hidden'>"
        f"<div style='height:100%;width:{pct:.1f}%;background:var(--color-accent,#f97316)'></div></div>"
        f"<div style='font-size:0.85em;margin-top:2px'>{pct:.0f}% {caption}</div></div>"
    )
