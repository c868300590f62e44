"""Readable, single-format logging for every Tunery module."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

_CONFIGURED = False


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``tunery`` namespace, printing ``[tunery] message`` on stderr."""
    global _CONFIGURED
    if not _CONFIGURED:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        root = logging.getLogger("tunery")
        root.addHandler(handler)
        root.setLevel(os.environ.get("TUNERY_LOG_LEVEL", _default_level()).upper())
        root.propagate = False
        quiet_third_party()
        _CONFIGURED = True
    return logging.getLogger(name if name.startswith("tunery") else f"tunery.{name}")


def _default_level() -> str:
    """INFO, except in the replicas of a multi-process run (RANK > 0 under torchrun, accelerate, deepspeed
    or Ray): they print errors only, so every message appears once, from the main process."""
    return "INFO" if os.environ.get("RANK", "0") in ("", "0") else "ERROR"


@contextmanager
def quieted(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, logger ``name`` (a Tunery module's) passes only messages of ``level`` and above:
    for work that repeats what was already logged (the estimator rebuilding a weightless model, say)."""
    target = logging.getLogger(name)
    before = target.level
    target.setLevel(max(level, target.getEffectiveLevel()))
    try:
        yield
    finally:
        target.setLevel(before)


def quiet_third_party() -> None:
    """Silence library warnings that are noise on every run (not problems the user can act on)."""
    # bitsandbytes warns on import on AVX512-BF16 CPUs that an optional hub kernel is missing.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # DeepSpeed, imported by transformers whenever it is installed, announces on stdout that it found
    # no GPU ("Setting accelerator to CPU ..."), in every command on a CPU machine; `tunery env` says so.
    deepspeed = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _NoCpuAcceleratorNotice) for f in deepspeed.filters):
        deepspeed.addFilter(_NoCpuAcceleratorNotice())
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _NoCpuAcceleratorNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Setting accelerator to CPU")


# Libraries whose deprecation notices are about their own internals or the calls Tunery makes for
# the user: nothing the user can act on.
NOISY_LIBRARIES = ("transformers", "peft", "trl", "accelerate", "datasets", "huggingface_hub", "torch", "bitsandbytes")


def quiet_library_warnings() -> None:
    """Hide library deprecation noise from a command's output (called once by ``tunery``'s entry point).

    FutureWarning / DeprecationWarning raised inside :data:`NOISY_LIBRARIES`, and any FutureWarning
    that says something "is deprecated" or "will be removed" (libraries attribute some to their
    caller), are ignored. Other warnings still show. ``TUNERY_SHOW_WARNINGS=1`` keeps them all.
    Only the ``warnings`` filters of this process change; importing Tunery as a library changes nothing.
    """
    if os.environ.get("TUNERY_SHOW_WARNINGS", "").lower() in ("1", "true", "yes"):
        return
    modules = "|".join(NOISY_LIBRARIES)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=rf"({modules})(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"(?is).*(is deprecated|will be removed)")


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` (whole seconds, negative as 0) for the elapsed/remaining times of progress rows."""
    return str(timedelta(seconds=int(max(seconds, 0))))
