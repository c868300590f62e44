"""The one inference interface that chat, predict, the API server and the web UI share.

An :class:`Engine` owns a tokenizer, a chat template and a model behind one lock: callers from
several threads (the API server) are served one generation at a time, in arrival order, instead
of racing on the model. ``backends.load_engine(cfg)`` picks the backend from ``infer_backend``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tunery.errors import ConfigError
from tunery.inference.generation import merge_generate_kwargs
from tunery.inference.prompting import normalize_tools, template_supports_tools, with_system


@dataclass
class Response:
    """One generated reply with the counts the API reports as ``usage``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn token or stop string) or "length" (max_new_tokens)


class TextStream:
    """Text pieces of one streamed reply; ``finish_reason`` and ``completion_tokens`` are set at the end."""

    def __init__(self, pieces: Iterator[str], prompt_tokens: int) -> None:
        self._pieces = pieces
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating (a client went away); safe to call more than once."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class Engine(ABC):
    """A model that answers conversations. Subclasses implement batch and streamed generation."""

    backend: str = ""

    def __init__(self, tokenizer: Any, template: Any, generating_args: Any, model_name: str = "tunery") -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.generating_args = generating_args
        self.model_name = model_name
        self.lock = threading.Lock()  # one generation at a time on the model

    # -- prompts ---------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict], tools: Any = None, system: str | None = None) -> list[int]:
        """Token ids of the conversation with the generation prompt, as the template renders them."""
        if not messages:
            raise ConfigError("a conversation needs at least one message")
        return list(self.template.prompt_ids(self.tokenizer, with_system(messages, system), normalize_tools(tools)))

    def stop_token_ids(self) -> list[int]:
        """End-of-turn ids of the template plus the tokenizer's eos: a reply never runs past them."""
        ids = list(self.template.stop_token_ids(self.tokenizer))
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int) and eos not in ids:
            ids.append(eos)
        return ids

    def generate_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The configured generation arguments with per-call overrides applied."""
        return merge_generate_kwargs(self.generating_args.to_generate_kwargs(), overrides)

    # -- generation ------------------------------------------------------------------------------
    @abstractmethod
    def batch_generate(self, prompts: list[list[int]], **gen: Any) -> list[Response]:
        """Replies to already-encoded prompts; ``num_return_sequences`` replies per prompt, in order."""

    @abstractmethod
    def stream_generate(self, prompt: list[int], **gen: Any) -> TextStream:
        """Text pieces of one reply as they are generated."""

    def chat(self, messages: list[dict], tools: Any = None, system: str | None = None, **gen: Any) -> list[Response]:
        """Answer one conversation (``num_return_sequences`` answers)."""
        return self.batch_generate([self.prompt_ids(messages, tools, system)], **gen)

    def stream_chat(self, messages: list[dict], tools: Any = None, system: str | None = None, **gen: Any) -> TextStream:
        """Answer one conversation, streamed."""
        return self.stream_generate(self.prompt_ids(messages, tools, system), **gen)

    # -- tools -----------------------------------------------------------------------------------
    @property
    def supports_tools(self) -> bool:
        return template_supports_tools(self.template, self.tokenizer)

    def parse_tool_calls(self, text: str) -> list[dict] | None:
        """Tool calls ``[{"name", "arguments"}]`` in a reply, or None when it is plain text."""
        try:
            return self.template.parse_tool_calls(text)
        except Exception:  # a reply that looks like a call but is malformed is returned as text
            return None
