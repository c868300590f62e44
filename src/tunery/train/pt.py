"""Stage ``pt``: continued pre-training on plain text (packed by default), same loop as sft."""

from __future__ import annotations

from typing import Any

from tunery.train.loop import TrainOutcome
from tunery.train.sft import run_causal_lm


def run(cfg: Any, tokenizer: Any, template: Any, callbacks: list | None = None) -> TrainOutcome:
    return run_causal_lm(cfg, tokenizer, template, "pt", callbacks)
