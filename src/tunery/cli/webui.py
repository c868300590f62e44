"""``tunery webui [--lang en|zh]``: launch the Gradio app.

Binds 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise; GRADIO_SHARE=1
asks Gradio for a public link.
"""

from __future__ import annotations

import os

from tunery.cli import options
from tunery.errors import ConfigError
from tunery.webui.app import build_app
from tunery.webui.locales import LANGUAGES


def main(tokens: list[str]) -> int:
    """``tunery webui [--lang en|zh]``; returns when the server stops."""
    own, rest = options.pop_flags(tokens, {"lang": True})
    options.refuse_positionals(rest, hint="tunery webui takes only --lang en|zh; settings are chosen in the browser")
    lang = own.get("lang", "en")
    if lang not in LANGUAGES:
        raise ConfigError(f"unknown language '{lang}'", hint=f"choose one of: {', '.join(LANGUAGES)}")
    app = build_app(lang)
    app.queue(default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true", "yes"),
        footer_links=[],
    )
    return 0
