"""The OpenAI chat-completions request shape (the subset Tunery serves) and its conversion to messages.

Pydantic validates types and ranges (a wrong request gets 422 with the field named); the checks
that need the whole conversation (roles in order, a user turn to answer) raise :class:`BadRequest`
(400). Unknown OpenAI parameters are ignored rather than refused, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.data.media import PLACEHOLDERS

URL_UNREACHABLE = "image_url_unreachable"  # the error code of a remote media URL (images, videos alike)


class BadRequest(Exception):
    """A well-typed request that cannot be served; answered with 400 and this message."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Any = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None


def _text(content: str | list[ContentPart] | None, index: int) -> str:
    text, media = _text_and_media(content, index)
    if media:
        raise BadRequest(f"messages[{index}]: images, videos and audio are read in user messages only", "messages")
    return text


AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "m4a", "webm")  # what an input_audio part's ``format`` may say


def _text_and_media(content: str | list[ContentPart] | None, index: int) -> tuple[str, dict[str, list[str]]]:
    """The text of a message and its media references per kind (``{"images": [url, ...]}``); each
    ``image_url`` / ``video_url`` / ``input_audio`` part leaves its ``<image>``/``<video>``/``<audio>``
    marker where it was. An ``input_audio`` part (OpenAI: base64 ``data`` + ``format``) becomes a
    ``data:audio/<format>;base64,`` URL."""
    if content is None or isinstance(content, str):
        return content or "", {}
    texts: list[str] = []
    media: dict[str, list[str]] = {}
    for part in content:
        if part.type == "text":
            texts.append(part.text or "")
            continue
        if part.type == "image_url":
            kind, ref = "images", _media_url(part, "image_url", "image", index)
        elif part.type == "video_url":
            kind, ref = "videos", _media_url(part, "video_url", "video", index)
        elif part.type == "input_audio":
            kind, ref = "audios", _input_audio(part, index)
        else:
            raise BadRequest(f"messages[{index}]: content of type '{part.type}' is not supported "
                             "(text, image_url, video_url and input_audio)", "messages")
        media.setdefault(kind, []).append(ref)
        texts.append(PLACEHOLDERS[kind])
    return "".join(texts), media


def _media_url(part: ContentPart, field: str, what: str, index: int) -> str:
    value = getattr(part, field, None)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise BadRequest(f"messages[{index}]: an {field} part needs {field}.url", "messages")
    if url.startswith(("http://", "https://")):
        raise BadRequest(f"messages[{index}]: cannot fetch the remote {what} {url[:80]}: this server runs offline; "
                         "send it as a data: URL (base64) or a local file path", "messages", URL_UNREACHABLE)
    return url


def _input_audio(part: ContentPart, index: int) -> str:
    value = getattr(part, "input_audio", None)
    data = value.get("data") if isinstance(value, dict) else None
    fmt = str(value.get("format") or "").lower() if isinstance(value, dict) else ""
    if not isinstance(data, str) or not data:
        raise BadRequest(f"messages[{index}]: an input_audio part needs input_audio.data (base64)", "messages")
    if fmt not in AUDIO_FORMATS:
        raise BadRequest(f"messages[{index}]: input_audio.format must be one of {', '.join(AUDIO_FORMATS)}, "
                         f"got {fmt or 'nothing'!r}", "messages")
    return f"data:audio/{fmt};base64,{data}"


def to_conversation(request: ChatCompletionRequest) -> tuple[list[dict], list[dict] | None]:
    """Canonical messages (tool calls as ``function_call`` turns) and bare function schemas."""
    messages: list[dict] = []
    for i, msg in enumerate(request.messages):
        text = "" if msg.role == "user" else _text(msg.content, i)
        if msg.role in ("system", "developer"):
            if messages:
                raise BadRequest(f"messages[{i}]: a system message must come first", "messages")
            messages.append({"role": "system", "content": text})
        elif msg.role == "assistant" and msg.tool_calls:
            calls = []
            for call in msg.tool_calls:
                args = call.function.arguments
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except json.JSONDecodeError as exc:
                        raise BadRequest(f"messages[{i}]: tool call arguments are not JSON: {exc.msg}", "messages") from None
                calls.append({"name": call.function.name, "arguments": args})
            messages.append({"role": "function_call", "content": json.dumps(calls, ensure_ascii=False)})
        elif msg.role == "user" and msg.content is None:
            raise BadRequest(f"messages[{i}]: a user message needs content", "messages")
        elif msg.role == "user":
            text, media = _text_and_media(msg.content, i)
            messages.append({"role": "user", "content": text, **media})
        else:
            messages.append({"role": msg.role, "content": text})
    if messages[-1]["role"] not in ("user", "tool"):
        raise BadRequest("the last message must be from the user (or a tool result) for the model to answer", "messages")
    tools = [t.function.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    return messages, tools


def generation_overrides(request: ChatCompletionRequest) -> dict[str, Any]:
    """Engine keyword arguments for the request's sampling settings (None: the configured value)."""
    return {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_new_tokens": request.max_completion_tokens or request.max_tokens,
        "stop": request.stop,
        "num_return_sequences": request.n,
    }
