"""Loss plots (and any other logged key) from trainer_log.jsonl, as PNG files in output_dir."""

from __future__ import annotations

import math
import os
from typing import Any

from tunery import runlog
from tunery.logging import get_logger

logger = get_logger(__name__)


def smooth(values: list[float]) -> list[float]:
    """Exponential moving average whose weight grows with the number of points (flat for short runs)."""
    if not values:
        return []
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for value in values:
        last = weight * last + (1 - weight) * value
        out.append(last)
    return out


def plot_key(records: list[dict[str, Any]], key: str, output_dir: str) -> str | None:
    """Write ``training_<key>.png`` (raw and smoothed) and return its path, or None without data."""
    points = [(r["current_steps"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*points)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
    ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
    ax.set_title(f"training {key} of {output_dir}")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.legend()
    name = "training_" + key.replace("/", "_") + ".png"
    path = os.path.join(output_dir, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_run(output_dir: str, keys: tuple[str, ...] = ("loss", "eval_loss")) -> list[str]:
    """Plot each of ``keys`` found in the run's log; preference stages pass their reward keys."""
    records = runlog.read(output_dir)
    written = [p for p in (plot_key(records, k, output_dir) for k in keys) if p]
    for path in written:
        logger.info("plot written: %s", path)
    if not written:
        logger.warning("plot_loss: no plot written, the run logged no %s (logging_steps larger than the steps "
                       "trained?)", " or ".join(keys))
    return written
