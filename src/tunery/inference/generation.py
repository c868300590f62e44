"""Generation settings: the model's own defaults, the user's settings, per-call overrides; stop strings.

Shared by both backends so that ``temperature: 0`` means greedy and ``stop`` cuts the reply the
same way everywhere. Which settings apply, strongest first:

1. per-call overrides (API request fields, web UI sliders): :func:`merge_generate_kwargs`;
2. the settings the user gave (config file or ``--key value``; ``cfg.raw`` holds exactly those);
3. the model's own ``generation_config.json`` when it sets a sampling setting (Qwen, Llama 3 ...):
   its values, with transformers' defaults for the rest (``do_sample: false`` unless it says so);
4. LLaMA-Factory's defaults (``GeneratingArguments``): sampling at temperature 0.95, top_p 0.7.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from tunery.config.generating_args import GeneratingArguments
from tunery.errors import ConfigError

SAMPLING_KEYS = ("temperature", "top_p", "top_k")
KNOWN_KEYS = {
    "do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length",
    "repetition_penalty", "length_penalty", "num_return_sequences", "stop",
}


# Settings a model's generation_config.json may carry that Tunery takes over as its defaults.
MODEL_SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
                       "length_penalty")
# transformers' own defaults for those (what model.generate uses when the file does not set them).
_HF_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50, "num_beams": 1,
                "repetition_penalty": 1.0, "length_penalty": 1.0}


def model_generation_defaults(generation_config: Any) -> dict[str, Any] | None:
    """The model's own generation settings, or None when it ships none.

    ``generation_config``: a transformers ``GenerationConfig`` (``model.generation_config``), a plain
    dict of its JSON, or None. A config that sets none of :data:`MODEL_SAMPLING_KEYS` (only token
    ids, as transformers writes when it derives one from config.json) counts as none. Otherwise
    every sampling key is returned: the file's value, else transformers' default, since that is
    what the model's authors get from ``model.generate``. ``max_new_tokens`` is taken when the file
    sets it.
    """
    if generation_config is None:
        return None
    if isinstance(generation_config, dict):
        explicit = {k: v for k, v in generation_config.items() if v is not None}
    else:
        try:
            explicit = generation_config.to_diff_dict()
        except Exception:  # not a GenerationConfig: nothing to take
            return None
    if not any(key in explicit for key in MODEL_SAMPLING_KEYS):
        return None
    values = {key: explicit.get(key, default) for key, default in _HF_DEFAULTS.items()}
    values = {key: (default if values[key] is None else values[key]) for key, default in _HF_DEFAULTS.items()}
    if isinstance(explicit.get("max_new_tokens"), int) and explicit["max_new_tokens"] > 0:
        values["max_new_tokens"] = explicit["max_new_tokens"]
    return values


def user_generation_keys(raw: dict[str, Any] | None) -> set[str]:
    """The generation settings the user gave (keys of ``cfg.raw`` that are GeneratingArguments fields)."""
    names = {f.name for f in dataclasses.fields(GeneratingArguments)}
    return {key for key in (raw or {}) if key in names}


def resolve_generating_args(args: GeneratingArguments, given: Iterable[str],
                            generation_config: Any) -> tuple[GeneratingArguments, dict[str, str]]:
    """``args`` with the model's own defaults filled in where the user set nothing.

    ``given``: names the user set (:func:`user_generation_keys`); those always keep the user's
    value. Returns the settings and ``{name: "user" | "model" | "default"}`` for every sampling
    setting and ``max_new_tokens`` (for a log line). A user who sets ``temperature`` or ``top_p``
    without ``do_sample`` asks for sampling: ``do_sample`` then stays LLaMA-Factory's ``true``
    (``temperature: 0`` still means greedy, see :func:`merge_generate_kwargs`).
    """
    given = set(given)
    model = model_generation_defaults(generation_config) or {}
    if "do_sample" not in given and given & {"temperature", "top_p", "top_k"}:
        model.pop("do_sample", None)
    changes = {key: value for key, value in model.items() if key not in given}
    sources = {}
    for key in (*MODEL_SAMPLING_KEYS, "max_new_tokens"):
        sources[key] = "user" if key in given else ("model" if key in changes else "default")
    return dataclasses.replace(args, **changes), sources


def describe_generation(args: GeneratingArguments, sources: dict[str, str]) -> str:
    """One line saying how replies are decoded and where the settings came from."""
    if args.do_sample and args.temperature > 0:
        how = f"sampling (temperature {args.temperature:g}, top_p {args.top_p:g}, top_k {args.top_k})"
    else:
        how = "greedy decoding" + (f" ({args.num_beams} beams)" if args.num_beams > 1 else "")
    origin = {"user": "your settings", "model": "the model's generation_config.json",
              "default": "LLaMA-Factory's defaults"}[sources.get("do_sample", "default")]
    hint = "; --do_sample false (or --temperature 0) for greedy replies" if args.do_sample else ""
    return f"generation: {how}, max {args.max_new_tokens} new tokens, from {origin}{hint}"


def merge_generate_kwargs(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` (GeneratingArguments.to_generate_kwargs) updated by non-None ``overrides``.

    ``temperature == 0`` turns sampling off (the OpenAI meaning); a positive temperature given
    per call turns it on. Sampling keys are dropped when greedy, so transformers does not warn.
    ``stop`` becomes a list of non-empty strings.
    """
    unknown = set(overrides) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"unknown generation argument(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    kwargs = dict(defaults)
    kwargs.update(given)
    if "max_new_tokens" in given:
        kwargs.pop("max_length", None)
    temperature = given.get("temperature")
    if temperature is not None and "do_sample" not in given:
        kwargs["do_sample"] = temperature > 0
    if kwargs.get("do_sample") and kwargs.get("temperature", 1.0) <= 0:
        kwargs["do_sample"] = False
    if not kwargs.get("do_sample"):
        for key in SAMPLING_KEYS:
            kwargs.pop(key, None)
    stop = kwargs.pop("stop", None)
    if isinstance(stop, str):
        stop = [stop]
    stop = [s for s in (stop or []) if s]
    if stop:
        kwargs["stop"] = stop
    kwargs.setdefault("num_return_sequences", 1)
    return kwargs


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string (not yet safe to emit)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
                break
    return longest
