"""Tool-call formats: how tools are announced, how a call is written, and how a reply is parsed back.

Formats (``tool_format:``): ``qwen`` (ChatML/Hermes ``<tool_call>{json}</tool_call>``, Qwen2.5's
official wording), ``llama3`` (a bare ``{"name", "parameters"}`` JSON object, Llama 3.1 style),
``mistral`` (``[TOOL_CALLS] [...]``), ``default`` (``Action:`` / ``Action Input:`` lines, for
templates whose models have no native format). ``hf`` (used by ``template: auto``, where the
tokenizer's own template writes the calls) parses any of them, and DeepSeek's official format.
"""

from __future__ import annotations

import json
import re

from tunery.errors import ConfigError

FORMATS = ("default", "qwen", "llama3", "mistral", "hf")


def _dumps(obj) -> str:
    # json.dumps with the defaults transformers' tojson uses, so text matches official templates
    return json.dumps(obj, ensure_ascii=False)


def _check(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown tool_format '{fmt}'", hint=f"choose one of: {', '.join(FORMATS)}")
    return fmt


def _schema(tool: dict) -> dict:
    return tool["function"] if isinstance(tool.get("function"), dict) else tool


# -- announcing tools -------------------------------------------------------------------------------
def tools_prompt(fmt: str, tools: list[dict]) -> str:
    """Text appended to the system prompt that lists the tools (starts with a blank line)."""
    fmt = _check(fmt)
    if fmt in ("qwen", "hf"):
        listing = "".join("\n" + _dumps(t if "function" in t else {"type": "function", "function": t})
                          for t in tools)
        return (
            "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
            f"{listing}\n</tools>\n\nFor each function call, return a json object with function name and "
            "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )
    if fmt == "llama3":
        listing = "\n\n".join(json.dumps(t if "function" in t else {"type": "function", "function": t},
                                         ensure_ascii=False, indent=4) for t in tools)
        return (
            "\n\nGiven the following functions, please respond with a JSON for a function call with its "
            "proper arguments that best answers the given prompt.\n\nRespond in the format "
            '{"name": function name, "parameters": dictionary of argument name and its value}.'
            f"Do not use variables.\n\n{listing}"
        )
    if fmt == "mistral":
        listing = _dumps([t if "function" in t else {"type": "function", "function": t} for t in tools])
        return f"\n\n[AVAILABLE_TOOLS] {listing}[/AVAILABLE_TOOLS]"
    lines = []
    for t in tools:
        s = _schema(t)
        lines.append(f"> Tool Name: {s.get('name', '')}\nTool Description: {s.get('description', '')}\n"
                     f"Tool Args: {_dumps(s.get('parameters', {}))}")
    names = ", ".join(_schema(t).get("name", "") for t in tools)
    return (
        "\n\nYou have access to the following tools:\n" + "\n".join(lines) + "\n\n"
        "Use the following format if using a tool:\n```\nAction: tool name (one of [" + names + "])\n"
        "Action Input: the input to the tool, in a JSON format representing the kwargs "
        '(e.g. ```{"input": "hello world", "num_beams": 5}```)\n```'
    )


# -- writing calls -----------------------------------------------------------------------------------
def format_calls(fmt: str, calls: list[dict]) -> str:
    """The assistant text of tool calls ``[{"name", "arguments"}]`` in ``fmt``."""
    fmt = _check(fmt)
    if fmt in ("qwen", "hf"):
        return "\n".join(f'<tool_call>\n{{"name": {_dumps(c["name"])}, "arguments": {_dumps(c["arguments"])}}}'
                         "\n</tool_call>" for c in calls)
    if fmt == "llama3":
        return "; ".join(_dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)
    if fmt == "mistral":
        return "[TOOL_CALLS] " + _dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls])
    return "\n".join(f"Action: {c['name']}\nAction Input: {_dumps(c['arguments'])}" for c in calls)


# -- parsing replies ----------------------------------------------------------------------------------
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
# DeepSeek V2.5/V3/R1 official templates: <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```
_DEEPSEEK_RE = re.compile(r"<｜tool▁call▁begin｜>\w*<｜tool▁sep｜>(.+?)\n```json\n(.*?)\n```", re.DOTALL)
_ACTION_RE = re.compile(r"Action:\s*(.+?)\s*\nAction Input:\s*(.*?)(?=\s*\nAction:|\s*$)", re.DOTALL)


def _call(obj) -> dict | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return {"name": name, "arguments": args if isinstance(args, dict) else {}}


def _json_calls(text: str) -> list[dict] | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = data if isinstance(data, list) else [data]
    calls = [_call(x) for x in items]
    return calls if calls and all(calls) else None


def _parse_qwen(text: str) -> list[dict] | None:
    bodies = _TOOL_CALL_RE.findall(text)
    calls = [c for b in bodies for c in (_json_calls(b) or [])]
    return calls or None


def _parse_llama3(text: str) -> list[dict] | None:
    text = text.strip().removeprefix("<|python_tag|>").strip()
    if not text.startswith(("{", "[")):
        return None
    whole = _json_calls(text)
    if whole:
        return whole
    parts = [_json_calls(p.strip()) for p in text.split(";")]
    return [c for p in parts for c in p] if parts and all(parts) else None


def _parse_mistral(text: str) -> list[dict] | None:
    if "[TOOL_CALLS]" not in text:
        return None
    body = text.split("[TOOL_CALLS]", 1)[1].strip()
    body = body.split("[/TOOL_CALLS]")[0].strip()
    return _json_calls(body)


def _parse_deepseek(text: str) -> list[dict] | None:
    calls = []
    for name, raw in _DEEPSEEK_RE.findall(text):
        try:
            args = json.loads(raw)
        except json.JSONDecodeError:
            return None
        calls.append({"name": name.strip(), "arguments": args if isinstance(args, dict) else {}})
    return calls or None


def _parse_default(text: str) -> list[dict] | None:
    calls = []
    for name, raw in _ACTION_RE.findall(text):
        raw = raw.strip().strip("`").strip()
        try:
            args = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return None
        calls.append({"name": name.strip(), "arguments": args if isinstance(args, dict) else {}})
    return calls or None


def parse_calls(fmt: str, text: str) -> list[dict] | None:
    """Tool calls ``[{"name", "arguments": dict}]`` in a model reply, or None for a plain answer."""
    fmt = _check(fmt)
    parsers = {
        "qwen": (_parse_qwen,),
        "llama3": (_parse_llama3,),
        "mistral": (_parse_mistral,),
        "default": (_parse_default,),
        "hf": (_parse_qwen, _parse_mistral, _parse_deepseek, _parse_llama3, _parse_default),
    }[fmt]
    for parse in parsers:
        calls = parse(text)
        if calls:
            return calls
    return None
