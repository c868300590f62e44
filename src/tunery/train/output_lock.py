"""One run per output_dir: a lock file, and a check that the folder can be written at all.

The lock is ``output_dir/.tunery.lock``, a small JSON file ``{"pid", "host", "start"}`` created
atomically (``O_CREAT | O_EXCL``). A lock whose process is gone is stale and taken over: on the
same host the pid must be alive and, where ``/proc`` exists, have the start time recorded in the
file (a recycled pid is not mistaken for the run). A lock written on another host (a shared file
system) cannot be checked and is respected. ``tunery train`` takes it for the whole run; the web UI
takes it before it starts a run and hands it to the child process (:meth:`OutputLock.handover`),
which then finds its own pid in the file and proceeds.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from tunery.errors import ConfigError, ResourceError

LOCK_FILE = ".tunery.lock"


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: process id, host name and the process start time (clock ticks, or None)."""

    pid: int
    host: str
    start: int | None = None


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may contain spaces and ')'
    try:
        return int(fields[19])  # field 22 of stat; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (also one of another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just is not ours
    return True


def _holder_alive(info: LockInfo) -> bool:
    if info.host != socket.gethostname():
        return True  # cannot be checked from here: respect it
    if not pid_alive(info.pid):
        return False
    start = process_start(info.pid)
    return info.start is None or start is None or start == info.start


def _read(path: Path) -> LockInfo | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError:
        return LockInfo(pid=-1, host="")
    try:
        data = json.loads(text)
        if isinstance(data, int):  # a bare pid, as older web UI locks were written
            return LockInfo(pid=data, host=socket.gethostname())
        return LockInfo(pid=int(data["pid"]), host=str(data.get("host", "")), start=data.get("start"))
    except (ValueError, KeyError, TypeError):
        return LockInfo(pid=-1, host=socket.gethostname())  # unreadable: treated as stale


def _payload(pid: int) -> str:
    return json.dumps({"pid": pid, "host": socket.gethostname(), "start": process_start(pid)})


def lock_holder(output_dir: str | os.PathLike) -> LockInfo | None:
    """The live holder of ``output_dir``'s lock, or None (a stale lock file is removed)."""
    path = Path(output_dir) / LOCK_FILE
    info = _read(path)
    if info is None:
        return None
    if _holder_alive(info):
        return info
    path.unlink(missing_ok=True)
    return None


class OutputLock:
    """A held lock on one output_dir; release it when the run ends (also a context manager)."""

    def __init__(self, output_dir: Path, pid: int) -> None:
        self.output_dir = output_dir
        self.path = output_dir / LOCK_FILE
        self.pid = pid

    def handover(self, pid: int) -> None:
        """Give the lock to process ``pid`` (the web UI's child run), which may then acquire it itself."""
        self.path.write_text(_payload(pid), encoding="utf-8")
        self.pid = pid

    def release(self) -> None:
        """Remove the lock file if it still names this lock's process."""
        info = _read(self.path)
        if info is not None and info.pid == self.pid:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_output_lock(output_dir: str | os.PathLike, pid: int | None = None) -> OutputLock:
    """Lock ``output_dir`` (it must exist) for process ``pid`` (default: this one).

    A lock that already names ``pid`` is accepted (the web UI handed it over). Raises
    :class:`ResourceError` (exit 2) when another live process holds it.
    """
    out = Path(output_dir)
    pid = os.getpid() if pid is None else pid
    path = out / LOCK_FILE
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(out)
            if holder is None:
                continue  # it was stale and is gone now: try again
            if holder.pid == pid and holder.host == socket.gethostname():
                return OutputLock(out, pid)
            raise ResourceError(
                f"output_dir {out} is in use by another Tunery run (pid {holder.pid} on {holder.host}); "
                "wait for it to end or choose another output_dir"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_payload(pid))
        return OutputLock(out, pid)
    raise ResourceError(f"could not lock output_dir {out}: its lock file keeps changing")


def ensure_writable_dir(path: str | os.PathLike, setting: str = "output_dir") -> Path:
    """Create ``path`` if needed and prove a file can be written in it, before any loading.

    Raises :class:`ConfigError` (exit 2) naming the setting when it is a file, lies under a file,
    cannot be created, or is read-only; :class:`ResourceError` when the disk is full.
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".tunery_write_test_{uuid.uuid4().hex}"
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(f"{setting} {out} cannot be written: {reason}",
                                hint="free disk space or choose an output_dir on another disk") from None
        if out.exists() and not out.is_dir():
            reason = "it is a file, not a folder"
        raise ConfigError(f"{setting} {out} cannot be used as an output folder: {reason}",
                          hint="choose an output_dir you can write to") from None
    return out
