"""The OpenAI chat-completions request shape (the subset Tunery serves) and its conversion to messages.

Pydantic validates types and ranges (a wrong request gets 422 with the field named); the checks
that need the whole conversation (roles in order, a user turn to answer) raise :class:`BadRequest`
(400). Unknown OpenAI parameters are ignored rather than refused, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.inference.media import IMAGE_PLACEHOLDER


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
    text, images = _text_and_images(content, index)
    if images:
        raise BadRequest(f"messages[{index}]: images are read in user messages only", "messages")
    return text


def _text_and_images(content: str | list[ContentPart] | None, index: int) -> tuple[str, list[str]]:
    """The text of a message and its ``image_url`` URLs; each image leaves an ``<image>`` marker where it was."""
    if content is None or isinstance(content, str):
        return content or "", []
    texts, images = [], []
    for part in content:
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            url = _image_url(part, index)
            images.append(url)
            texts.append(IMAGE_PLACEHOLDER)
        else:
            raise BadRequest(f"messages[{index}]: content of type '{part.type}' is not supported (text and image_url)",
                             "messages")
    return "".join(texts), images


def _image_url(part: ContentPart, index: int) -> str:
    value = getattr(part, "image_url", None)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise BadRequest(f"messages[{index}]: an image_url part needs image_url.url", "messages")
    if url.startswith(("http://", "https://")):
        raise BadRequest(f"messages[{index}]: cannot fetch the remote image {url[:80]}: this server runs offline; "
                         "send it as a data: URL (base64) or a local file path", "messages", "image_url_unreachable")
    return url


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
            text, images = _text_and_images(msg.content, i)
            messages.append({"role": "user", "content": text, **({"images": images} if images else {})})
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
