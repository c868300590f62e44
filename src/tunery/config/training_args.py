"""transformers' training arguments, plus the few names LLaMA-Factory configs still use.

transformers 5 dropped ``overwrite_output_dir``, ``logging_dir``, ``no_cuda`` and
``include_tokens_per_second`` and ``warmup_ratio``; LLaMA-Factory YAMLs still carry them, so they are accepted here and
given their meaning by Tunery (``overwrite_output_dir`` guards finished runs, see train.outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

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

    # Ray Train (LLaMA-Factory's RayArguments; tunery.train.ray_train runs them through TorchTrainer)
    use_ray: bool = field(
        default=False, metadata={"help": "Train on a Ray cluster through Ray Train (USE_RAY=1 in the environment also turns it on, as in LLaMA-Factory)."}
    )
    ray_num_workers: int = field(default=1, metadata={"help": "Ray Train workers (training processes).", "min": 1})
    resources_per_worker: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Ray resources each worker takes, e.g. {GPU: 1} or {CPU: 2} (default: one GPU when torch sees one, else one CPU).",
                  "domain": "a mapping of Ray resource names to amounts"},
    )
    placement_strategy: str = field(
        default="PACK", metadata={"help": "How Ray places the workers on the cluster's nodes.",
                                  "choices": ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")}
    )
    ray_run_name: str | None = field(default=None, metadata={"help": "Name of the Ray Train run (its folder under ray_storage_path).", "domain": "a folder name"})
    ray_storage_path: str = field(
        default="./saves", metadata={"help": "Where Ray Train keeps the run's state (a local folder, or a bucket path with ray_storage_filesystem).", "domain": "a path"}
    )
    ray_storage_filesystem: str | None = field(
        default=None, metadata={"help": "Cloud file system for ray_storage_path.", "choices": ("s3", "gs", "gcs")}
    )
    ray_init_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Keyword arguments for ray.init (e.g. {address: auto} to join a running cluster).",
                                "domain": "a mapping of ray.init arguments"}
    )

    # FP8 mixed precision (LLaMA-Factory's FP8 settings), through accelerate: tunery.train.trainer sets
    # mixed_precision "fp8" and the backend's recipe on whichever args object a stage trains with.
    fp8: bool = field(
        default=False,
        metadata={"help": "FP8 mixed precision through accelerate (CUDA GPUs with FP8 matmuls: Hopper or newer); "
                          "keep bf16: true for the operations FP8 does not cover."},
    )
    fp8_backend: Literal["auto", "torchao", "te", "msamp"] = field(
        default="auto",
        metadata={"help": "FP8 library: torchao, te (Transformer Engine), msamp (MS-AMP), or auto (the first installed, "
                          "in that order)."},
    )
    fp8_enable_fsdp_float8_all_gather: bool = field(
        default=False, metadata={"help": "torchao FP8 under FSDP2: all-gather the weights in FP8 (half the traffic)."}
    )

    # One setting, one owner: `use_cache` is the model group's (KV cache while generating, LLaMA-Factory's
    # meaning). Training runs without a KV cache, as transformers' default; init=False keeps the field
    # (the Trainer reads it) but takes it out of the settings the parser routes and --help lists.
    use_cache: bool = field(default=False, init=False, metadata={"help": "KV cache while training (always off)."})

    def __post_init__(self) -> None:
        if self.no_cuda or (_launched_on_several_processes() and not _has_accelerator()):
            # accelerate joins a CPU process group (gloo) only when told the run is on the CPU
            self.use_cpu = True
        if os.environ.get("USE_RAY", "").strip().lower() in ("1", "true", "yes", "y", "on"):
            self.use_ray = True
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
