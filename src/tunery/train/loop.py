"""Run a built trainer to the end (or to a signal) and write the outputs: shared by every stage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tunery.logging import get_logger
from tunery.train.callbacks import LogCallback
from tunery.train.outputs import save_model, save_results
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
    stopper = find_callback(trainer, StopOnSignal)
    if stopper is None:
        stopper = StopOnSignal()
        trainer.add_callback(stopper)
    return stopper


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
    """
    args = trainer.args
    outcome = TrainOutcome(output_dir=args.output_dir)
    stopper = ensure_standard_callbacks(trainer)
    if args.do_train:
        stopper.install()  # before train(): a signal during data loading must also stop cleanly
        try:
            result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        finally:
            stopper.uninstall()
        if stopper.received is not None:
            outcome.stopped_by = stopper.signal_name
            outcome.checkpoint = f"{args.output_dir}/checkpoint-{trainer.state.global_step}"
            logger.warning(
                "stopped by %s at step %d; checkpoint saved to %s. Run the same command again to resume.",
                outcome.stopped_by, trainer.state.global_step, outcome.checkpoint,
            )
            return outcome
        save_model(trainer, cfg)
        outcome.train_metrics = dict(result.metrics)
    if args.do_eval and trainer.eval_dataset is not None:
        outcome.eval_metrics = evaluate(trainer)
    if args.do_train:
        save_results(trainer, cfg, outcome.train_metrics, plot_keys)
        logger.info("training finished: outputs in %s", args.output_dir)
    return outcome
