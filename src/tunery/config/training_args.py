"""transformers' training arguments, plus the few names LLaMA-Factory configs still use.

transformers 5 dropped ``overwrite_output_dir``, ``logging_dir``, ``no_cuda`` and
``include_tokens_per_second`` and ``warmup_ratio``; LLaMA-Factory YAMLs still carry them, so they are accepted here and
given their meaning by Tunery (``overwrite_output_dir`` guards finished runs, see train.outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import Seq2SeqTrainingArguments


@dataclass
class TrainingArguments(Seq2SeqTrainingArguments):
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that holds a finished run."}
    )
    logging_dir: str | None = field(default=None, metadata={"help": "TensorBoard log folder (default: output_dir/runs).", "domain": "a path"})
    no_cuda: bool = field(default=False, metadata={"help": "Old name of use_cpu."})
    include_tokens_per_second: bool = field(default=False, metadata={"help": "Accepted for compatibility; throughput is always logged."})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "Share of the steps spent warming up (same as a float warmup_steps < 1).", "min": 0, "max": 1}
    )

    # One setting, one owner: `use_cache` is the model group's (KV cache while generating, LLaMA-Factory's
    # meaning). Training runs without a KV cache, as transformers' default; init=False keeps the field
    # (the Trainer reads it) but takes it out of the settings the parser routes and --help lists.
    use_cache: bool = field(default=False, init=False, metadata={"help": "KV cache while training (always off)."})

    def __post_init__(self) -> None:
        if self.no_cuda or (_launched_on_several_processes() and not _has_accelerator()):
            # accelerate joins a CPU process group (gloo) only when told the run is on the CPU
            self.use_cpu = True
        if self.warmup_ratio and not self.warmup_steps:
            self.warmup_steps = float(self.warmup_ratio)
        super().__post_init__()


def _launched_on_several_processes() -> bool:
    """torchrun / accelerate launch / deepspeed started this process as one of several."""
    return bool(os.environ.get("LOCAL_RANK")) and os.environ.get("WORLD_SIZE", "1") not in ("", "1")


def _has_accelerator() -> bool:
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "is_available"):
        return bool(accel.is_available())
    return torch.cuda.is_available()
