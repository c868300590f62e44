"""The one inference interface that chat, predict, the API server and the web UI share.

An :class:`Engine` owns a tokenizer, a chat template and a model behind one lock: callers from
several threads are served one ``generate`` call at a time instead of racing on the model. The
lock is held only by the thread that runs the model, never across a stream's yields. Servers
gather concurrent requests into :class:`GenerationJob` rows and hand a group of them to
:meth:`Engine.generate_rows` (one batched call; see ``tunery.inference.batching``).
``backends.load_engine(cfg)`` picks the backend from ``infer_backend``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tunery.errors import ConfigError
from tunery.inference.generation import merge_generate_kwargs
from tunery.inference.media import has_media, media_kinds
from tunery.inference.prompting import normalize_tools, template_supports_tools, with_system


@dataclass
class Response:
    """One generated reply with the counts the API reports as ``usage``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn token or stop string), "length" (max_new_tokens) or "cancelled"


@dataclass(eq=False)
class GenerationJob:
    """One request's row in a batched generation.

    ``gen`` holds the per-call overrides (``merge_generate_kwargs`` keys). ``on_text`` receives the
    reply's text pieces as they are generated (streaming; called from the generating thread).
    Setting ``cancel`` stops this row at the next token. ``future`` resolves to the list of
    :class:`Response` (``num_return_sequences`` of them), or to the exception generation raised.
    """

    prompt: list[int]
    gen: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] | None = None  # a multimodal prompt's processor outputs (pixel_values, ...): served alone
    on_text: Callable[[str], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)

    def finish(self, responses: list[Response]) -> None:
        if not self.future.done():
            self.future.set_result(responses)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def cancelled_response(self) -> list[Response]:
        return [Response("", len(self.prompt), 0, "cancelled")]


# ``joiners(live_rows)``: jobs waiting with the same batch key that may join a running batch now.
Joiners = Callable[[int], "list[GenerationJob]"]


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

    def __del__(self) -> None:  # an abandoned stream must not keep the model busy
        try:
            self.close()
        except Exception:
            pass


class Engine(ABC):
    """A model that answers conversations. Subclasses implement batch and streamed generation."""

    backend: str = ""

    def __init__(self, tokenizer: Any, template: Any, generating_args: Any, model_name: str = "tunery") -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.generating_args = generating_args
        self.model_name = model_name
        self.lock = threading.Lock()  # one generation at a time on the model
        self.processor: Any = None  # a multimodal model's processor (images -> pixel values + placeholder ids)
        self.media_dir: str | None = None  # relative media paths are read from here

    # -- prompts ---------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict], tools: Any = None, system: str | None = None) -> list[int]:
        """Token ids of the conversation with the generation prompt, as the template renders them."""
        if not messages:
            raise ConfigError("a conversation needs at least one message")
        return list(self.template.prompt_ids(self.tokenizer, with_system(messages, system), normalize_tools(tools)))

    def prompt_inputs(self, messages: list[dict], tools: Any = None,
                      system: str | None = None) -> tuple[list[int], dict[str, Any] | None]:
        """Prompt ids plus, when a message carries ``images``/``videos``/``audios``, the processor's other
        model inputs (``pixel_values``, ``input_features``, ...).

        Without media this is ``(prompt_ids(...), None)``. With media the conversation is encoded as
        training encodes it (the chat template, then the processor expands each placeholder into the
        model's media tokens); a model that cannot take a kind (a text model, audio to an image
        model) raises ConfigError naming the kind and the model.
        """
        if has_media(messages):
            return self.media_inputs(messages, tools, system)
        return self.prompt_ids(messages, tools, system), None

    def media_inputs(self, messages: list[dict], tools: Any = None,
                     system: str | None = None) -> tuple[list[int], dict[str, Any]]:
        """Prompt ids and media inputs of a conversation with media (backends that take media override)."""
        kinds = " or ".join(media_kinds(messages))
        raise ConfigError(f"{self.model_name} takes no {kinds}: it is a text model (or the {self.backend} backend "
                          f"does not pass {kinds})", hint="use a multimodal model with infer_backend: huggingface")

    def generate_media(self, prompt: list[int], extra: dict[str, Any], **gen: Any) -> list[Response]:
        """Replies to one multimodal prompt (``extra``: the processor's pixel/audio inputs)."""
        raise ConfigError(f"the {self.backend} backend does not take images, videos or audio")

    def stream_media(self, prompt: list[int], extra: dict[str, Any], **gen: Any) -> TextStream:
        """One multimodal reply, streamed."""
        raise ConfigError(f"the {self.backend} backend does not take images, videos or audio")

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

    @property
    def context_length(self) -> int | None:
        """Most tokens (prompt + reply) the model takes, or None when unknown."""
        return None

    def batch_key(self, gen: dict[str, Any]) -> Any:
        """Requests whose keys are equal may share one ``generate`` call (per-row max tokens and stops)."""
        kwargs = self.generate_kwargs(gen)
        return tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k not in ("max_new_tokens", "max_length", "stop")))

    # -- generation ------------------------------------------------------------------------------
    @abstractmethod
    def batch_generate(self, prompts: list[list[int]], **gen: Any) -> list[Response]:
        """Replies to already-encoded prompts; ``num_return_sequences`` replies per prompt, in order."""

    @abstractmethod
    def stream_generate(self, prompt: list[int], **gen: Any) -> TextStream:
        """Text pieces of one reply as they are generated."""

    def generate_rows(self, jobs: list[GenerationJob], joiners: Joiners | None = None) -> None:
        """Serve ``jobs`` (same :meth:`batch_key`) and resolve each job's future; never raises.

        ``joiners(live_rows)`` returns waiting jobs with the same key that may join while this runs
        (continuous batching); a backend that cannot take rows mid-way does not call it.
        This default serves them one at a time through :meth:`batch_generate` / :meth:`stream_generate`;
        backends that can batch rows with their own stops override it.
        """
        for job in jobs:
            try:
                if job.cancel.is_set():
                    job.finish(job.cancelled_response())
                elif job.on_text is None:
                    job.finish(self.generate_media(job.prompt, job.extra, **job.gen) if job.extra is not None
                               else self.batch_generate([job.prompt], **job.gen))
                else:
                    stream = (self.stream_media(job.prompt, job.extra, **job.gen) if job.extra is not None
                              else self.stream_generate(job.prompt, **job.gen))
                    parts: list[str] = []
                    try:
                        for piece in stream:
                            if job.cancel.is_set():
                                break
                            parts.append(piece)
                            job.on_text(piece)
                    finally:
                        stream.close()
                    finish = "cancelled" if job.cancel.is_set() else (stream.finish_reason or "stop")
                    job.finish([Response("".join(parts), len(job.prompt), stream.completion_tokens, finish)])
            except Exception as exc:
                job.fail(exc)

    def chat(self, messages: list[dict], tools: Any = None, system: str | None = None, **gen: Any) -> list[Response]:
        """Answer one conversation (``num_return_sequences`` answers); messages may carry ``images``/``videos``/``audios``."""
        prompt, extra = self.prompt_inputs(messages, tools, system)
        if extra is not None:
            return self.generate_media(prompt, extra, **gen)
        return self.batch_generate([prompt], **gen)

    def stream_chat(self, messages: list[dict], tools: Any = None, system: str | None = None, **gen: Any) -> TextStream:
        """Answer one conversation, streamed; messages may carry ``images``/``videos``/``audios``."""
        prompt, extra = self.prompt_inputs(messages, tools, system)
        if extra is not None:
            return self.stream_media(prompt, extra, **gen)
        return self.stream_generate(prompt, **gen)

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
