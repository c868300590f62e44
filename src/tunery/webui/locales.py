"""Interface text per language, kept in one JSON file per language (webui/locales/<lang>.json)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

LANGUAGES = ("en", "zh")


@cache
def texts(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        lang = "en"
    return json.loads(resources.files("tunery.webui").joinpath(f"locales/{lang}.json").read_text("utf-8"))


def t(key: str, lang: str = "en") -> str:
    """The text for ``key``; falls back to English, then to the key itself."""
    return texts(lang).get(key) or texts("en").get(key, key)
