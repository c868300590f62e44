"""dataset_info.json: the LLaMA-Factory-compatible description of each dataset.

One :class:`DatasetAttr` per entry, with the same field names and defaults as LLaMA-Factory, so an
existing ``data/`` folder works unchanged. The loader reads files through these attributes and the
converters read columns and role tags through them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from tunery.errors import DataError

Formatting = Literal["alpaca", "sharegpt", "openai"]

COLUMN_DEFAULTS: dict[str, str | None] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
    "system": None,
    "tools": None,
    "images": None,
    "videos": None,
    "audios": None,
    "chosen": None,
    "rejected": None,
    "kto_tag": None,
}

TAG_DEFAULTS: dict[str, str] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}

# OpenAI-style ``messages`` use role/content keys and the OpenAI role names, so an entry with
# ``formatting: openai`` needs no tags block.
OPENAI_TAG_DEFAULTS: dict[str, str] = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}

KNOWN_KEYS = {
    "file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "formatting",
    "ranking", "subset", "split", "folder", "num_samples", "columns", "tags",
}


@dataclass
class DatasetAttr:
    """Where one dataset lives and how its columns map to the canonical record."""

    name: str
    load_from: Literal["file", "hf_hub", "ms_hub", "script"] = "file"
    dataset_name: str = ""  # file/folder name, hub repo id or script folder
    formatting: Formatting = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    columns: dict[str, str | None] = field(default_factory=lambda: dict(COLUMN_DEFAULTS))
    tags: dict[str, str] = field(default_factory=lambda: dict(TAG_DEFAULTS))
    dataset_dir: str = "data"
    media_dir: str | None = None  # media paths are relative to it (None: dataset_dir)

    def column(self, key: str) -> str | None:
        return self.columns.get(key)

    @property
    def path(self) -> str:
        """The local file or folder (only for ``load_from == 'file'``)."""
        return os.path.join(self.dataset_dir, self.dataset_name)

    def __repr__(self) -> str:  # short, for logs
        return f"DatasetAttr({self.name!r}, {self.load_from}:{self.dataset_name})"


def use_modelscope() -> bool:
    return os.environ.get("USE_MODELSCOPE_HUB", "").lower() in ("1", "true", "yes")


def read_dataset_info(dataset_dir: str) -> dict[str, dict[str, Any]]:
    """Parse ``dataset_dir/dataset_info.json``; an absent file is an empty registry."""
    path = os.path.join(dataset_dir, "dataset_info.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8-sig") as f:
            info = json.load(f)
    except UnicodeDecodeError as exc:
        raise DataError(f"dataset_info.json is not UTF-8 text (byte offset {exc.start})", file=path,
                        hint="save the file as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise DataError(
            f"dataset_info.json is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", file=path
        ) from exc
    if not isinstance(info, dict):
        raise DataError("dataset_info.json must be a JSON object of name -> description", file=path)
    return info


def parse_dataset_attr(name: str, entry: dict[str, Any], dataset_dir: str) -> DatasetAttr:
    """Turn one dataset_info.json entry into a DatasetAttr, checking what LLaMA-Factory would accept."""
    where = os.path.join(dataset_dir, "dataset_info.json")
    if not isinstance(entry, dict):
        raise DataError(f"entry '{name}' must be an object", file=where, field=name)
    if "hf_hub_url" in entry or "ms_hub_url" in entry:
        if "ms_hub_url" in entry and (use_modelscope() or "hf_hub_url" not in entry):
            load_from, source_key = "ms_hub", "ms_hub_url"
        else:
            load_from, source_key = "hf_hub", "hf_hub_url"
    elif "script_url" in entry:
        load_from, source_key = "script", "script_url"
    elif "file_name" in entry:
        load_from, source_key = "file", "file_name"
    else:
        raise DataError(
            f"entry '{name}' names no source", file=where, field=name,
            hint="give one of file_name, hf_hub_url, ms_hub_url or script_url",
        )
    dataset_name = entry[source_key]
    if not isinstance(dataset_name, str) or not dataset_name.strip():
        raise DataError(f"entry '{name}': {source_key} must be a non-empty string, got {dataset_name!r}",
                        file=where, field=source_key)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise DataError(
            f"entry '{name}' has formatting {formatting!r}", file=where, field="formatting",
            hint="use alpaca, sharegpt or openai",
        )
    columns = dict(COLUMN_DEFAULTS)
    if formatting == "openai":
        columns["messages"] = "messages"
    user_columns = _mapping(entry, "columns", name, where, COLUMN_DEFAULTS, allow_null=True)
    columns.update(user_columns)
    tags = dict(OPENAI_TAG_DEFAULTS if formatting == "openai" else TAG_DEFAULTS)
    tags.update(_mapping(entry, "tags", name, where, TAG_DEFAULTS, allow_null=False))
    for key in ("subset", "folder"):
        _optional_text(entry, key, name, where)
    split = entry.get("split", "train")
    if not isinstance(split, str) or not split:
        raise DataError(f"entry '{name}': split must be a split name such as 'train', got {split!r}",
                        file=where, field="split")
    ranking = entry.get("ranking", False)
    if not isinstance(ranking, bool):
        raise DataError(f"entry '{name}': ranking must be true or false, got {ranking!r}", file=where,
                        field="ranking")
    num_samples = entry.get("num_samples")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise DataError(f"entry '{name}': num_samples must be a whole number of 1 or more, got {num_samples!r}",
                        file=where, field="num_samples")
    return DatasetAttr(
        name=name,
        load_from=load_from,
        dataset_name=dataset_name,
        formatting=formatting,
        ranking=ranking,
        subset=entry.get("subset"),
        split=split,
        folder=entry.get("folder"),
        num_samples=num_samples,
        columns=columns,
        tags=tags,
        dataset_dir=dataset_dir,
    )


def _mapping(entry: dict[str, Any], key: str, name: str, where: str, known: dict[str, Any],
             allow_null: bool) -> dict[str, Any]:
    """``columns``/``tags``: an object of known keys to strings (columns may be null: not mapped)."""
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise DataError(f"entry '{name}': {key} must be an object of name -> {'column' if key == 'columns' else 'tag'}",
                        file=where, field=key)
    unknown = sorted(str(k) for k in set(value) - set(known))
    if unknown:
        raise DataError(f"entry '{name}' has unknown {key[:-1]} keys {unknown}", file=where, field=key,
                        hint=f"known keys: {', '.join(known)}")
    if allow_null:  # an empty column name means "not mapped", as in LLaMA-Factory
        value = {k: (None if v == "" else v) for k, v in value.items()}
    for k, v in value.items():
        if not (isinstance(v, str) and v) and not (allow_null and v is None):
            raise DataError(f"entry '{name}': {key}.{k} must be a {'column' if key == 'columns' else 'tag'} name "
                            f"(a non-empty string), got {v!r}", file=where, field=key)
    return value


def _optional_text(entry: dict[str, Any], key: str, name: str, where: str) -> None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(f"entry '{name}': {key} must be a string, got {value!r}", file=where, field=key)


def get_dataset_attrs(names: str | list[str] | None, dataset_dir: str,
                      media_dir: str | None = None) -> list[DatasetAttr]:
    """Resolve ``dataset: a,b`` against dataset_info.json (``media_dir``: where media paths start).

    A name missing from dataset_info.json but present as a file or folder in ``dataset_dir`` (or as
    a path) is accepted as an alpaca dataset, so quick experiments need no registry entry.
    """
    if not names:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    info = read_dataset_info(dataset_dir)
    attrs = []
    for name in names:
        if name in info:
            attrs.append(parse_dataset_attr(name, info[name], dataset_dir))
        elif os.path.exists(os.path.join(dataset_dir, name)) or os.path.exists(name):
            base = dataset_dir if os.path.exists(os.path.join(dataset_dir, name)) else ""
            attrs.append(DatasetAttr(name=name, load_from="file", dataset_name=name, dataset_dir=base))
        elif info:
            known = ", ".join(sorted(info)[:10])
            raise DataError(f"dataset '{name}' is not in {os.path.join(dataset_dir, 'dataset_info.json')}",
                            field="dataset", hint=f"known datasets include: {known}")
        else:
            where = os.path.abspath(dataset_dir)
            missing = "does not exist" if not os.path.isdir(dataset_dir) else "holds no dataset_info.json"
            raise DataError(
                f"dataset '{name}' not found: dataset_dir '{dataset_dir}' {missing} ({where})",
                field="dataset",
                hint=("set dataset_dir to the folder holding dataset_info.json; a relative dataset_dir starts at "
                      f"the folder tunery runs in ({os.getcwd()})"),
            )
    for attr in attrs:
        attr.media_dir = media_dir
    return attrs
