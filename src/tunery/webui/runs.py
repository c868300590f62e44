"""Past runs under the save root: the run list, their loss curves, the adapter/checkpoint picker, and
the model picker with its template suggestion."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tunery.runlog import LOG_FILE as TRAINER_LOG
from tunery.webui.paths import LOCK_NAME, inside, lock_owner
from tunery.webui.progress import Progress, read_progress

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_RUN_MARKERS = ("training_args.yaml", TRAINER_LOG, "adapter_config.json", "train_results.json", LOCK_NAME)
MODEL_ALIAS = "smollm2-135m-instruct"
MODEL_FOLDERS = ("saves", "models")  # under the workspace; searched two levels deep
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# config.json model_type -> builtin template, only where one template fits every model of that type
# (a type shared by several families, such as llama, is left out: its tokenizer's own template decides)
_TEMPLATE_BY_MODEL_TYPE = {
    "qwen2": "qwen", "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma3",
    "gemma3_text": "gemma3", "phi3": "phi", "cohere": "cohere", "granite": "granite3", "deepseek_v3": "deepseek3",
    "glm4": "glm4", "falcon": "falcon",
}


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


def is_model_folder(folder: Path) -> bool:
    """A folder ``from_pretrained`` can load a full model from: ``config.json`` plus weights (e.g. a merged export)."""
    return (folder / "config.json").is_file() and any((folder / w).is_file() for w in _WEIGHTS)


def model_choices(root: Path) -> list[str]:
    """The model picker's choices: the alias first, then model folders up to two levels under ``<root>/saves``
    and ``<root>/models``, relative to ``root``, sorted; symlinks leading out of ``root`` are skipped."""
    root = root.resolve()
    found: set[str] = set()
    for name in MODEL_FOLDERS:
        top = root / name
        if not top.is_dir() or not inside(top, root):
            continue
        for child in _subfolders(top, root):
            for folder in (child, *_subfolders(child, root)):
                if is_model_folder(folder):
                    found.add(display_path(folder, root))
    return [MODEL_ALIAS, *sorted(found)]


def suggest_template(model_type: str | None, has_chat_template: bool) -> str:
    """The template that fits a model: ``auto`` when its tokenizer carries a chat template, else the builtin
    made for its ``model_type`` when exactly one fits, else ``default``."""
    if has_chat_template:
        return "auto"
    return _TEMPLATE_BY_MODEL_TYPE.get((model_type or "").lower(), "default")


def model_template(model: str, root: Path) -> str | None:
    """:func:`suggest_template` for the model the picker names (the alias, or a folder inside ``root``);
    None when nothing can be read about it (a hub id, a folder outside ``root`` or missing)."""
    text = (model or "").strip()
    if text.lower() in (MODEL_ALIAS, "smollm2"):
        return "auto"  # SmolLM2-Instruct ships a chat template
    if not text or "\x00" in text:
        return None
    folder = (root / text).resolve()
    if not inside(folder, root) or not (folder / "config.json").is_file():
        return None
    return suggest_template(_read_json(folder / "config.json").get("model_type"), _has_chat_template(folder))


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


def _subfolders(folder: Path, root: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and inside(p, root)]
    except OSError:
        return []


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _has_chat_template(folder: Path) -> bool:
    """True when the tokenizer files carry a chat template (in tokenizer_config.json or a separate file)."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    return bool(_read_json(folder / "tokenizer_config.json").get("chat_template"))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
