"""Start, watch and abort CLI runs in subprocesses, one run per output folder.

The UI writes the run's YAML to ``<output_dir>/training_args.yaml`` (the trainer later rewrites it
with the fully resolved settings) and runs ``tunery <command> that.yaml``, so the same run can be
repeated from a terminal. Before anything is written, the output folder is checked (paths.check_free):
a folder locked by a live run, holding a finished run or files the command did not write, or not
writable is refused. A lock file in the output folder refuses a second run into it, also from
another UI session. Abort sends SIGTERM: the trainer saves a checkpoint and exits.
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
from tunery.webui.paths import LOCK_NAME, RUN_LOG_NAME, Workspace, check_free

LOG_NAME = RUN_LOG_NAME


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

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace  # when set, output folders must lie inside it
        self._runs: dict[Path, Run] = {}
        self._lock = threading.Lock()

    def start(self, command: str, config: dict[str, Any], output_dir: str | os.PathLike,
              config_name: str = "training_args.yaml") -> Run:
        """Check ``output_dir`` (see paths.check_free), then write the YAML and start ``tunery <command>``.

        Nothing is written when the folder is refused (ResourceError/ConfigError).
        """
        with self._lock:
            if self.workspace is not None:
                out = self.workspace.output_dir(output_dir, command)
            else:
                out = Path(output_dir).resolve()
                check_free(out, command)
            out.mkdir(parents=True, exist_ok=True)
            lock = out / LOCK_NAME
            lock.unlink(missing_ok=True)  # stale: check_free found no live owner
            try:  # claim the folder before writing: another UI process may be checking it too
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError as exc:
                raise ResourceError(f"another run just claimed {out}", hint="choose another output folder") from exc
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            try:
                config_path = out / config_name
                config_path.write_text(to_yaml(config), encoding="utf-8")
                log = open(out / LOG_NAME, "w", encoding="utf-8")  # noqa: SIM115 - the child process owns it
                process = subprocess.Popen(
                    [sys.executable, "-m", "tunery", command, str(config_path)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    cwd=self.workspace.root if self.workspace is not None else None,
                )
                log.close()
            except BaseException:
                lock.unlink(missing_ok=True)
                raise
            lock.write_text(str(process.pid))
            run = Run(command, out, process)
            self._runs[out] = run
            threading.Thread(target=self._release_when_done, args=(run,), daemon=True).start()
            return run

    def _release_when_done(self, run: Run) -> None:
        run.process.wait()
        (run.output_dir / LOCK_NAME).unlink(missing_ok=True)

    def get(self, output_dir: str | os.PathLike) -> Run | None:
        root = self.workspace.root if self.workspace is not None else Path.cwd()
        return self._runs.get((root / output_dir).resolve()) if str(output_dir).strip() else None

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
