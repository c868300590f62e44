"""SIGTERM/SIGINT end a run cleanly: the current step finishes, a checkpoint is saved, training stops.

transformers' ``enable_jit_checkpoint`` covers SIGTERM only, waits a fixed grace period and saves
from inside the optimizer step through a private method; here the signal only sets a flag and
the Trainer's own save path writes the checkpoint at the end of the step, so nothing is ever
saved half-way through an update. A second signal gives up waiting (KeyboardInterrupt); the same
signal repeated within ``REPEAT_WINDOW`` seconds counts once (a scheduler that signals every process
of a job while torchrun forwards it too).

In a multi-process run every process must stop after the same step (they all save their part of
the checkpoint and meet in the same collectives), but a signal may reach them on either side of a
step's end: at each step's end the processes agree through one all-reduce, so one signalled process
stops them all at that step.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from transformers import TrainerCallback

from tunery.logging import get_logger
from tunery.train.distributed import max_over_processes, world_size

logger = get_logger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT)
REPEAT_WINDOW = 2.0  # seconds


class StopOnSignal(TrainerCallback):
    """Turn SIGTERM/SIGINT into 'save a checkpoint after this step, then stop'."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._received_at = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return  # signal handlers can only be set from the main thread
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            if signum == self.received and time.monotonic() - self._received_at < REPEAT_WINDOW:
                return  # the same signal delivered twice (scheduler + torchrun): one request
            self.uninstall()
            raise KeyboardInterrupt
        self.received = signum
        self._received_at = time.monotonic()
        logger.warning(
            "%s received: finishing this step, saving a checkpoint, then stopping (send it again to abort now)",
            signal.Signals(signum).name,
        )

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.install()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        received = self.received or 0
        if world_size() > 1:
            received = max_over_processes(received, device=args.device)
        if received:
            self.received = received  # also in a process that was not signalled: it stops with the others
            control.should_log = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.uninstall()
