"""Resume bookkeeping: what a checkpoint already covers, the schedule of a continued run, whole-run results.

Continuing a run (more ``max_steps`` or ``num_train_epochs``, or new data) resumes from a
checkpoint through transformers' Trainer: the weights, the optimizer state (Adam moments) and the
step count come from the checkpoint. The learning-rate schedule does not: the Trainer builds the
schedule of the new run (over the new total of steps, from the configured learning rate) and then
loads the old scheduler's state over it, which would leave the rate where the old schedule ended
(0 for a linear decay). :class:`ReplannedSchedule` puts the new plan back after loading, at the
checkpoint's step. For a plain resume (same settings) the new plan is the old one, so nothing
changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tunery.logging import get_logger

logger = get_logger(__name__)

STATE_FILE = "trainer_state.json"
RUN_STAMP = ".tunery_run.json"
# Settings that say how to treat output_dir or where to report, not what is trained: left out of the
# fingerprint (report_to also does not survive a save and reload unchanged: [] comes back as ['']).
_NOT_RUN_SETTINGS = ("overwrite_output_dir", "resume_from_checkpoint", "report_to", "logging_dir", "disable_tqdm")


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint or finished run as a dict ({} when absent or unreadable)."""
    path = Path(folder) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def settings_fingerprint(cfg: Any) -> str:
    """sha256 of the run's resolved settings, without the output_dir handling ones.

    The same command (or ``tunery train output_dir/training_args.yaml`` written from it) gives the
    same fingerprint, so an interrupted ``overwrite_output_dir: true`` run is recognised and resumed.
    """
    settings = {k: v for k, v in cfg.resolved().items() if k not in _NOT_RUN_SETTINGS}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_stamp(output_dir: str | os.PathLike) -> str | None:
    try:
        return json.loads((Path(output_dir) / RUN_STAMP).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def write_stamp(output_dir: str | os.PathLike, fingerprint: str) -> None:
    (Path(output_dir) / RUN_STAMP).write_text(json.dumps({"fingerprint": fingerprint}), encoding="utf-8")


def wants_more_than(training_args: Any, state: dict[str, Any]) -> bool:
    """Do these settings ask for more training than the run recorded in ``state`` did?

    ``max_steps > 0`` is compared with the steps done, otherwise ``num_train_epochs`` with the
    epochs done.
    """
    max_steps = getattr(training_args, "max_steps", -1) or -1
    if max_steps > 0:
        return max_steps > int(state.get("global_step", 0))
    return float(training_args.num_train_epochs) > float(state.get("epoch") or 0.0) + 1e-6


class CheckpointCoversRun(Exception):
    """Raised at the start of training when the resumed checkpoint already reached the run's last step."""

    def __init__(self, step: int, max_steps: int) -> None:
        self.step, self.max_steps = step, max_steps
        super().__init__(f"the checkpoint is at step {step}, the run has {max_steps} steps")


class StopIfCovered(TrainerCallback):
    """Train nothing when the resumed checkpoint already covers the run.

    transformers' loop checks ``max_steps`` only after a step, so resuming a checkpoint written at
    the last step (a run killed while saving its final model, or stopped by a signal in its last
    step) would train one step past ``max_steps``. At ``on_train_begin`` the checkpoint's weights,
    optimizer and state are loaded; raising here leaves them in place for the final outputs.
    """

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.global_step > 0 and state.max_steps > 0 and state.global_step >= state.max_steps:
            raise CheckpointCoversRun(state.global_step, state.max_steps)
        return control


def replan_schedule(optimizer: Any, scheduler: Any, planned: list[float]) -> bool:
    """Set the rates of a loaded LambdaLR schedule to the new plan at its current step.

    ``planned``: the base learning rates (one per parameter group) of the schedule built for this
    run, before the checkpoint's state was loaded over it. Returns False (leaving everything as
    loaded) for schedules that are not a per-step lambda of the base rate (e.g. reduce-on-plateau).
    """
    import torch

    scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) or len(planned) != len(optimizer.param_groups):
        return False
    step = scheduler.last_epoch
    scheduler.base_lrs = list(planned)
    rates = []
    for group, base, lr_lambda in zip(optimizer.param_groups, planned, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * lr_lambda(step)
        rates.append(group["lr"])
    scheduler._last_lr = rates  # what get_last_lr() reports; torch keeps it in this attribute
    return True


class ReplannedSchedule:
    """Trainer mixin: after loading a checkpoint's optimizer and scheduler, follow this run's schedule.

    The optimizer state (moments, step counts) stays as loaded; only the learning rates are set
    from the schedule the Trainer planned for this run (new total of steps, configured rate).
    """

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
        planned = list(getattr(scheduler, "base_lrs", []) or [])
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not planned or self.optimizer is None:
            return
        loaded = [g.get("initial_lr") for g in self.optimizer.param_groups]
        if replan_schedule(self.optimizer, self.lr_scheduler, planned) and loaded != planned:
            logger.info("learning-rate schedule re-planned for this run: %s from step %d",
                        self.args.lr_scheduler_type, self.state.global_step)


_REPLANNED: dict[type, type] = {}


def with_replanned_schedule(trainer_cls: type) -> type:
    """``trainer_cls`` with :class:`ReplannedSchedule` mixed in (one subclass per class, same name)."""
    if issubclass(trainer_cls, ReplannedSchedule):
        return trainer_cls
    if trainer_cls not in _REPLANNED:
        _REPLANNED[trainer_cls] = type(trainer_cls.__name__, (ReplannedSchedule, trainer_cls),
                                       {"__module__": trainer_cls.__module__,
                                        "__doc__": trainer_cls.__doc__})
    return _REPLANNED[trainer_cls]


def whole_run_loss(log_history: list[dict[str, Any]], start_step: int, session_loss: float | None,
                   global_step: int) -> float | None:
    """Mean training loss over every step of the run whose loss is known.

    ``log_history`` is the trainer state's (each ``loss`` entry averages the steps since the previous
    one); entries up to ``start_step`` come from before the resume. ``session_loss`` is the Trainer's
    ``train_loss`` for steps ``start_step+1 .. global_step`` (None when nothing was trained now).
    """
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        step = int(entry.get("step", 0))
        if "loss" not in entry or step > start_step:
            continue
        total += float(entry["loss"]) * (step - previous)
        steps += step - previous
        previous = step
    session_steps = global_step - start_step
    if session_loss is not None and session_steps > 0:
        total += float(session_loss) * session_steps
        steps += session_steps
    return total / steps if steps else None
