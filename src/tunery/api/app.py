"""FastAPI routes of the OpenAI-compatible server: /v1/models and /v1/chat/completions.

Every error leaves as JSON ``{"error": {"message", "type", "param", "code"}}`` (the shape the
official clients read). Generation runs in worker threads; the engine's lock queues them, so
concurrent requests wait their turn instead of sharing the model.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunery.api.protocol import BadRequest, ChatCompletionRequest, generation_overrides, to_conversation
from tunery.errors import TuneryError
from tunery.inference.engine import Engine, Response
from tunery.logging import get_logger

logger = get_logger(__name__)


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


def create_app(engine: Engine, *, api_key: str | None = None, model_name: str | None = None) -> FastAPI:
    """The API over ``engine``; with ``api_key`` every /v1 request needs ``Authorization: Bearer <key>``."""
    app = FastAPI(title="Tunery OpenAI-compatible API", docs_url=None, redoc_url=None)
    served_name = model_name or engine.model_name
    created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_body(exc.message, param=exc.param), status_code=400)

    @app.exception_handler(TuneryError)
    async def _user_error(request: Request, exc: TuneryError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1"):
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(token.encode(), api_key.encode()):
                return JSONResponse(error_body("invalid or missing API key", code="invalid_api_key"), status_code=401)
        try:
            return await call_next(request)
        except Exception as exc:  # a bug: still answer JSON, and log the traceback for the report
            logger.exception("internal error serving %s", request.url.path)
            return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list",
                "data": [{"id": served_name, "object": "model", "created": created, "owned_by": "tunery"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        messages, tools = to_conversation(body)
        if tools and not engine.supports_tools:
            raise BadRequest(f"the chat template '{getattr(engine.template, 'name', '?')}' does not support tools",
                             "tools")
        gen = generation_overrides(body)
        prompt = await run_in_threadpool(engine.prompt_ids, messages, tools)
        if body.stream:
            if body.n > 1:
                raise BadRequest("streaming supports n = 1 only", "n")
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream_events(engine, prompt, tools, gen, served_name, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            replies = await run_in_threadpool(engine.batch_generate, [prompt], **gen)
        except ValueError as exc:  # transformers refuses a combination of settings (e.g. n > beams)
            raise BadRequest(str(exc)) from exc
        return _completion(replies, tools is not None, engine, served_name)

    return app


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


def _stream_events(engine: Engine, prompt: list[int], tools: list[dict] | None, gen: dict[str, Any], model: str,
                   include_usage: bool) -> Iterator[str]:
    """Server-sent events: a role chunk, content (or tool-call) chunks, a finish chunk, ``[DONE]``.

    With tools the reply is generated whole first: whether it is a call is only known at the end.
    """
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> str:
        chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if usage is not None:
            chunk["choices"], chunk["usage"] = [], usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
        if tools:
            (reply,) = engine.batch_generate([prompt], **gen)
            message, finish = _choice_message(reply, True, engine)
            if message.get("tool_calls"):
                calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
                yield event({"tool_calls": calls})
            else:
                yield event({"content": reply.text})
            tokens = reply.completion_tokens
        else:
            stream = engine.stream_generate(prompt, **gen)
            try:
                for piece in stream:
                    yield event({"content": piece})
            finally:
                stream.close()
            finish, tokens = stream.finish_reason or "stop", stream.completion_tokens
        yield event({}, finish)
        if include_usage:
            yield event({}, usage=_usage(len(prompt), tokens))
    except Exception as exc:  # the status line is already sent: report the failure inside the stream
        logger.exception("generation failed while streaming")
        yield f"data: {json.dumps(error_body(f'generation failed: {exc}', 'server_error'))}\n\n"
    yield "data: [DONE]\n\n"
