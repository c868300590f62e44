"""``infer_backend`` -> Engine: the one place chat, predict, the API server and the web UI get an engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunery.errors import ConfigError
from tunery.inference.engine import Engine
from tunery.inference.hf_engine import HuggingFaceEngine
from tunery.inference.vllm_engine import VllmEngine

if TYPE_CHECKING:
    from tunery.config import RunConfig

BACKENDS: dict[str, type[Engine]] = {"huggingface": HuggingFaceEngine, "vllm": VllmEngine}


def load_engine(cfg: RunConfig) -> Engine:
    """The engine named by ``infer_backend`` (huggingface by default, or vllm), loaded from ``cfg``.

    Raises ConfigError for an unknown backend; the backends raise ModelError/DependencyError.
    """
    backend = getattr(cfg.model, "infer_backend", "huggingface") or "huggingface"
    if backend not in BACKENDS:
        raise ConfigError(f"infer_backend '{backend}' is not known", hint="use huggingface or vllm")
    return BACKENDS[backend].from_config(cfg)
