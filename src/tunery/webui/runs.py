"""Past runs under the save root: the run list, their loss curves, and the adapter/checkpoint picker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunery.runlog import LOG_FILE as TRAINER_LOG
from tunery.webui.paths import LOCK_NAME, inside, lock_owner
from tunery.webui.progress import Progress, read_progress

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_RUN_MARKERS = ("training_args.yaml", TRAINER_LOG, "adapter_config.json", "train_results.json", LOCK_NAME)


@dataclass
class RunInfo:
    path: Path
    status: str  # "finished", "running" or "stopped"
    progress: Progress

    @property
    def last_loss(self) -> float | None:
        return self.progress.losses[-1][1] if self.progress.losses else None


def is_run_folder(folder: Path) -> bool:
    """A folder a training run wrote into (its config, log, results or a checkpoint)."""
    if not folder.is_dir():
        return False
    return any((folder / m).exists() for m in _RUN_MARKERS) or bool(_checkpoints(folder))


def run_folders(save_root: Path, extra: tuple[str | Path, ...] = ()) -> list[Path]:
    """Run folders directly under ``save_root`` plus the ``extra`` ones (e.g. the form's output folder),
    newest first; symlinks leading out of ``save_root`` are skipped."""
    found: dict[Path, None] = {}
    if save_root.is_dir():
        for child in save_root.iterdir():
            if inside(child, save_root) and is_run_folder(child):
                found[child.resolve()] = None
    for path in extra:
        folder = Path(path).resolve()
        if is_run_folder(folder):
            found[folder] = None
    return sorted(found, key=_mtime, reverse=True)


def run_info(folder: Path) -> RunInfo:
    if (folder / "train_results.json").is_file():
        status = "finished"
    elif lock_owner(folder):
        status = "running"
    else:
        status = "stopped"
    return RunInfo(folder, status, read_progress(folder))


def adapter_choices(folders: list[Path], root: Path) -> list[str]:
    """Loadable adapters: each run folder holding ``adapter_config.json`` and each of its saved checkpoints,
    as paths relative to ``root`` when inside it."""
    choices = []
    for folder in folders:
        if (folder / "adapter_config.json").is_file():
            choices.append(display_path(folder, root))
        for _, ckpt in reversed(_checkpoints(folder)):
            if (ckpt / "adapter_config.json").is_file():
                choices.append(display_path(ckpt, root))
    return choices


def runs_table(infos: list[RunInfo], root: Path) -> list[list]:
    """Rows ``[folder, status, "step/total", last loss]`` for a gr.Dataframe."""
    rows = []
    for info in infos:
        steps = f"{info.progress.current}/{info.progress.total}" if info.progress.total else ""
        loss = round(info.last_loss, 4) if info.last_loss is not None else None
        rows.append([display_path(info.path, root), info.status, steps, loss])
    return rows


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    try:
        children = list(folder.iterdir())
    except OSError:
        return []
    return sorted((int(m.group(1)), p) for p in children if p.is_dir() and (m := _CHECKPOINT.match(p.name)))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
