"""Run a built trainer to the end (or to a signal) and write the outputs: shared by every stage."""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass, field
from typing import Any

from tunery.errors import ConfigError, ResourceError
from tunery.logging import get_logger
from tunery.train.callbacks import LogCallback, LogLastStep
from tunery.train.continue_run import CheckpointCoversRun, StopIfCovered, read_state, whole_run_loss
from tunery.train.distributed import describe_engine, fsdp_requested, is_main_process, world_size
from tunery.train.outputs import CONFIG_FILE, remove_incomplete_checkpoints, save_model, save_results
from tunery.train.signals import StopOnSignal

logger = get_logger(__name__)


@dataclass
class TrainOutcome:
    """What a stage returns: where things went, the metrics, and whether a signal cut it short."""

    output_dir: str
    train_metrics: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_by: str | None = None  # "SIGTERM"/"SIGINT" when interrupted (checkpoint saved)
    checkpoint: str | None = None


def find_callback(trainer: Any, cls: type) -> Any:
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, cls):
            return callback
    return None


def ensure_standard_callbacks(trainer: Any) -> StopOnSignal:
    """Every stage gets the log file and signal handling, whoever built its trainer."""
    if find_callback(trainer, LogCallback) is None:
        trainer.add_callback(LogCallback())
    if find_callback(trainer, LogLastStep) is None:
        trainer.add_callback(LogLastStep())
    stopper = find_callback(trainer, StopOnSignal)
    if stopper is None:
        stopper = StopOnSignal()
        trainer.add_callback(stopper)
    if find_callback(trainer, StopIfCovered) is None:
        trainer.add_callback(StopIfCovered())
    return stopper


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(exc: OSError, output_dir: str, what: str) -> ResourceError:
    """A full disk while writing ``what``: remove any half-written checkpoint, say so in one line."""
    remove_incomplete_checkpoints(output_dir)
    return ResourceError(
        f"no space left on the disk while writing {what} in {output_dir} ({exc.strerror or exc}); "
        "any half-written checkpoint was removed",
        hint="free disk space (or set save_total_limit to keep fewer checkpoints), then run the same command "
             "again to resume from the last complete checkpoint",
    )


def resume_command(cfg: Any, output_dir: str) -> str:
    """A command that resumes this run: the settings saved in output_dir (written if missing)."""
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.isfile(path) and is_main_process():
        cfg.save(path)
    return f"tunery train {path}"


def whole_run_metrics(trainer: Any, metrics: dict[str, Any], start_step: int, trained: bool) -> dict[str, Any]:
    """Train metrics of the whole run after a resume: ``train_loss`` over every logged step."""
    state = trainer.state
    if start_step > 0:
        session = metrics.get("train_loss") if trained else None
        loss = whole_run_loss(state.log_history, start_step, session, state.global_step)
        if loss is not None:
            metrics["train_loss"] = loss
        metrics["epoch"] = state.epoch
        metrics.setdefault("total_flos", state.total_flos)
    return metrics


def evaluate(trainer: Any) -> dict[str, Any]:
    metrics = trainer.evaluate(metric_key_prefix="eval")
    if "eval_loss" in metrics:
        try:
            metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
        except OverflowError:
            metrics["eval_perplexity"] = float("inf")
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def fit(trainer: Any, cfg: Any, plot_keys: tuple[str, ...] = ("loss", "eval_loss")) -> TrainOutcome:
    """Train (resuming from ``training.resume_from_checkpoint``), save model and results, evaluate.

    Call :func:`tunery.train.outputs.prepare_output_dir` first (the workflow does), which decides
    the checkpoint to resume from. On SIGTERM/SIGINT the trainer saves a checkpoint and this
    returns with ``stopped_by`` set, leaving no finished marker, so the same command resumes.
    A resumed checkpoint already at the last step trains nothing and only writes the final outputs;
    after a resume ``train_loss`` covers the whole run. A full disk raises ResourceError (exit 2)
    after removing the half-written checkpoint.
    """
    args = trainer.args
    outcome = TrainOutcome(output_dir=args.output_dir)
    stopper = ensure_standard_callbacks(trainer)
    engine = describe_engine(trainer)
    if fsdp_requested(args) and not engine.startswith("FSDP"):
        # accelerate shards with FSDP only on accelerators; elsewhere it silently trains whole copies
        raise ConfigError(
            f"FSDP was asked for (an accelerate FSDP config or the fsdp setting), but this run would train "
            f"with {engine}: accelerate runs FSDP only on GPUs and other accelerators",
            hint="run it on GPUs, or drop the FSDP config: FORCE_TORCHRUN=1 NPROC_PER_NODE=N tunery train "
                 "cfg.yaml trains with DDP (docs/distributed.md)",
        )
    if world_size() > 1:
        logger.info("training on %d processes with %s", world_size(), engine)
    if args.do_train:
        resume = args.resume_from_checkpoint
        start_step = int(read_state(resume).get("global_step", 0)) if isinstance(resume, str) else 0
        stopper.install()  # before train(): a signal during data loading must also stop cleanly
        result, covered = None, None
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        except CheckpointCoversRun as exc:
            covered = exc
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full_error(exc, args.output_dir, "a checkpoint") from None
            raise
        finally:
            stopper.uninstall()
        if stopper.received is not None:
            outcome.stopped_by = stopper.signal_name
            outcome.checkpoint = f"{args.output_dir}/checkpoint-{trainer.state.global_step}"
            logger.warning(
                "stopped by %s at step %d; checkpoint saved to %s. To resume, run the same command again, or: %s",
                outcome.stopped_by, trainer.state.global_step, outcome.checkpoint,
                resume_command(cfg, args.output_dir),
            )
            return outcome
        if covered is not None:
            if os.path.realpath(os.path.dirname(os.path.normpath(resume))) != os.path.realpath(args.output_dir):
                raise ConfigError(
                    f"resume_from_checkpoint {resume} is at step {covered.step}, which already covers this run "
                    f"({covered.max_steps} steps): nothing to train",
                    hint="raise max_steps or num_train_epochs above what the checkpoint has trained to continue it",
                )
            logger.info("%s already reached the last step (%d of %d): nothing left to train, writing the final "
                        "outputs", resume, covered.step, covered.max_steps)
        try:
            save_model(trainer, cfg)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full_error(exc, args.output_dir, "the final model") from None
            raise
        outcome.train_metrics = whole_run_metrics(
            trainer, dict(result.metrics) if result is not None else {}, start_step, trained=result is not None)
    if args.do_eval and trainer.eval_dataset is not None:
        outcome.eval_metrics = evaluate(trainer)
    if args.do_train:
        try:
            save_results(trainer, cfg, outcome.train_metrics, plot_keys)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full_error(exc, args.output_dir, "the results") from None
            raise
        logger.info("training finished: outputs in %s", args.output_dir)
    return outcome
