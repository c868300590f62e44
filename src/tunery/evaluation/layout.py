"""The task folder layout both local and hub tasks share: split folders (or flat ``<subject>_<split>.csv``
files), answer letters, mapping.json.

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
    return bool(split_files(folder, split))


def find_split_dir(folder: Path, split: str) -> Path | None:
    """The folder of ``split`` in a task folder (``val/`` or ``validation/``...), when it holds CSV files."""
    for name in SPLIT_FOLDERS[split]:
        if (folder / name).is_dir() and any((folder / name).glob("*.csv")):
            return folder / name
    return None


def _subject_key(path: Path, suffixes: tuple[str, ...]) -> str:
    """``abstract_algebra_test.csv`` -> ``abstract_algebra``; ``agronomy.csv`` -> ``agronomy``."""
    for suffix in suffixes:
        if path.stem.endswith(suffix):
            return path.stem[: -len(suffix)]
    return path.stem


def split_files(folder: Path, split: str) -> dict[str, Path]:
    """subject key -> CSV file of ``split`` in a task folder, in either layout (empty when it has none).

    Nested: ``<split>/<subject>_<split>.csv`` or ``<split>/<subject>.csv`` (``val/`` or ``validation/``
    for the validation split). Flat, as the benchmarks' CSV files come unpacked into one folder:
    ``<subject>_dev.csv``, ``<subject>_val.csv``, ``<subject>_test.csv`` side by side. The nested
    layout wins when a folder has both.
    """
    all_suffixes = tuple(f"_{name}" for names in SPLIT_FOLDERS.values() for name in names)
    split_dir = find_split_dir(folder, split)
    if split_dir is not None:
        suffixes = (f"_{split_dir.name}", *all_suffixes)
        return {_subject_key(p, suffixes): p for p in sorted(split_dir.glob("*.csv"))}
    own = tuple(f"_{name}" for name in SPLIT_FOLDERS[split])
    files = {}
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        suffix = next((x for x in own if path.stem.endswith(x) and len(path.stem) > len(x)), None)
        if suffix is not None:
            files[path.stem[: -len(suffix)]] = path
    return files


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
