"""Converters: one per dataset format, each turning a raw row into the canonical record.

The canonical record (docs/ARCHITECTURE.md) is the only shape templates and processors see, so a
new format touches this file only. A converter raises :class:`InvalidExample` with the offending
field instead of guessing; validation.py counts and reports those rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tunery.data.dataset_info import DatasetAttr

USER, ASSISTANT, SYSTEM, TOOL, FUNCTION_CALL = "user", "assistant", "system", "tool", "function_call"


class InvalidExample(ValueError):
    """A row that cannot become a canonical record; ``field`` names the column at fault."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.field = reason, field


def empty_record() -> dict[str, Any]:
    return {"messages": [], "tools": None, "chosen": None, "rejected": None, "kto_tag": None,
            "images": None, "_source": {"file": "", "row": -1}}


def as_text(value: Any, field: str) -> str:
    """Content must be text; dicts/lists (tool arguments, observations) are kept as their JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, int, float, bool)):
        return json.dumps(value, ensure_ascii=False)
    raise InvalidExample(f"expected text, got {type(value).__name__}", field)


def parse_kto_tag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise InvalidExample(f"kto tag must be true or false, got {value!r}", field)


def media_list(row: dict[str, Any], attr: DatasetAttr) -> list[str] | None:
    """Images/videos/audios are kept as given (paths or URLs): Tunery trains text models."""
    out: list[str] = []
    for key in ("images", "videos", "audios"):
        col = attr.column(key)
        if col and row.get(col):
            value = row[col]
            items = value if isinstance(value, list) else [value]
            out.extend(item if isinstance(item, str) else json.dumps(item, ensure_ascii=False) for item in items)
    return out or None


def tools_text(value: Any, field: str) -> str | None:
    """Tools become a JSON list of function schemas; OpenAI's {"type": "function", ...} is unwrapped."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidExample(f"tools is not valid JSON ({exc.msg})", field) from exc
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InvalidExample("tools must be a JSON list of function schemas", field)
    schemas = [t["function"] if isinstance(t, dict) and t.get("type") == "function" and "function" in t else t
               for t in value]
    return json.dumps(schemas, ensure_ascii=False) if schemas else None


# ---------------------------------------------------------------- alpaca

def convert_alpaca(row: dict[str, Any], attr: DatasetAttr) -> dict[str, Any]:
    """instruction (+ "\\n" + input) is the user turn, output the reply, history earlier turns.

    With only a prompt column (e.g. ``{"text": ...}``) this is also the plain-text format for
    pre-training: one user message holding the document.
    """
    record = empty_record()
    system = _system_column(row, attr)
    messages: list[dict[str, str]] = [{"role": SYSTEM, "content": system}] if system else []
    history_col = attr.column("history")
    if history_col and row.get(history_col):
        history = row[history_col]
        if isinstance(history, str):
            try:
                history = json.loads(history)
            except json.JSONDecodeError as exc:
                raise InvalidExample("history is not a list of [prompt, response] pairs", history_col) from exc
        if not isinstance(history, list):
            raise InvalidExample("history must be a list of [prompt, response] pairs", history_col)
        for i, pair in enumerate(history):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InvalidExample(f"history item {i} is not a [prompt, response] pair", history_col)
            messages.append({"role": USER, "content": as_text(pair[0], history_col)})
            messages.append({"role": ASSISTANT, "content": as_text(pair[1], history_col)})
    prompt_col, query_col = attr.column("prompt"), attr.column("query")
    parts = []
    if prompt_col and row.get(prompt_col) not in (None, ""):
        parts.append(as_text(row[prompt_col], prompt_col))
    if query_col and row.get(query_col) not in (None, ""):
        parts.append(as_text(row[query_col], query_col))
    if not parts:
        raise InvalidExample("the prompt is empty", prompt_col)
    messages.append({"role": USER, "content": "\n".join(parts)})

    response_col = attr.column("response")
    response = row.get(response_col) if response_col else None
    if attr.ranking:
        chosen, rejected = _alpaca_pair(row, attr, response)
        record["chosen"] = {"role": ASSISTANT, "content": chosen}
        record["rejected"] = {"role": ASSISTANT, "content": rejected}
    elif isinstance(response, list):
        # Old LLaMA-Factory datasets hold the preferred reply first when ``output`` is a list.
        if response:
            messages.append({"role": ASSISTANT, "content": as_text(response[0], response_col)})
    elif response not in (None, ""):
        messages.append({"role": ASSISTANT, "content": as_text(response, response_col)})
    kto_col = attr.column("kto_tag")
    if kto_col:
        record["kto_tag"] = parse_kto_tag(row.get(kto_col), kto_col)
    record["messages"] = messages
    tools_col = attr.column("tools")
    if tools_col:
        record["tools"] = tools_text(row.get(tools_col), tools_col)
    record["images"] = media_list(row, attr)
    return record


def _alpaca_pair(row: dict[str, Any], attr: DatasetAttr, response: Any) -> tuple[str, str]:
    chosen_col, rejected_col = attr.column("chosen"), attr.column("rejected")
    if chosen_col and rejected_col:
        chosen, rejected = row.get(chosen_col), row.get(rejected_col)
        # sharegpt-shaped messages inside an alpaca entry are accepted too
        chosen = _message_content(chosen, attr) if isinstance(chosen, dict) else chosen
        rejected = _message_content(rejected, attr) if isinstance(rejected, dict) else rejected
        if chosen in (None, ""):
            raise InvalidExample("the chosen reply is empty", chosen_col)
        if rejected in (None, ""):
            raise InvalidExample("the rejected reply is empty", rejected_col)
        return as_text(chosen, chosen_col), as_text(rejected, rejected_col)
    if isinstance(response, list) and len(response) >= 2:
        return as_text(response[0], attr.column("response")), as_text(response[1], attr.column("response"))
    raise InvalidExample("a ranking dataset needs chosen and rejected columns", chosen_col or "chosen")


def _message_content(message: dict[str, Any], attr: DatasetAttr) -> Any:
    for key in (attr.tags["content_tag"], "content", "value"):
        if key in message:
            return message[key]
    return None


# ---------------------------------------------------------------- sharegpt

def _message_list(row: dict[str, Any], attr: DatasetAttr, default_col: str) -> tuple[str, list]:
    """The row's conversation column (sharegpt and OpenAI shapes), which must be a non-empty list."""
    col = attr.column("messages") or default_col
    raw = row.get(col)
    if not isinstance(raw, list) or not raw:
        raise InvalidExample("messages must be a non-empty list", col)
    return col, raw


def _system_column(row: dict[str, Any], attr: DatasetAttr) -> str | None:
    """The system prompt from the ``system`` column, when the dataset maps one and the row has it."""
    system_col = attr.column("system")
    if system_col and row.get(system_col):
        return as_text(row[system_col], system_col)
    return None


def convert_sharegpt(row: dict[str, Any], attr: DatasetAttr) -> dict[str, Any]:
    """Role rules: optional leading system; then user/observation at odd, assistant/function at even."""
    record = empty_record()
    col, raw = _message_list(row, attr, "conversations")
    tags = attr.tags
    role_map = {
        tags["user_tag"]: USER,
        tags["assistant_tag"]: ASSISTANT,
        tags["observation_tag"]: TOOL,
        tags["function_tag"]: FUNCTION_CALL,
        tags["system_tag"]: SYSTEM,
    }
    system = _system_column(row, attr)
    items = list(raw)
    first = items[0] if isinstance(items[0], dict) else {}
    if first.get(tags["role_tag"]) == tags["system_tag"]:
        system = as_text(first.get(tags["content_tag"]), col)  # a system turn overrides the column
        items = items[1:]
    messages: list[dict[str, str]] = [{"role": SYSTEM, "content": system}] if system else []
    odd_roles, even_roles = (USER, TOOL), (ASSISTANT, FUNCTION_CALL)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or tags["role_tag"] not in item:
            raise InvalidExample(f"message {i + 1} has no '{tags['role_tag']}' key", col)
        role = role_map.get(item[tags["role_tag"]])
        if role is None:
            raise InvalidExample(f"message {i + 1} has unknown role '{item[tags['role_tag']]}'", col)
        expected = odd_roles if i % 2 == 0 else even_roles
        if role not in expected:
            raise InvalidExample(
                f"message {i + 1} is '{item[tags['role_tag']]}', expected "
                f"{' or '.join(_tag_for(r, tags) for r in expected)} at this position", col)
        messages.append({"role": role, "content": as_text(item.get(tags["content_tag"]), col)})
    _finish_sharegpt(record, row, attr, messages, tags, role_map)
    return record


def _tag_for(role: str, tags: dict[str, str]) -> str:
    return {USER: tags["user_tag"], ASSISTANT: tags["assistant_tag"], TOOL: tags["observation_tag"],
            FUNCTION_CALL: tags["function_tag"]}[role]


def _finish_sharegpt(record: dict[str, Any], row: dict[str, Any], attr: DatasetAttr,
                     messages: list[dict[str, str]], tags: dict[str, str], role_map: dict[str, str]) -> None:
    if attr.ranking:
        for key in ("chosen", "rejected"):
            col = attr.column(key)
            value = row.get(col) if col else None
            if value in (None, ""):
                raise InvalidExample(f"the {key} reply is empty", col or key)
            if isinstance(value, dict):
                role = role_map.get(value.get(tags["role_tag"]), ASSISTANT)
                if role not in (ASSISTANT, FUNCTION_CALL):
                    raise InvalidExample(f"the {key} message must be an assistant turn", col)
                content = as_text(value.get(tags["content_tag"]), col)
            else:
                role, content = ASSISTANT, as_text(value, col)
            record[key] = {"role": role, "content": content}
    kto_col = attr.column("kto_tag")
    if kto_col:
        record["kto_tag"] = parse_kto_tag(row.get(kto_col), kto_col)
    record["messages"] = messages
    tools_col = attr.column("tools")
    if tools_col:
        record["tools"] = tools_text(row.get(tools_col), tools_col)
    record["images"] = media_list(row, attr)


# ---------------------------------------------------------------- openai

def convert_openai(row: dict[str, Any], attr: DatasetAttr) -> dict[str, Any]:
    """OpenAI chat ``messages``: assistant ``tool_calls`` become function_call turns, ``tool`` stays tool."""
    record = empty_record()
    col, raw = _message_list(row, attr, "messages")
    tags = attr.tags
    role_map = {
        tags["user_tag"]: USER, "user": USER,
        tags["assistant_tag"]: ASSISTANT, "assistant": ASSISTANT,
        tags["observation_tag"]: TOOL, "tool": TOOL, "function": TOOL, "ipython": TOOL,
        tags["system_tag"]: SYSTEM, "system": SYSTEM, "developer": SYSTEM,
        tags["function_tag"]: FUNCTION_CALL,
    }
    system = _system_column(row, attr)
    messages: list[dict[str, str]] = [{"role": SYSTEM, "content": system}] if system else []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidExample(f"message {i + 1} is not an object", col)
        role = role_map.get(item.get(tags["role_tag"]))
        if role is None:
            raise InvalidExample(f"message {i + 1} has unknown role '{item.get(tags['role_tag'])}'", col)
        content = _openai_content(item.get(tags["content_tag"]), col, i)
        if role == SYSTEM:
            if messages and messages[0]["role"] == SYSTEM or any(m["role"] != SYSTEM for m in messages):
                raise InvalidExample(f"message {i + 1}: a system message must come first, and only once", col)
            messages.append({"role": SYSTEM, "content": content})
            continue
        if role == ASSISTANT and item.get("tool_calls"):
            if content.strip():
                raise InvalidExample(
                    f"message {i + 1} has both text and tool_calls; put the text in its own assistant turn", col)
            messages.append({"role": FUNCTION_CALL, "content": _tool_calls_json(item["tool_calls"], col, i)})
            continue
        messages.append({"role": role, "content": content})
    record["messages"] = messages
    if attr.ranking:
        _finish_sharegpt(record, row, attr, messages, tags, role_map)
        return record
    kto_col = attr.column("kto_tag")
    if kto_col:
        record["kto_tag"] = parse_kto_tag(row.get(kto_col), kto_col)
    tools_col = attr.column("tools") or ("tools" if "tools" in row else None)
    if tools_col:
        record["tools"] = tools_text(row.get(tools_col), tools_col)
    record["images"] = media_list(row, attr)
    return record


def _openai_content(value: Any, col: str, i: int) -> str:
    """Content may be a string or a list of {"type": "text", "text": ...} parts (text parts are joined)."""
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return as_text(value, col)


def _tool_calls_json(tool_calls: Any, col: str, i: int) -> str:
    """``[{"name": ..., "arguments": {...}}]``: the function_call content of the canonical record."""
    if isinstance(tool_calls, dict):
        tool_calls = [tool_calls]
    calls = []
    for call in tool_calls:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or "name" not in fn:
            raise InvalidExample(f"message {i + 1} has a tool call without a function name", col)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                raise InvalidExample(f"message {i + 1}: tool call arguments are not valid JSON", col) from exc
        calls.append({"name": fn["name"], "arguments": args})
    return json.dumps(calls if len(calls) > 1 else calls[0], ensure_ascii=False)


CONVERTERS: dict[str, Callable[[dict[str, Any], DatasetAttr], dict[str, Any]]] = {
    "alpaca": convert_alpaca,
    "sharegpt": convert_sharegpt,
    "openai": convert_openai,
}


def convert_row(row: dict[str, Any], attr: DatasetAttr, file: str, index: int) -> dict[str, Any]:
    """Convert one raw row with the converter of its dataset, stamping where it came from."""
    record = CONVERTERS[attr.formatting](row, attr)
    record["_source"] = {"file": file, "row": index}
    return record
