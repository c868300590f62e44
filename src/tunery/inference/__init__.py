"""Inference workflows: engines (HF, vLLM), batch prediction and its metrics (the terminal chat is cli/chat.py).

``load_engine(cfg)`` is the entry point chat, predict, the API server and the web UI share.
"""

from tunery.inference.backends import check_media_kinds, load_engine
from tunery.inference.engine import Engine, Response, TextStream

__all__ = ["Engine", "Response", "TextStream", "check_media_kinds", "load_engine"]
