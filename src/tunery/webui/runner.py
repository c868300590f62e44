"""Start, watch and abort CLI runs in subprocesses, one run per output folder.

The UI writes the run's YAML to ``<output_dir>/training_args.yaml`` (the trainer later rewrites it
with the fully resolved settings) and runs ``tunery <command> that.yaml``, so the same run can be
repeated from a terminal. A lock file in the output folder refuses a second run into it, also from
another UI or terminal session. Abort sends SIGTERM: the trainer saves a checkpoint and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunery.errors import ResourceError
from tunery.webui.config_builder import to_yaml

LOCK_NAME = ".tunery_webui.lock"
LOG_NAME = "running_log.txt"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass
class Run:
    command: str
    output_dir: Path
    process: subprocess.Popen
    aborted: bool = False

    @property
    def log_path(self) -> Path:
        return self.output_dir / LOG_NAME

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


class RunManager:
    """Owns the subprocesses the UI started."""

    def __init__(self) -> None:
        self._runs: dict[Path, Run] = {}
        self._lock = threading.Lock()

    def start(self, command: str, config: dict[str, Any], output_dir: str | os.PathLike,
              config_name: str = "training_args.yaml") -> Run:
        out = Path(output_dir).resolve()
        with self._lock:
            lock = out / LOCK_NAME
            if lock.is_file():
                pid = int(lock.read_text().strip() or 0)
                if pid and _pid_alive(pid):
                    raise ResourceError(f"a run (pid {pid}) is already writing to {out}",
                                        hint="wait for it, abort it, or choose another output folder")
            out.mkdir(parents=True, exist_ok=True)
            config_path = out / config_name
            config_path.write_text(to_yaml(config), encoding="utf-8")
            log = open(out / LOG_NAME, "w", encoding="utf-8")  # noqa: SIM115 - the child process owns it
            process = subprocess.Popen(
                [sys.executable, "-m", "tunery", command, str(config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            log.close()
            lock.write_text(str(process.pid))
            run = Run(command, out, process)
            self._runs[out] = run
            threading.Thread(target=self._release_when_done, args=(run,), daemon=True).start()
            return run

    def _release_when_done(self, run: Run) -> None:
        run.process.wait()
        (run.output_dir / LOCK_NAME).unlink(missing_ok=True)

    def get(self, output_dir: str | os.PathLike) -> Run | None:
        return self._runs.get(Path(output_dir).resolve())

    def abort(self, output_dir: str | os.PathLike, timeout: float = 120.0) -> Run | None:
        """SIGTERM the run (it saves a checkpoint), wait for it; kill only if it hangs."""
        run = self.get(output_dir)
        if run is None or not run.running:
            return run
        run.aborted = True
        run.process.send_signal(signal.SIGTERM)
        try:
            run.process.wait(timeout)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
        return run
