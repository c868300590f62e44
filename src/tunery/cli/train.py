"""``tunery train``: the dry-run plan, or training and/or evaluation, then prediction when asked.

``--do_predict`` is composed here: the train workflow runs, ``point_at_trained_model`` makes the
config name what it saved, and the prediction workflow runs on that (train/ and inference/ do not
import each other).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from tunery.cli import launch, options
from tunery.errors import TuneryError

DRY_RUN_NOTE = "dry run: nothing was trained (drop --dry_run to train)"


def main(tokens: list[str]) -> int:
    """``tunery train [config.yaml] [--key value | key=value ...]``.

    The config is checked here first (one error, before any process starts); then, on a machine
    with more than one accelerator, with FORCE_TORCHRUN=1 or with a ``deepspeed`` config, the same
    command runs again under torchrun (see :mod:`tunery.cli.launch`), unless a launcher already
    started this process; with ``use_ray`` Ray Train starts the training processes instead.
    """
    cfg = options.load("train", tokens)
    if not cfg.finetuning.dry_run:
        launch.check_fsdp_here(cfg.training.fsdp, cfg.model.quantization_bit)  # before any process starts
        plan = launch.plan_launch(deepspeed=bool(cfg.training.deepspeed), ray=bool(cfg.training.use_ray))
        if plan is not None:
            return relaunch(plan, tokens)
    return run(cfg)


def relaunch(plan: launch.LaunchPlan, tokens: list[str]) -> int:
    """Run ``tunery train <tokens>`` under torchrun with ``plan``; the exit code is the run's: 0, 0 after
    a clean SIGTERM/SIGINT stop, a worker's user error printed once with its code (2), else torchrun's."""
    command = launch.torchrun_command(plan, tokens)
    print(f"tunery: starting {plan.nproc_per_node} training process(es) on node {plan.node_rank} of "
          f"{plan.nnodes} ({plan.world_size} in all), rendezvous at {plan.master_addr}:{plan.master_port}\n"
          f"  {' '.join(command)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tunery-launch-") as folder:
        code = launch.run_torchrun(command, launch.worker_env(dict(os.environ), folder, plan))
        failures = launch.read_failures(folder)
        stops = launch.read_stops(folder)
    if failures:
        first = failures[0]
        others = f" ({len(failures) - 1} other process(es) failed too)" if len(failures) > 1 else ""
        err = TuneryError(f"[rank {first['rank']}] {first['message']}{others}")
        err.exit_code = int(first.get("exit_code", 2))
        raise err
    if stops and code != 0:
        return 0  # torchrun itself got the signal and reports it; the workers stopped cleanly
    return code


def run(cfg: Any) -> int:
    """Everything ``tunery train`` does with a parsed RunConfig; returns the exit code (0 also after a
    clean SIGTERM/SIGINT stop, which skips prediction)."""
    # training imports torch, transformers and trl (seconds); --help must not pay for them
    from tunery.train import workflow
    from tunery.train.dry_run import build_plan

    workflow.resolve_actions(cfg)
    if cfg.finetuning.dry_run:
        print("\n".join([*build_plan(cfg).lines(), DRY_RUN_NOTE]))
        return 0
    if cfg.training.use_ray:
        # Ray Train imports ray (an optional extra, seconds); only a use_ray run needs it
        from tunery.train.ray_train import run_train_on_ray

        run_train_on_ray(cfg)  # the workers train; this process waits and reports
        if cfg.training.do_predict:
            predict_after_training(cfg)
        return 0
    outcome = workflow.run_train(cfg)
    if getattr(outcome, "stopped_by", None):
        launch.record_stop(outcome.stopped_by, outcome.checkpoint)
        return 0
    if cfg.training.do_predict and os.environ.get("RANK", "0") in ("", "0"):
        predict_after_training(cfg)  # one process generates; in a multi-process run that is rank 0
    return 0


def predict_after_training(cfg: Any) -> dict[str, float]:
    """``--do_predict``: batch generation over the eval data, with the model just trained if any."""
    # prediction imports torch and transformers (seconds); --help must not pay for them
    from tunery.inference.predict import run_predict
    from tunery.train.workflow import point_at_trained_model

    if cfg.training.do_train:
        point_at_trained_model(cfg)
    cfg.training.predict_with_generate = True
    return run_predict(cfg)
