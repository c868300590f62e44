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
        messages = to_messages(history)
        reply = ""
        for piece in self.engine.stream_chat(messages, system=system or None, **gen):
            reply += piece
            yield reply


def to_messages(history: list[dict[str, Any]]) -> list[dict]:
    """Chatbot history -> engine messages: an uploaded image (a file message) goes with the next user text."""
    messages: list[dict] = []
    images: list[str] = []
    for m in history:
        paths = _files(m["content"])
        if paths and m["role"] == "user":
            images.extend(paths)
            text = _text(m["content"]) if not isinstance(m["content"], dict) else ""
            if not text:
                continue
        else:
            text = _text(m["content"])
        message: dict = {"role": m["role"], "content": text}
        if images and m["role"] == "user":
            message["images"], images = images, []
        messages.append(message)
    if images:  # an image sent without text
        messages.append({"role": "user", "content": "", "images": images})
    return messages


def _files(content: Any) -> list[str]:
    """Paths of files in a chatbot message (Gradio gives ``{"path": ...}`` or ``{"type": "file", "file": {...}}``)."""
    parts = content if isinstance(content, list) else [content]
    paths = []
    for part in parts:
        if isinstance(part, dict):
            inner = part.get("file") if isinstance(part.get("file"), dict) else part
            if isinstance(inner.get("path"), str):
                paths.append(inner["path"])
    return paths


def _text(content: Any) -> str:
    """Gradio 6 may hand message content back as a list of parts; keep the text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)
