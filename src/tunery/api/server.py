"""``tunery api``: serve the configured model over an OpenAI-compatible HTTP API with uvicorn.

Binds 127.0.0.1:8000 unless ``API_HOST`` / ``API_PORT`` say otherwise: exposing a model to the
network is a choice the user makes explicitly. ``API_KEY`` turns on bearer-token checks and
``API_MODEL_NAME`` sets the name /v1/models reports. ``API_MAX_TOKENS``, ``API_MAX_BODY_BYTES``,
``API_MAX_BATCH_SIZE`` and ``API_BATCH_WINDOW_MS`` set the request limits and batching
(:class:`tunery.api.app.ServerLimits`, read by ``create_app``).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from tunery.errors import ConfigError, ResourceError, require
from tunery.inference import load_engine
from tunery.logging import get_logger

if TYPE_CHECKING:
    from tunery.config import RunConfig

logger = get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def bind_address(env: dict[str, str] | None = None) -> tuple[str, int]:
    """(host, port) from API_HOST / API_PORT, checked."""
    env = dict(os.environ if env is None else env)
    host = env.get("API_HOST") or DEFAULT_HOST
    raw_port = env.get("API_PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise ConfigError(f"API_PORT must be a number, got {raw_port!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"API_PORT {port} is outside 1-65535")
    return host, port


def check_port_free(host: str, port: int) -> None:
    """Fail before loading the model (minutes) when the address is taken, not after."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ResourceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                hint="stop the other server or set API_PORT to a free port") from exc


def serve(cfg: RunConfig) -> None:
    """Load the model of ``cfg`` and serve it until interrupted (``tunery api``, in ``cli/api.py``)."""
    require("fastapi", "tunery api", "api")
    uvicorn = require("uvicorn", "tunery api", "api")
    from tunery.api.app import create_app

    host, port = bind_address()
    check_port_free(host, port)
    engine = load_engine(cfg)
    app = create_app(engine, api_key=os.environ.get("API_KEY") or None, model_name=os.environ.get("API_MODEL_NAME"))
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("API_KEY"):
        logger.warning("serving on %s without API_KEY: anyone who can reach this port can use the model", host)
    logger.info("OpenAI-compatible API at http://%s:%d/v1 (model '%s')", host, port, engine.model_name)
    uvicorn.run(app, host=host, port=port, log_level="warning")
