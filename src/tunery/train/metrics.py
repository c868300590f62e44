"""Evaluation metrics computed by the Trainer during ``eval``: sft's token accuracy (``compute_accuracy``).

Only the argmax token ids leave each evaluation step (:func:`argmax_logits`), not the full
``[batch, length, vocab]`` logits, so the accumulated predictions stay small.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tunery.data import IGNORE_INDEX


def argmax_logits(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """The Trainer's ``preprocess_logits_for_metrics``: ``[batch, length, vocab]`` logits -> ``[batch, length]`` ids."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled tokens whose next-token prediction is right (0..1; 0.0 when nothing is labelled).

    ``predictions[i, t]`` is the model's choice for token ``t + 1`` of row ``i``; rows are compared
    shifted by one, positions labelled ``IGNORE_INDEX`` (prompt, padding) do not count. Every labelled
    token weighs the same (LLaMA-Factory averages per example first).
    """
    predictions, labels = np.asarray(predictions)[:, :-1], np.asarray(labels)[:, 1:]
    mask = labels != IGNORE_INDEX
    total = int(mask.sum())
    return float((predictions[mask] == labels[mask]).sum() / total) if total else 0.0


def compute_token_accuracy(eval_prediction: Any) -> dict[str, float]:
    """The Trainer's ``compute_metrics`` for ``compute_accuracy: true``: ``{"accuracy": ...}`` (logged as eval_accuracy)."""
    predictions = eval_prediction.predictions
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return {"accuracy": token_accuracy(predictions, eval_prediction.label_ids)}
