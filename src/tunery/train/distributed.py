"""What a training run needs to know about its processes, when a launcher started several.

torchrun, ``accelerate launch``, ``deepspeed`` and Ray Train set RANK/WORLD_SIZE and transformers'
Trainer joins the process group (accelerate's PartialState); this module only reads them:
who is the global main process (the one that writes outputs), and two small collectives over
torch.distributed (share the main process's decision, agree on a number).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from tunery.config.validation import fsdp_requested as fsdp_in_settings


def _group_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True in the global rank-0 process (and in a single-process run)."""
    if _group_ready():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") in ("", "0")


def world_size() -> int:
    """Processes in the run (1 when not distributed)."""
    if _group_ready():
        return dist.get_world_size()
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def join_group(training_args: Any) -> None:
    """Join the run's process group now when several processes run (transformers does it lazily,
    on first use of ``training_args.device``; the output-dir decision is shared before that)."""
    if world_size() > 1:
        _ = training_args.device


def share_from_main(value: Any, training_args: Any) -> Any:
    """``value`` as the main process has it, in every process (a picklable object)."""
    if world_size() <= 1:
        return value
    join_group(training_args)
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_over_processes(value: int, device: Any = None) -> int:
    """The largest ``value`` any process holds, in every process (an all-reduce of one number).

    ``device``: where the collective's tensor lives (the training device; a GPU for NCCL)."""
    if not _group_ready():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


@contextmanager
def main_process_first(training_args: Any, desc: str):
    """The global main process runs the block first, the others after it (e.g. they read the
    dataset cache it wrote); a plain block in a single-process run."""
    if world_size() <= 1:
        yield
        return
    join_group(training_args)
    with training_args.main_process_first(local=False, desc=desc):
        yield


def describe_engine(trainer: Any) -> str:
    """How the trainer spreads the work: ``DDP``, ``DeepSpeed ZeRO-2``, ``FSDP2``... (``single process``)."""
    state = getattr(getattr(trainer, "accelerator", None), "state", None)
    kind = str(getattr(getattr(state, "distributed_type", None), "value", "NO"))
    if kind == "DEEPSPEED":
        stage = getattr(getattr(state, "deepspeed_plugin", None), "zero_stage", None)
        return f"DeepSpeed ZeRO-{stage}" if stage is not None else "DeepSpeed"
    if kind == "FSDP":
        version = getattr(getattr(state, "fsdp_plugin", None), "fsdp_version", 1)
        return "FSDP2" if version == 2 else "FSDP"
    if kind.startswith("MULTI_"):
        return "DDP"
    return "single process"


def fsdp_requested(training_args: Any) -> bool:
    """FSDP asked for: ``fsdp`` in the training settings, or an accelerate FSDP config (accelerate launch)."""
    return fsdp_in_settings(getattr(training_args, "fsdp", None))


def ray_worker_resources(training: Any, gpus_visible: bool) -> dict[str, Any]:
    """The Ray resources each worker of a ``use_ray`` run takes: ``resources_per_worker``, or by default
    one GPU when ``gpus_visible`` (LLaMA-Factory: always ``{GPU: 1}``), else one CPU."""
    return dict(training.resources_per_worker or ({"GPU": 1} if gpus_visible else {"CPU": 1}))
