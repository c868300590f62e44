"""Where the web UI may read and write: every path typed into the browser is checked here first.

Anyone who reaches the port can type a path, so nothing is read or written outside:

- the workspace: the folder ``tunery webui`` was started in (datasets, outputs, runs);
- Tunery's packaged demo data (read only);
- the settings folder: ``$TUNERY_HOME/webui_settings`` or ``<workspace>/webui_settings``, by name only.

Paths are compared after resolving symlinks, so a link pointing out of a folder is refused too.
Refusals are :class:`ConfigError` / :class:`ResourceError` with a hint, shown in the UI as one line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tunery.errors import ConfigError, ResourceError
from tunery.runlog import LOG_FILE

LOCK_NAME = ".tunery_webui.lock"
RUN_LOG_NAME = "running_log.txt"
SETTINGS_SUFFIXES = (".yaml", ".yml")
_SETTINGS_NAME = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9_.\- \u4e00-\u9fff]{0,99}$")
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")

# What a run of each command leaves behind while it is unfinished (anything else is a foreign file),
# and the file that says it finished.
_OWN_FILES = {
    "train": {"training_args.yaml", LOG_FILE, "runs"},
    "predict": {"predict_args.yaml", "generated_predictions.jsonl"},
    "eval": {"eval_args.yaml"},
    "export": {"export_args.yaml"},
}
_FINISHED = {
    "train": "train_results.json",
    "predict": "predict_results.json",
    "eval": "results.json",
}


def demo_data_dir() -> Path:
    """The packaged demo datasets (``tunery/resources/demo_data``, with its dataset_info.json)."""
    return Path(str(resources.files("tunery").joinpath("resources", "demo_data"))).resolve()


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` (symlinks resolved) is ``root`` or lies under it."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    return resolved == base or base in resolved.parents


@dataclass
class Workspace:
    """The folders the web UI may use. ``root`` defaults to the current directory."""

    root: Path = field(default_factory=Path.cwd)
    settings_dir: Path | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if self.settings_dir is None:
            home = os.environ.get("TUNERY_HOME")
            self.settings_dir = Path(home) / "webui_settings" if home else self.root / "webui_settings"
        self.settings_dir = Path(self.settings_dir).resolve()

    @property
    def save_root(self) -> Path:
        """Where runs go by default and where the run list and adapter picker look."""
        return self.root / "saves"

    def default_dataset_dir(self) -> tuple[str, bool]:
        """``("data", False)`` when ``<root>/data`` exists, else the packaged demo data and True."""
        if (self.root / "data").is_dir():
            return "data", False
        return str(demo_data_dir()), True

    # ----- reading ---------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike, what: str, extra_roots: tuple[Path, ...] = ()) -> Path:
        """``path`` (relative to the workspace) resolved, or ConfigError when it leaves the allowed roots."""
        text = str(path).strip()
        if not text:
            raise ConfigError(f"{what} is empty", hint="type a folder inside the workspace")
        if "\x00" in text:
            raise ConfigError(f"{what} '{text}' is not a valid path")
        candidate = (self.root / text).resolve()  # an absolute `text` replaces root
        for base in (self.root, *extra_roots):
            if inside(candidate, base):
                return candidate
        raise ConfigError(
            f"{what} '{text}' is outside the web UI's workspace {self.root}",
            hint="use a folder inside it (start `tunery webui` from the folder that holds your data and runs)",
        )

    def dataset_dir(self, path: str | os.PathLike) -> Path:
        """The dataset folder: inside the workspace or the packaged demo data."""
        folder = self.resolve(path or "data", "dataset folder", extra_roots=(demo_data_dir(),))
        if not folder.is_dir():
            raise ConfigError(f"dataset folder '{path}' does not exist", hint="choose a folder with dataset_info.json")
        return folder

    def check_datasets(self, dataset_dir: str | os.PathLike, names: list[str] | str | None) -> Path:
        """Refuse any dataset that would read a file outside ``dataset_dir``; return the folder.

        A name is either an entry of ``dataset_info.json`` (its ``file_name``/``script_url`` must lie in
        the folder; hub entries are fine) or a file/folder inside the folder, given by a relative path.
        """
        folder = self.dataset_dir(dataset_dir)
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        info = _read_info(folder)
        for name in [n for n in names or [] if n]:
            entry = info.get(name)
            if isinstance(entry, dict):
                if "hf_hub_url" in entry or "ms_hub_url" in entry:
                    continue
                local = entry.get("file_name") or entry.get("script_url")
                if isinstance(local, str) and not _contained(folder, local):
                    raise ConfigError(
                        f"dataset '{name}' points at '{local}', outside the dataset folder {folder}",
                        hint="the web UI only reads files inside the dataset folder",
                    )
                continue
            if os.path.isabs(name) or not _contained(folder, name):
                raise ConfigError(
                    f"dataset '{name}' is not a name in {folder / 'dataset_info.json'} nor a file inside {folder}",
                    hint="pick a dataset from the list, or put the file in the dataset folder",
                )
            if not (folder / name).exists():
                known = ", ".join(sorted(info)[:10])
                raise ConfigError(f"dataset '{name}' is not in {folder / 'dataset_info.json'}",
                                  hint=f"known datasets: {known}" if known else "add it to dataset_info.json")
        return folder

    # ----- settings ----------------------------------------------------------------------------
    def settings_file(self, name: str) -> Path:
        """``<settings_dir>/<name>.yaml`` for a bare name (letters, digits, ``_ - . space``; no folders)."""
        text = (name or "").strip()
        if not _SETTINGS_NAME.match(text) or ".." in text:
            raise ConfigError(
                f"settings name '{name}' is not allowed",
                hint="use a plain name such as my_run (letters, digits, _ - .; no folders)",
            )
        if not text.endswith(SETTINGS_SUFFIXES):
            text += ".yaml"
        path = self.settings_dir / text
        if (path.exists() or path.is_symlink()) and not inside(path, self.settings_dir):
            raise ConfigError(f"settings '{name}' links outside {self.settings_dir}", hint="use another name")
        return path

    def settings_names(self) -> list[str]:
        """Names of the saved settings (without suffix), sorted."""
        if not self.settings_dir.is_dir():
            return []
        return sorted(p.stem for p in self.settings_dir.iterdir()
                      if p.suffix in SETTINGS_SUFFIXES and p.is_file() and inside(p, self.settings_dir))

    # ----- outputs -----------------------------------------------------------------------------
    def output_dir(self, path: str | os.PathLike, command: str) -> Path:
        """The output folder of a ``command`` run, checked before anything is written into it.

        Refused (nothing written) when it is outside the workspace, locked by a live run, holds a
        finished run, holds files this command did not write, or is not writable.
        """
        out = self.resolve(path, "output folder")
        check_free(out, command)
        return out


def check_free(out: Path, command: str) -> None:
    """Raise ResourceError unless ``out`` may receive a new ``command`` run (see Workspace.output_dir)."""
    if out.exists() and not out.is_dir():
        raise ResourceError(f"{out} is a file, not a folder", hint="choose another output folder")
    if out.is_dir():
        pid = lock_owner(out)
        if pid:
            raise ResourceError(f"a run (pid {pid}) is already writing to {out}",
                                hint="wait for it, abort it, or choose another output folder")
        finished = _FINISHED.get(command)
        if finished and (out / finished).exists():
            raise ResourceError(f"{out} already holds a finished {command} run ({finished})",
                                hint="choose a new output folder; the finished run is left untouched")
        own = _OWN_FILES.get(command, set()) | {LOCK_NAME, RUN_LOG_NAME}
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in own and not (command == "train" and _CHECKPOINT.match(p.name)))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ResourceError(f"{out} holds files a {command} run did not write: {shown}",
                                hint="choose a new or empty output folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ResourceError(f"cannot write to {out} ({existing} is not writable)",
                            hint="choose an output folder you can write to")


def lock_owner(out: Path) -> int | None:
    """The pid holding ``out``'s run lock when that process is alive, else None."""
    lock = out / LOCK_NAME
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid and _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _contained(folder: Path, relative: str) -> bool:
    return not os.path.isabs(relative) and inside(folder / relative, folder)


def _read_info(folder: Path) -> dict:
    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
