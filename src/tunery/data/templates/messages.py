"""Canonical record messages -> the OpenAI/Hugging Face message shape that Jinja chat templates read.

Canonical records keep a tool call as a ``function_call`` turn whose content is JSON; official chat
templates expect an assistant message with ``tool_calls`` and tool answers with ``role: tool``.
"""

from __future__ import annotations

import json
from typing import Any

from tunery.errors import DataError


def parse_call_content(content: Any) -> list[dict]:
    """The calls in a ``function_call`` turn as ``[{"name": str, "arguments": dict}]``.

    Accepts one call or a list, with ``arguments`` (or ``parameters``) as an object or a JSON string,
    and the OpenAI ``{"type": "function", "function": {...}}`` wrapper.
    """
    data = content
    if isinstance(content, str):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"function_call content is not valid JSON: {exc.msg}", field="function_call",
                            hint='write the call as {"name": ..., "arguments": {...}}') from exc
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            item = item["function"]
        if not isinstance(item, dict) or "name" not in item:
            raise DataError("a function call needs a 'name'", field="function_call",
                            hint='write the call as {"name": ..., "arguments": {...}}')
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                pass  # keep a non-JSON argument string as it is; templates print it verbatim
        calls.append({"name": item["name"], "arguments": args})
    return calls


def call_id(index: int) -> str:
    """A deterministic tool-call id; 9 alphanumerics because Mistral's templates insist on that."""
    return f"call{index:05d}"


def to_hf_messages(messages: list[dict], *, call_content: str | None = "", json_arguments: bool = False) -> list[dict]:
    """Convert canonical messages for a Jinja chat template (tool calls, tool answers with ids).

    Templates disagree on the shape of a tool-call message: most read ``arguments`` as an object
    and ignore ``content``, DeepSeek's need ``content`` None and ``arguments`` as a JSON string.
    """
    out: list[dict] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    n_calls = 0
    for msg in messages:
        role, content = msg.get("role"), msg.get("content", "")
        if role == "function_call":
            tool_calls = []
            for call in parse_call_content(content):
                cid = call_id(n_calls)
                n_calls += 1
                pending.append((cid, call["name"]))
                args = call["arguments"]
                if json_arguments and not isinstance(args, str):
                    args = json.dumps(args, ensure_ascii=False)
                tool_calls.append({"id": cid, "type": "function", "function": {"name": call["name"], "arguments": args}})
            out.append({"role": "assistant", "content": call_content, "tool_calls": tool_calls})
        elif role in ("tool", "observation"):
            entry = {"role": "tool", "content": content}
            if pending:
                cid, name = pending.pop(0)
                entry.update(tool_call_id=cid, name=name)
            out.append(entry)
        else:
            out.append({"role": role, "content": content})
    return out


def to_hf_tools(tools: list[dict] | None) -> list[dict] | None:
    """Wrap bare function schemas as ``{"type": "function", "function": schema}`` (the HF convention)."""
    if not tools:
        return None
    return [t if "function" in t and t.get("type", "function") == "function" else {"type": "function", "function": t}
            for t in tools]


def is_assistant(role: str) -> bool:
    return role in ("assistant", "function_call")
