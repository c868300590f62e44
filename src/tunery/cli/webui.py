"""``tunery webui [--host H] [--port P] [--auth user:pass] [--lang en|zh]``: launch the Gradio app.

Binds 127.0.0.1:7860 unless --host/--port or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise;
GRADIO_SHARE=1 asks Gradio for a public link; --auth (or TUNERY_WEBUI_AUTH) turns on the login.
Without --lang the page follows the browser's language (and LANG on the server).
"""

from __future__ import annotations

from tunery.cli import options
from tunery.errors import ConfigError
from tunery.webui.locales import LANGUAGES

FLAGS = {"host": True, "port": True, "auth": True, "lang": True}


def main(tokens: list[str]) -> int:
    """Parse the web UI's own flags and serve until stopped."""
    own, rest = options.pop_flags(tokens, FLAGS)
    options.refuse_positionals(rest, hint="tunery webui takes --host, --port, --auth and --lang; "
                                          "settings are chosen in the browser")
    lang = own.get("lang")
    if lang is not None and lang not in LANGUAGES:
        raise ConfigError(f"unknown language '{lang}'", hint=f"choose one of: {', '.join(LANGUAGES)}")
    port = own.get("port")
    if port is not None and not str(port).isdigit():
        raise ConfigError(f"--port must be a number, not '{port}'", hint="e.g. --port 7860")
    # the app module pulls the data pipeline and templates (a quarter second); other commands must not pay
    from tunery.webui.app import launch

    return launch(host=own.get("host"), port=int(port) if port else None, auth=own.get("auth"), lang=lang)
