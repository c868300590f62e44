"""``infer_backend`` -> Engine: the one place chat, predict, the API server and the web UI get an engine."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.errors import ConfigError
from tunery.inference.engine import Engine
from tunery.inference.hf_engine import HuggingFaceEngine
from tunery.inference.vllm_engine import VllmEngine
from tunery.model.loader import resolve
from tunery.model.multimodal import family_of

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


def check_media_kinds(cfg: RunConfig, kinds: list[str]) -> None:
    """Refuse media ``kinds`` ("image", "video", "audio") the configured model cannot take, from its
    config.json alone, before any weight is loaded (the engine refuses the same later, after loading).

    Raises ConfigError naming the model and the kinds, as the engine words it."""
    if not kinds:
        return
    name = os.path.basename(str(cfg.model.model_name_or_path).rstrip("/")) or "tunery"
    family = family_of(resolve(cfg.model).path)
    backend = getattr(cfg.model, "infer_backend", "huggingface") or "huggingface"
    if family is None or backend != "huggingface":
        what = " or ".join(f"{kind}s" for kind in kinds)
        raise ConfigError(f"{name} takes no {what}: "
                          + ("it is a text model" if family is None else f"the {backend} backend does not pass {what}"),
                          hint="use a multimodal model with infer_backend: huggingface")
    for kind in kinds:
        if kind not in family.media:
            raise ConfigError(f"{name} ({family.model_type}) takes no {kind}: it reads {' and '.join(family.media)} "
                              f"only", hint=f"send {' or '.join(family.media)}, or load a model that reads {kind}")
