"""``tunery api``: serve the configured model over an OpenAI-compatible HTTP API.

Binds 127.0.0.1:8000 unless ``API_HOST`` / ``API_PORT`` say otherwise; ``API_KEY`` turns on
bearer-token checks and ``API_MODEL_NAME`` sets the name /v1/models reports (see ``api/server.py``).
"""

from __future__ import annotations

from tunery.cli import options


def main(tokens: list[str]) -> int:
    """``tunery api [config.yaml] [--key value ...]``; returns when the server stops."""
    cfg = options.load("api", tokens, hint="settings are --key value")
    # the server imports torch, transformers and fastapi (seconds); --help must not pay for them
    from tunery.api.server import serve

    serve(cfg)
    return 0
