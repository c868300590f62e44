"""FastAPI routes of the OpenAI-compatible server: /v1/models and /v1/chat/completions.

Every error leaves as JSON ``{"error": {"message", "type", "param", "code"}}`` (the shape the
official clients read). Requests become :class:`GenerationJob` rows for one
:class:`~tunery.inference.batching.Batcher` worker, which gathers concurrent ones into a single
batched ``generate`` call; route handlers never hold the engine lock. A client that disconnects
(streaming or not) cancels its row at the next token. :class:`ServerLimits` bounds every request:
body size (413), prompt length (400 ``context_length_exceeded``) and reply length.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunery.api.protocol import BadRequest, ChatCompletionRequest, generation_overrides, to_conversation
from tunery.errors import ConfigError, TuneryError
from tunery.inference.batching import Batcher
from tunery.inference.engine import Engine, GenerationJob, Response
from tunery.logging import get_logger

logger = get_logger(__name__)


DISCONNECT_POLL_S = 0.25  # how often a waiting non-streaming request checks that its client is still there


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what one request may cost, and how requests are batched.

    ``max_tokens``: most tokens one reply may have, whatever the request asks (it is also cut to
    the context the prompt leaves). ``max_body_bytes``: larger request bodies get 413.
    ``max_batch_size``: most requests in one ``generate`` call (1: one at a time).
    ``batch_window_ms``: how long the worker waits for more requests before starting a batch.
    ``batch_regroup_ms``: how long it waits, at most, while fewer requests came than the previous
    batch held (clients coming back with their next request; see ``inference.batching``).
    """

    max_tokens: int = 4096
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 8
    batch_window_ms: float = 10.0
    batch_regroup_ms: float = 200.0

    ENV = {"max_tokens": "API_MAX_TOKENS", "max_body_bytes": "API_MAX_BODY_BYTES",
           "max_batch_size": "API_MAX_BATCH_SIZE", "batch_window_ms": "API_BATCH_WINDOW_MS",
           "batch_regroup_ms": "API_BATCH_REGROUP_MS"}
    MILLISECONDS = ("batch_window_ms", "batch_regroup_ms")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerLimits:
        """Limits from API_MAX_TOKENS, API_MAX_BODY_BYTES, API_MAX_BATCH_SIZE, API_BATCH_WINDOW_MS,
        API_BATCH_REGROUP_MS (unset: defaults). Raises ConfigError for a value that is not a number or too small."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in cls.ENV.items():
            raw = env.get(var)
            if not raw:
                continue
            kind = float if name in cls.MILLISECONDS else int
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{var} must be a number, got {raw!r}") from None
            if value < (0 if name in cls.MILLISECONDS else 1):
                raise ConfigError(f"{var} must be {'>= 0' if name in cls.MILLISECONDS else '>= 1'}, got {raw!r}")
            values[name] = value
        return cls(**values)


class _BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so FastAPI passes it on instead of answering 400."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(error_body(f"request body is larger than {limit} bytes", code="request_too_large"),
                        status_code=413)


class _Guard:
    """ASGI middleware: bearer-token check on /v1 and the request body size limit (413)."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope.get("path", "").startswith("/v1"):
            header = headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(token.encode(), self.api_key.encode()):
                await JSONResponse(error_body("invalid or missing API key", code="invalid_api_key"),
                                   status_code=401)(scope, receive, send)
                return
        too_large = _too_large(self.max_body_bytes)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await too_large(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:  # a body sent without (or with a false) content-length
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await too_large(scope, receive, send)


class _JobStream(StreamingResponse):
    """A streamed reply whose generation is cancelled however the response ends (disconnect included)."""

    def __init__(self, content: AsyncIterator[str], job: GenerationJob, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.job = job

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel.set()


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    return (f"{where}: {first.get('msg')}" if where else str(first.get("msg"))), (loc[0] if loc else None)


def _tool_calls(calls: list[dict]) -> list[dict]:
    return [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
         "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}), ensure_ascii=False)}}
        for c in calls
    ]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def reply_budget(engine: Engine, prompt_tokens: int, requested: int | None, limits: ServerLimits) -> int:
    """Most tokens the reply may have: the request's (or configured) max, the server's, the context left.

    Raises BadRequest (code ``context_length_exceeded``) when the prompt leaves no room in the context.
    """
    context = engine.context_length
    if context is not None and prompt_tokens >= context:
        raise BadRequest(f"This model's maximum context length is {context} tokens. However, your messages "
                         f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
                         "messages", "context_length_exceeded")
    if requested is None:
        configured = engine.generate_kwargs({})
        requested = configured.get("max_new_tokens") or 0
        if requested <= 0 and configured.get("max_length"):
            requested = int(configured["max_length"]) - prompt_tokens
    budget = [limits.max_tokens] + ([requested] if requested and requested > 0 else [])
    if context is not None:
        budget.append(context - prompt_tokens)
    return max(1, min(budget))


def create_app(engine: Engine, *, api_key: str | None = None, model_name: str | None = None,
               limits: ServerLimits | None = None) -> FastAPI:
    """The API over ``engine``; with ``api_key`` every /v1 request needs ``Authorization: Bearer <key>``.

    ``limits`` defaults to :meth:`ServerLimits.from_env`. ``app.state.batcher`` is the worker that
    runs the model (its ``stats`` count batches, rows and finish reasons).
    """
    limits = limits or ServerLimits.from_env()
    app = FastAPI(title="Tunery OpenAI-compatible API", docs_url=None, redoc_url=None)
    served_name = model_name or engine.model_name
    created = int(time.time())
    batcher = Batcher(engine, max_batch_size=limits.max_batch_size, window_s=limits.batch_window_ms / 1000,
                      regroup_s=limits.batch_regroup_ms / 1000)
    app.state.batcher, app.state.limits = batcher, limits
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, _BodyTooLarge):
            return _too_large(limits.max_body_bytes)
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_body(exc.message, param=exc.param, code=exc.code), status_code=400)

    @app.exception_handler(TuneryError)
    async def _user_error(request: Request, exc: TuneryError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # still answer JSON; the traceback is logged
        logger.error("internal error serving %s: %r", request.url.path, exc)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list",
                "data": [{"id": served_name, "object": "model", "created": created, "owned_by": "tunery"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        messages, tools = to_conversation(body)
        if tools and not engine.supports_tools:
            raise BadRequest(f"the chat template '{getattr(engine.template, 'name', '?')}' does not support tools",
                             "tools")
        if body.stream and body.n > 1:
            raise BadRequest("streaming supports n = 1 only", "n")
        gen = generation_overrides(body)
        prompt, extra = await run_in_threadpool(engine.prompt_inputs, messages, tools)
        gen["max_new_tokens"] = reply_budget(engine, len(prompt), gen.get("max_new_tokens"), limits)
        try:
            engine.generate_kwargs(gen)
        except ConfigError as exc:
            raise BadRequest(str(exc)) from exc
        job = GenerationJob(prompt, gen, extra=extra)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            pieces: asyncio.Queue[str | None] = asyncio.Queue()
            put = _threadsafe_put(pieces)
            if not tools:  # with tools the reply is sent whole: whether it is a call is known at the end
                job.on_text = put
            job.future.add_done_callback(lambda _: put(None, quiet=True))
            batcher.submit(job)
            return _JobStream(_stream_events(engine, job, pieces, tools, served_name, include_usage), job,
                              media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        batcher.submit(job)
        replies = await _wait_or_cancel(job, request)
        if replies is None:  # the client left; nobody reads this
            return JSONResponse(error_body("client disconnected", code="client_disconnected"), status_code=499)
        return _completion(replies, tools is not None, engine, served_name)

    return app


def _threadsafe_put(pieces: asyncio.Queue) -> Any:
    """A callable for the generating thread that puts into ``pieces`` on the event loop of the caller."""
    loop = asyncio.get_running_loop()

    def put(item: str | None, quiet: bool = False) -> None:
        try:
            loop.call_soon_threadsafe(pieces.put_nowait, item)
        except RuntimeError:  # the loop is closed (server stopped): the generating row stops
            if not quiet:
                raise

    return put


async def _wait_or_cancel(job: GenerationJob, request: Request) -> list[Response] | None:
    """The job's replies; None (and the job cancelled) when the client disconnects first."""
    result = asyncio.wrap_future(job.future)
    try:
        while True:
            done, _ = await asyncio.wait({result}, timeout=DISCONNECT_POLL_S)
            if done:
                break
            if await request.is_disconnected():
                job.cancel.set()
                return None
    finally:
        job.cancel.set()  # also when this handler itself is cancelled (server shutting down)
    try:
        return result.result()
    except ValueError as exc:  # transformers refuses a combination of settings (e.g. n > beams)
        raise BadRequest(str(exc)) from exc


def _choice_message(reply: Response, tools: bool, engine: Engine) -> tuple[dict[str, Any], str]:
    calls = engine.parse_tool_calls(reply.text) if tools else None
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": _tool_calls(calls)}, "tool_calls"
    return {"role": "assistant", "content": reply.text}, reply.finish_reason


def _completion(replies: list[Response], tools: bool, engine: Engine, model: str) -> dict[str, Any]:
    choices = []
    for i, reply in enumerate(replies):
        message, finish = _choice_message(reply, tools, engine)
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices,
        "usage": _usage(replies[0].prompt_tokens, sum(r.completion_tokens for r in replies)),
    }


async def _stream_events(engine: Engine, job: GenerationJob, pieces: asyncio.Queue, tools: list[dict] | None,
                         model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content (or tool-call) chunks, a finish chunk, ``[DONE]``.

    With tools the reply is generated whole first: whether it is a call is only known at the end.
    Leaving early (the client disconnected) cancels the job.
    """
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> str:
        chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if usage is not None:
            chunk["choices"], chunk["usage"] = [], usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    try:
        yield event({"role": "assistant", "content": ""})
        while (piece := await pieces.get()) is not None:
            yield event({"content": piece})
        (reply, *_) = job.future.result()
        if tools:
            message, finish = _choice_message(reply, True, engine)
            if message.get("tool_calls"):
                calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
                yield event({"tool_calls": calls})
            else:
                yield event({"content": reply.text})
        else:
            finish = reply.finish_reason
        yield event({}, finish)
        if include_usage:
            yield event({}, usage=_usage(len(job.prompt), reply.completion_tokens))
    except Exception as exc:  # the status line is already sent: report the failure inside the stream
        logger.error("generation failed while streaming: %r", exc)
        yield f"data: {json.dumps(error_body(f'generation failed: {exc}', 'server_error'))}\n\n"
    finally:
        job.cancel.set()
    yield "data: [DONE]\n\n"
