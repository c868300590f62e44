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
from tunery.data.media import count_problem, media_columns, missing_problem

MEDIA_PART_TYPES = ("image", "image_url", "input_image", "video", "video_url", "audio", "input_audio", "audio_url")
USER, ASSISTANT, SYSTEM, TOOL, FUNCTION_CALL = "user", "assistant", "system", "tool", "function_call"


class InvalidExample(ValueError):
    """A row that cannot become a canonical record; ``field`` names the column at fault."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.field = reason, field


def empty_record() -> dict[str, Any]:
    return {"messages": [], "tools": None, "chosen": None, "rejected": None, "kto_tag": None,
            "images": None, "videos": None, "audios": None, "_source": {"file": "", "row": -1}}


def kind_of(value: Any) -> str:
    """A JSON-ish name for a value's type, for error messages (``list``, ``object``, ``number``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "list", str: "string"}.get(type(value), type(value).__name__)


def a_kind(value: Any) -> str:
    """``kind_of`` with its article: "a list", "an object", "null"."""
    kind = kind_of(value)
    return kind if kind == "null" else ("an " if kind[0] in "aeiou" else "a ") + kind


def as_text(value: Any, field: str | None, what: str = "text") -> str:
    """A text cell: must be a string (None counts as empty). A list, object or number is an invalid row,
    never its printed form in the prompt."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise InvalidExample(f"{what} must be a string, got {a_kind(value)}", field)


def as_json_text(value: Any, field: str | None, what: str = "content") -> str:
    """Tool-call and tool-result content: a string, or an object/list kept as its JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return as_text(value, field, what)


def parse_kto_tag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise InvalidExample(f"kto tag must be true or false, got {value!r}", field)


def set_media(record: dict[str, Any], row: dict[str, Any], attr: DatasetAttr) -> None:
    """The row's images/videos/audios, with paths resolved against media_dir (default dataset_dir).

    A placeholder count that differs from the media count, or a local file that does not exist,
    makes the row invalid with the media column named (LLaMA-Factory's rule: one ``<image>`` per
    image, in order).
    """
    try:
        media = media_columns(row, attr, attr.media_dir or attr.dataset_dir)
    except ValueError as exc:
        kind, reason = exc.args
        raise InvalidExample(reason, attr.column(kind)) from exc
    record.update(media)
    for check in (count_problem, missing_problem):
        problem = check(record)
        if problem is not None:
            kind, reason = problem
            raise InvalidExample(reason, attr.column(kind) or kind)


def tools_text(value: Any, field: str) -> str | None:
    """Tools become a JSON list of function schemas; OpenAI's {"type": "function", ...} is unwrapped."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidExample(f"tools is not valid JSON ({exc.msg})", field) from exc
        except RecursionError as exc:
            raise InvalidExample("tools is nested too deeply", field) from exc
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InvalidExample("tools must be a JSON list of function schemas", field)
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise InvalidExample(f"tool {i + 1} must be an object (a function schema), got {a_kind(tool)}", field)
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
            messages.append({"role": USER, "content": as_text(pair[0], history_col, f"history item {i} prompt")})
            messages.append({"role": ASSISTANT, "content": as_text(pair[1], history_col, f"history item {i} reply")})
    prompt_col, query_col = attr.column("prompt"), attr.column("query")
    parts = []
    if prompt_col and row.get(prompt_col) not in (None, ""):
        parts.append(as_text(row[prompt_col], prompt_col, "the prompt"))
    if query_col and row.get(query_col) not in (None, ""):
        parts.append(as_text(row[query_col], query_col, "the input"))
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
            messages.append({"role": ASSISTANT, "content": as_text(response[0], response_col, "the reply")})
    elif response not in (None, ""):
        messages.append({"role": ASSISTANT, "content": as_text(response, response_col, "the reply")})
    kto_col = attr.column("kto_tag")
    if kto_col:
        record["kto_tag"] = parse_kto_tag(row.get(kto_col), kto_col)
    record["messages"] = messages
    tools_col = attr.column("tools")
    if tools_col:
        record["tools"] = tools_text(row.get(tools_col), tools_col)
    set_media(record, row, attr)
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
        return as_text(chosen, chosen_col, "the chosen reply"), as_text(rejected, rejected_col, "the rejected reply")
    if isinstance(response, list) and len(response) >= 2:
        col = attr.column("response")
        return as_text(response[0], col, "the chosen reply"), as_text(response[1], col, "the rejected reply")
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
        return as_text(row[system_col], system_col, "the system prompt")
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
    shift = 0  # message numbers in reports count from the row's first message
    if first.get(tags["role_tag"]) == tags["system_tag"]:
        system = _content(first, tags["content_tag"], SYSTEM, col, 0)  # a system turn overrides the column
        items, shift = items[1:], 1
    messages: list[dict[str, str]] = [{"role": SYSTEM, "content": system}] if system else []
    odd_roles, even_roles = (USER, TOOL), (ASSISTANT, FUNCTION_CALL)
    for i, item in enumerate(items):
        n = i + 1 + shift
        if not isinstance(item, dict) or tags["role_tag"] not in item:
            raise InvalidExample(f"message {n} has no '{tags['role_tag']}' key", col)
        role = _role(item.get(tags["role_tag"]), role_map, col, n)
        expected = odd_roles if i % 2 == 0 else even_roles
        if role not in expected:
            raise InvalidExample(
                f"message {n} is '{item[tags['role_tag']]}', expected "
                f"{' or '.join(_tag_for(r, tags) for r in expected)} at this position", col)
        messages.append({"role": role, "content": _content(item, tags["content_tag"], role, col, n - 1)})
    _finish_sharegpt(record, row, attr, messages, tags, role_map)
    return record


def _role(value: Any, role_map: dict[str, str], col: str, n: int) -> str:
    """The canonical role of a message's role value; anything unknown (or not a string) is invalid."""
    role = role_map.get(value) if isinstance(value, str) else None
    if role is None:
        shown = repr(value) if isinstance(value, str) else a_kind(value)
        raise InvalidExample(f"message {n} has unknown role {shown}", col)
    return role


def _content(item: dict[str, Any], key: str, role: str, col: str, i: int, what: str | None = None) -> str:
    """A message's content: text; tool calls and tool results may also be an object/list (kept as JSON).
    A missing or null content is invalid (it would train an empty turn)."""
    what = what or f"message {i + 1} ({role}) content"
    value = item.get(key)
    if value is None:
        raise InvalidExample(f"{what} is missing (no '{key}')", col)
    if role in (FUNCTION_CALL, TOOL):
        return as_json_text(value, col, what)
    return as_text(value, col, what)


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
                content = _content(value, tags["content_tag"], role, col, -1, f"the {key} message")
            else:
                role, content = ASSISTANT, as_text(value, col, f"the {key} reply")
            record[key] = {"role": role, "content": content}
    kto_col = attr.column("kto_tag")
    if kto_col:
        record["kto_tag"] = parse_kto_tag(row.get(kto_col), kto_col)
    record["messages"] = messages
    tools_col = attr.column("tools")
    if tools_col:
        record["tools"] = tools_text(row.get(tools_col), tools_col)
    set_media(record, row, attr)


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
        role = _role(item.get(tags["role_tag"]), role_map, col, i + 1)
        calls = role == ASSISTANT and item.get("tool_calls")
        value = item.get(tags["content_tag"])
        if value is None and not calls:
            raise InvalidExample(f"message {i + 1} ({role}) content is missing (no '{tags['content_tag']}')", col)
        content = as_json_text(value, col, f"message {i + 1} (tool) content") if role == TOOL and \
            isinstance(value, dict) else _openai_content(value, col, i)
        if role == SYSTEM:
            if messages and messages[0]["role"] == SYSTEM or any(m["role"] != SYSTEM for m in messages):
                raise InvalidExample(f"message {i + 1}: a system message must come first, and only once", col)
            messages.append({"role": SYSTEM, "content": content})
            continue
        if calls:
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
    set_media(record, row, attr)
    return record


def _openai_content(value: Any, col: str, i: int) -> str:
    """Content may be a string or a list of {"type": "text", "text": ...} parts (text parts are joined)."""
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(as_text(part.get("text"), col, f"message {i + 1} text part"))
            elif isinstance(part, str):
                texts.append(part)
            elif not isinstance(part, dict):
                raise InvalidExample(f"message {i + 1} content part is {a_kind(part)}, not an object", col)
            elif part.get("type") in MEDIA_PART_TYPES:  # never dropped silently
                raise InvalidExample(
                    f"message {i + 1} has a '{part['type']}' content part; put media in the images/videos/audios "
                    "column with <image>/<video>/<audio> placeholders in the text (LLaMA-Factory's format)", col)
        return "".join(texts)
    return as_text(value, col, f"message {i + 1} content")


def _tool_calls_json(tool_calls: Any, col: str, i: int) -> str:
    """``[{"name": ..., "arguments": {...}}]``: the function_call content of the canonical record."""
    if isinstance(tool_calls, dict):
        tool_calls = [tool_calls]
    if not isinstance(tool_calls, list):
        raise InvalidExample(f"message {i + 1}: tool_calls must be a list, got {a_kind(tool_calls)}", col)
    calls = []
    for call in tool_calls:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidExample(f"message {i + 1} has a tool call without a function name", col)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except (json.JSONDecodeError, RecursionError) as exc:
                raise InvalidExample(f"message {i + 1}: tool call arguments are not valid JSON", col) from exc
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise InvalidExample(f"message {i + 1}: tool call arguments must be an object, got {a_kind(args)}", col)
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
