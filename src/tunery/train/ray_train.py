"""``use_ray: true``: the same training, run by Ray Train's TorchTrainer on a Ray cluster.

Tunery writes no process-group code here either: Ray starts ``ray_num_workers`` worker processes
(each with ``resources_per_worker``, placed by ``placement_strategy``), joins them in a torch
process group (gloo on CPUs, NCCL on GPUs) and sets RANK/LOCAL_RANK/WORLD_SIZE; each worker then
runs :func:`tunery.train.workflow.run_train` on the same settings, and transformers' Trainer uses
that process group for DDP (or DeepSpeed, with a ``deepspeed`` config) as under torchrun. Only the
global main worker writes outputs (see train/distributed.py).

The settings travel to the workers as the flat config (``cfg.raw``) and are parsed again there,
with the driver's working folder, so relative paths mean the same. ``ray_storage_path`` holds Ray
Train's own run state; the model, run log and checkpoints go to ``output_dir`` as without Ray.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tunery.config import parse_config
from tunery.errors import TuneryError, require
from tunery.logging import get_logger
from tunery.train.distributed import ray_worker_resources
from tunery.train.workflow import run_train

logger = get_logger(__name__)


def scaling_settings(training: Any, gpus_visible: bool) -> dict[str, Any]:
    """Keyword arguments of Ray's ``ScalingConfig`` for the run's training settings.

    ``resources_per_worker`` unset: one GPU per worker when ``gpus_visible``, else one CPU.
    A worker asking for a GPU trains on it (``use_gpu``)."""
    resources = ray_worker_resources(training, gpus_visible)
    use_gpu = float(resources.get("GPU", 0) or 0) > 0
    return {"num_workers": int(training.ray_num_workers), "use_gpu": use_gpu,
            "resources_per_worker": resources, "placement_strategy": str(training.placement_strategy).upper()}


def storage_settings(training: Any) -> dict[str, Any]:
    """Keyword arguments of Ray's ``RunConfig``: run name, storage path (absolute when local), file system."""
    settings: dict[str, Any] = {"name": training.ray_run_name}
    fs_name = training.ray_storage_filesystem
    if fs_name:
        import pyarrow.fs  # installed with ray[train]; only a cloud storage path needs it

        settings["storage_filesystem"] = pyarrow.fs.S3FileSystem() if fs_name == "s3" else pyarrow.fs.GcsFileSystem()
        settings["storage_path"] = training.ray_storage_path
    else:
        settings["storage_path"] = str(Path(training.ray_storage_path).expanduser().absolute())
    return settings


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: parse the driver's settings again and train (Ray set up the process group)."""
    os.chdir(loop_config["cwd"])
    cfg = parse_config("train", loop_config["raw"])
    cfg.training.use_ray = False  # this process trains; it starts no Ray run of its own
    try:
        run_train(cfg)
    except TuneryError as err:
        # travels back pickled: a plain TuneryError of the full text (hint included) survives that
        plain = TuneryError(str(err))
        plain.exit_code = err.exit_code
        raise plain from None


def run_train_on_ray(cfg: Any) -> None:
    """Train ``cfg`` (a RunConfig for 'train' with ``use_ray``) on Ray workers; returns when all finished.

    Starts a local Ray (``ray.init(**ray_init_kwargs)``) unless one is running in this process
    (pass ``ray_init_kwargs: {address: auto}`` to join a cluster), and shuts down what it started.
    Raises the first worker's TuneryError (user error, exit 2) when one failed with one, else
    Ray's ``TrainingFailedError``; ResourceError-like problems (not enough CPUs/GPUs for the
    workers) surface as Ray reports them.
    """
    ray = require("ray", "use_ray: true (Ray Train)", "ray")
    train_api = require("ray.train", "use_ray: true (Ray Train)", "ray")
    torch_api = require("ray.train.torch", "use_ray: true (Ray Train)", "ray")
    import torch  # already loaded by the training settings; asks whether this machine has GPUs

    t = cfg.training
    started = False
    if not ray.is_initialized():
        ray.init(**(t.ray_init_kwargs or {}))
        started = True
    try:
        scaling = scaling_settings(t, torch.cuda.is_available())
        logger.info("training on %d Ray workers (%s each)", scaling["num_workers"], scaling["resources_per_worker"])
        trainer = torch_api.TorchTrainer(
            train_worker,
            train_loop_config={"raw": dict(cfg.raw), "cwd": os.getcwd()},
            scaling_config=train_api.ScalingConfig(**scaling),
            run_config=train_api.RunConfig(**storage_settings(t)),
        )
        try:
            trainer.fit()
        except train_api.TrainingFailedError as exc:
            user_error = first_user_error(exc)
            if user_error is not None:
                raise user_error from None
            raise
    finally:
        if started:
            ray.shutdown()


def first_user_error(exc: BaseException) -> TuneryError | None:
    """The TuneryError a worker raised (lowest rank first), found in Ray's failure report, or None."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank in sorted(failures):
        found = _find_tunery_error(failures[rank])
        if found is not None:
            return TuneryError(f"[rank {rank}] {found.message}")
    return _find_tunery_error(getattr(exc, "controller_failure", None))


def _find_tunery_error(error: BaseException | None) -> TuneryError | None:
    """Walk an exception's causes (Ray wraps a worker's exception once or twice) for a TuneryError."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, TuneryError):
            return error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None
