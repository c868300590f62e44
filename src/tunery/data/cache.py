"""A disk cache of tokenized datasets, keyed on data + tokenizer + template + settings.

Tokenizing a large dataset takes minutes; re-running with the same inputs must not. The key hashes
everything that changes the token ids: the dataset descriptions and their files (size and mtime),
the tokenizer (vocabulary, special tokens, chat template), the template and the processing
settings. ``overwrite_cache`` rebuilds. ``datasets``' own fingerprint cache does not apply here
because our records are built in memory, which it does not cache across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from tunery.data.loader import data_files
from tunery.hub import cache_root
from tunery.logging import get_logger

logger = get_logger(__name__)

CACHE_VERSION = 1  # bump when processors change their output for the same inputs


def cache_dir() -> Path:
    return Path(cache_root()) / "datasets"


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(type(tokenizer).__name__.encode())
    return h.hexdigest()


def template_fingerprint(template) -> str:
    """The template's class and simple settings (the Jinja source of ``auto`` is in the tokenizer's key)."""
    parts: dict[str, Any] = {"class": f"{type(template).__module__}.{type(template).__qualname__}"}
    for key, value in sorted(vars(template).items()):
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)):
            parts[key] = value
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def files_fingerprint(attrs: list) -> list:
    """Each dataset's description plus (path, size, mtime) of its local files."""
    out = []
    for attr in attrs:
        entry: dict[str, Any] = {k: v for k, v in vars(attr).items()}
        if attr.load_from == "file":
            files = data_files(attr)
            entry["files"] = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
        out.append(entry)
    return out


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_cached(key: str):
    """(DatasetDict, stats dict) if a complete cache entry exists, else None."""
    from datasets import load_from_disk

    path = cache_dir() / key
    if not (path / "stats.json").is_file():
        return None
    try:
        data = load_from_disk(str(path / "data"))
        stats = json.loads((path / "stats.json").read_text())
    except Exception as exc:  # a half-written or stale entry is rebuilt, not fatal
        logger.warning("ignoring unreadable dataset cache %s: %s", path, exc)
        return None
    return data, stats


def save_cached(key: str, data, stats: dict[str, Any]) -> Path:
    """Write to a temporary folder and rename, so an interrupted run never leaves a half entry."""
    final = cache_dir() / key
    tmp = cache_dir() / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    data.save_to_disk(str(tmp / "data"))
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final
