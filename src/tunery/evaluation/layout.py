"""The task folder layout both local and hub tasks share: split folders, answer letters, mapping.json.

``tasks.py`` reads questions from this layout; ``hub_tasks.py`` writes hub benchmarks into it.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from tunery.errors import DataError

LETTERS = "ABCDEFGHIJ"
SPLITS = {"test": "test", "validation": "validation", "val": "validation", "dev": "dev"}
# Folder names each split may use: C-Eval and MMLU call the validation split "val".
SPLIT_FOLDERS = {"test": ("test",), "validation": ("val", "validation"), "dev": ("dev",)}


def packaged_tasks_dir() -> Path:
    """Tasks shipped with Tunery (the sample tasks, and mapping.json of the hub benchmarks)."""
    return Path(str(importlib.resources.files("tunery").joinpath("resources", "eval_tasks")))


def has_split(folder: Path, split: str) -> bool:
    return find_split_dir(folder, split) is not None


def find_split_dir(folder: Path, split: str) -> Path | None:
    """The folder of ``split`` in a task folder (``val/`` or ``validation/``...), when it holds CSV files."""
    for name in SPLIT_FOLDERS[split]:
        if (folder / name).is_dir() and any((folder / name).glob("*.csv")):
            return folder / name
    return None


def read_mapping(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / "mapping.json"
    if not path.is_file():
        return {}
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"mapping.json is not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
        raise DataError(
            'mapping.json must map each subject to {"name": ..., "category": ...}', file=str(path)
        )
    return mapping
