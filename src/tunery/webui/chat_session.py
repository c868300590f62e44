"""The Chat tab's model: one engine loaded in the UI process, shared by its chat turns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tunery.config import parse_config
from tunery.inference import load_engine


class ChatSession:
    def __init__(self) -> None:
        self.engine: Any = None

    @property
    def loaded(self) -> bool:
        return self.engine is not None

    def load(self, config: dict[str, Any]) -> None:
        self.unload()
        self.engine = load_engine(parse_config("chat", config, source="the web UI"))

    def unload(self) -> None:
        self.engine = None
        import gc

        gc.collect()

    def stream(self, history: list[dict[str, str]], system: str | None, **gen: Any) -> Iterator[str]:
        """Yield the growing reply to the conversation ``history`` (ending with the user turn)."""
        messages = [{"role": m["role"], "content": _text(m["content"])} for m in history]
        reply = ""
        for piece in self.engine.stream_chat(messages, system=system or None, **gen):
            reply += piece
            yield reply


def _text(content: Any) -> str:
    """Gradio 6 may hand message content back as a list of parts; keep the text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)
