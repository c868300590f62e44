"""Turn a YAML/JSON file plus ``--key value`` / ``key=value`` overrides into typed dataclasses.

Why not transformers' HfArgumentParser: it cannot suggest the nearest key for a typo, treats
``key=value`` as an error, and reports type errors as argparse usage noise. Everything else (field
names, defaults, help) comes from the dataclasses themselves, so ``--help`` and validation cannot
drift apart.
"""

from __future__ import annotations

import difflib
import enum
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from tunery.config.groups import settings_of
from tunery.errors import ConfigError

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON config into a flat dict; sections (``### model``) are just comments."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", hint="check the path, or pass settings as --key value")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc
    except yaml.YAMLError as exc:  # name the file and the place, not yaml's "<unicode string>"
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of key: value, not {type(data).__name__}")
    return data


def parse_overrides(tokens: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split CLI tokens into ``{key: raw string}`` and positional words.

    Accepted spellings: ``--key value``, ``--key=value``, ``key=value`` and a bare ``--flag``
    (meaning true). Values stay strings here; the dataclass types decide how they are read.
    """
    overrides: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            body = token[2:]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                key, value = body, tokens[i + 1]
                i += 1
            else:
                key, value = body, "true"
            overrides[key.replace("-", "_")] = value
        elif "=" in token and not token.startswith("="):
            key, value = token.split("=", 1)
            overrides[key] = value
        else:
            positional.append(token)
        i += 1
    return overrides, positional


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], nullable
        return Union[tuple(args)], nullable  # noqa: UP007
    return tp, False


def _parse_scalar_text(text: str) -> Any:
    """Read a CLI string the way YAML would (true/false/null/numbers/lists)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to the dataclass field type ``tp`` or raise a ConfigError naming the key."""
    tp, nullable = _unwrap_optional(tp)
    null_words = ("null", "~") if _admits_str(tp) else ("null", "none", "~")
    if value is None or (isinstance(value, str) and value.strip().lower() in null_words):
        if nullable or tp is Any:
            return None
        if tp is str:
            return value if isinstance(value, str) else None
        raise ConfigError(f"'{key}' cannot be empty (got {value!r})", hint=f"give a {_describe(tp)}")
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed and str(value) not in [str(a) for a in allowed]:
            raise ConfigError(
                f"'{key}' got {value!r}, which is not allowed",
                hint=f"choose one of: {', '.join(str(a) for a in allowed)}",
            )
        return next(a for a in allowed if a == value or str(a) == str(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on", "y"):
            return True
        if text in ("false", "0", "no", "off", "n"):
            return False
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{key}' must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value)
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            parsed = _parse_scalar_text(value)
            value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(key, v, inner) for v in value]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = _parse_scalar_text(value)
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping (JSON object), got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if bool in options and (isinstance(value, bool) or str(value).strip().lower() in ("true", "false")):
            # str | bool fields (include_num_input_tokens_seen): a YAML false is a bool, not the word.
            return value if isinstance(value, bool) else str(value).strip().lower() == "true"
        errors = []
        for option in typing.get_args(tp):
            try:
                return coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' got {value!r}, which is none of: {_describe(tp)}")
    # Enums (transformers' IntervalStrategy, ...) and other types: leave to the dataclass.
    if isinstance(value, str):
        return value
    return value


def _admits_str(tp: Any) -> bool:
    """True when a plain string is a valid value (then 'none' is a word, e.g. report_to: none)."""
    if tp is str:
        return True
    if typing.get_origin(tp) in (Union, types.UnionType, list):
        return any(_admits_str(a) for a in typing.get_args(tp))
    return False


def _describe(tp: Any) -> str:
    tp, _ = _unwrap_optional(tp)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _field_types(cls: type) -> dict[str, Any]:
    """Flat setting name -> type, groups expanded (``lora_rank`` belongs to FinetuningArguments)."""
    return {f.name: tp for _, f, tp in settings_of(cls)}


def build_dataclasses(raw: dict[str, Any], classes: list[type], *, source: str = "config") -> list[Any]:
    """Route each key to the dataclass(es) that own it, coerce its type, construct them.

    A key no class owns is an error that suggests the nearest known key.
    """
    owners: dict[str, list[type]] = {}
    types_by_class = {cls: _field_types(cls) for cls in classes}
    for cls, fields in types_by_class.items():
        for name in fields:
            owners.setdefault(name, []).append(cls)
    unknown = [key for key in raw if key not in owners]
    for key in unknown:
        if key in UNSUPPORTED_LF_KEYS:
            raise ConfigError(
                f"'{key}' ({UNSUPPORTED_LF_KEYS[key]}) is a LLaMA-Factory setting Tunery does not support",
                hint=f"remove '{key}' from {source}; see docs/cli.md for what Tunery offers instead",
            )
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(owners), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "run with --help to list every setting"
        raise ConfigError(f"unknown setting '{key}' in {source}", hint=hint)
    results = []
    for cls in classes:
        kwargs = {}
        for key, value in raw.items():
            if cls in owners[key]:
                kwargs[key] = coerce(key, value, types_by_class[cls][key])
        try:
            results.append(cls(**kwargs))
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid {cls.__name__.replace('Arguments', '').lower()} settings: {exc}") from exc
    return results


def load_raw_config(tokens: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Merge, in order: the config file named among ``tokens`` (if any), then the overrides."""
    overrides, positional = parse_overrides(tokens)
    raw: dict[str, Any] = {}
    rest = []
    for word in positional:
        if word.endswith(CONFIG_SUFFIXES) and not raw:
            raw.update(read_config_file(word))
        else:
            rest.append(word)
    config_path = overrides.pop("config", None)
    if config_path:
        raw.update(read_config_file(config_path))
    raw.update(overrides)
    return raw, rest


def dump_config(path: str | os.PathLike, raw: dict[str, Any]) -> None:
    """Write a config that `tunery` reads back to the same settings."""
    Path(path).write_text(yaml.safe_dump(_plain(raw), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return getattr(value, "value", str(value))


# LLaMA-Factory settings for features Tunery does not have. Naming one is an error that says so,
# rather than "unknown setting", so a migrating user knows the key was read, not mistyped.
UNSUPPORTED_LF_KEYS = {
    "use_galore": "GaLore", "galore_rank": "GaLore", "galore_target": "GaLore", "galore_scale": "GaLore",
    "galore_layerwise": "GaLore", "use_apollo": "APOLLO", "apollo_rank": "APOLLO", "apollo_target": "APOLLO",
    "apollo_scale": "APOLLO", "apollo_scale_type": "APOLLO", "apollo_layerwise": "APOLLO",
    "use_badam": "BAdam", "badam_mode": "BAdam", "badam_switch_mode": "BAdam",
    "badam_switch_interval": "BAdam", "badam_verbose": "BAdam", "use_adam_mini": "Adam-mini",
    "use_muon": "Muon", "mixture_of_depths": "Mixture-of-Depths", "use_kt": "KTransformers",
    "oft_rank": "OFT", "oft_block_size": "OFT", "oft_target": "OFT", "pure_bf16": "pure bf16 training",
    "use_asft_loss": "ASFT loss", "asft_alpha": "ASFT loss", "use_dft_loss": "DFT loss",
    "use_eaft_loss": "EAFT loss", "fp8": "FP8 training", "fp8_backend": "FP8 training",
    **{key: "Ray Train; start `tunery train` with torchrun on each machine instead, see docs/distributed.md"
       for key in ("use_ray", "ray_num_workers", "resources_per_worker", "ray_storage_path", "ray_storage_filesystem",
                   "ray_init_kwargs", "ray_run_name", "placement_strategy")},
}
