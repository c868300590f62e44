"""Per-call generation settings on top of the configured ones, and stop-string trimming.

Shared by both backends so that ``temperature: 0`` means greedy and ``stop`` cuts the reply the
same way everywhere.
"""

from __future__ import annotations

from typing import Any

from tunery.errors import ConfigError

SAMPLING_KEYS = ("temperature", "top_p", "top_k")
KNOWN_KEYS = {
    "do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length",
    "repetition_penalty", "length_penalty", "num_return_sequences", "stop",
}


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
