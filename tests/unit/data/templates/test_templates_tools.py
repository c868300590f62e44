"""Tool calling: rendering tools, function_call and tool turns; masking; parsing replies back into calls."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tunery.data.template import get_template, parse_tool_calls
from tunery.data.templates.builtin import build_builtin
from tunery.data.templates.jinja_auto import AutoTemplate
from tunery.data.templates.messages import parse_call_content, to_hf_messages
from tunery.data.templates.tools import format_calls, parse_calls
from tunery.errors import ConfigError, DataError

TOOLS = json.dumps([{
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}])
CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
TWO_CALLS = json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                        {"name": "get_weather", "arguments": {"city": "Rome"}}])
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "function_call", "content": TWO_CALLS},
    {"role": "tool", "content": '{"temp": 20}'},
    {"role": "tool", "content": '{"temp": 25}'},
    {"role": "assistant", "content": "Paris 20, Rome 25."},
]


class OfficialTokenizer:
    def __init__(self, entry: dict) -> None:
        self.chat_template = entry["chat_template"]
        self.eos_token = entry["eos_token"]
        self.special_tokens_map = {k: entry[k] for k in ("bos_token", "eos_token") if entry.get(k)}

    def get_chat_template(self, chat_template=None, tools=None):
        return self.chat_template


@pytest.fixture(scope="module")
def official(reference_dir):
    entries = json.loads((reference_dir / "chat_templates.json").read_text())
    return {e["model_id"]: e for e in entries}


def trained(tok, enc, turn):
    return tok.decode([i for i, t in zip(enc.input_ids, enc.turns) if t == turn])


@pytest.mark.parametrize("name,model", [("qwen", "Qwen/Qwen2.5-7B-Instruct"), ("qwen3", "Qwen/Qwen3-0.6B")])
def test_qwen_tool_conversation_matches_official(official, name, model):
    auto = AutoTemplate(OfficialTokenizer(official[model]))
    builtin = build_builtin(name)
    for msgs in (TOOL_CHAT, [{"role": "system", "content": "Be exact."}, *TOOL_CHAT]):
        assert builtin.render_text(msgs, TOOLS) == auto.render_text(msgs, TOOLS)
        assert builtin.render_text(msgs[:1], TOOLS, True) == auto.render_text(msgs[:1], TOOLS, True)
        want = [s.text for s in auto.render(msgs, TOOLS) if s.role == "assistant"]
        assert [s.text for s in builtin.render(msgs, TOOLS) if s.role == "assistant"] == want


def test_glaive_demo_renders_like_official_qwen(official, reference_dir):
    rows = json.loads((reference_dir / "lf/data/glaive_toolcall_en_demo.json").read_text())
    roles = {"human": "user", "gpt": "assistant", "function_call": "function_call", "observation": "tool"}
    auto = AutoTemplate(OfficialTokenizer(official["Qwen/Qwen2.5-7B-Instruct"]))
    builtin = build_builtin("qwen")
    for row in rows[:20]:
        msgs = [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
        assert builtin.render_text(msgs, row["tools"]) == auto.render_text(msgs, row["tools"])


def test_tool_conversation_masking_builtin(tiny_chatml_model):
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    template = get_template("qwen", tok)
    enc = template.encode(tok, TOOL_CHAT, TOOLS)
    assert enc.num_turns == 2
    call_text = trained(tok, enc, 0)
    assert call_text.startswith("<tool_call>\n") and call_text.endswith("</tool_call><|im_end|>")
    assert template.parse_tool_calls(call_text.removesuffix("<|im_end|>")) == json.loads(TWO_CALLS)
    assert trained(tok, enc, 1) == "Paris 20, Rome 25.<|im_end|>"
    untrained = tok.decode([i for i, t in zip(enc.input_ids, enc.turns) if t == -1])
    assert '{"temp": 20}' in untrained and '{"temp": 25}' in untrained and "get_weather" in untrained


def test_tool_conversation_masking_auto(tiny_chatml_model, official):
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    tok.chat_template = official["Qwen/Qwen2.5-7B-Instruct"]["chat_template"]
    template = get_template("auto", tok)
    enc = template.encode(tok, TOOL_CHAT, TOOLS)
    assert enc.num_turns == 2
    assert trained(tok, enc, 0) == format_calls("qwen", json.loads(TWO_CALLS)) + "<|im_end|>"
    assert trained(tok, enc, 1) == "Paris 20, Rome 25.<|im_end|>"
    assert '"temp": 25' not in tok.decode([i for i, t in zip(enc.input_ids, enc.turns) if t >= 0])
    assert parse_tool_calls(template, trained(tok, enc, 0)) == json.loads(TWO_CALLS)


@pytest.mark.parametrize("fmt", ["qwen", "llama3", "mistral", "default"])
def test_format_then_parse_round_trip(fmt):
    calls = json.loads(TWO_CALLS)
    text = format_calls(fmt, calls)
    assert parse_calls(fmt, text) == calls
    assert parse_calls("hf", text) == calls  # auto templates accept any of the formats
    assert parse_calls(fmt, "Paris is sunny today.") is None


def test_parse_model_replies():
    assert parse_calls("qwen", 'Let me check.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>') == [
        {"name": "f", "arguments": {"x": 1}}]
    assert parse_calls("llama3", '<|python_tag|>{"name": "f", "parameters": {"x": "a"}}') == [
        {"name": "f", "arguments": {"x": "a"}}]
    assert parse_calls("mistral", '[TOOL_CALLS] [{"name": "f", "arguments": "{\\"x\\": 2}"}]') == [
        {"name": "f", "arguments": {"x": 2}}]
    assert parse_calls("default", 'Action: f\nAction Input: {"x": 3}') == [{"name": "f", "arguments": {"x": 3}}]
    assert parse_calls("qwen", "<tool_call>\nnot json\n</tool_call>") is None
    with pytest.raises(ConfigError):
        parse_calls("nope", "x")


@pytest.mark.parametrize("name,marker", [("llama3", '"parameters": {"city": "Paris"}'),
                                         ("mistral", '[TOOL_CALLS] [{"name": "get_weather"'),
                                         ("default", "Action: get_weather")])
def test_tool_formats_of_builtins(tiny_llama_model, name, marker):
    tok = AutoTokenizer.from_pretrained(tiny_llama_model)
    template = get_template(name, tok)
    msgs = [{"role": "user", "content": "Weather?"}, {"role": "function_call", "content": CALL},
            {"role": "tool", "content": '{"temp": 20}'}, {"role": "assistant", "content": "20 degrees."}]
    segs = template.render(msgs, TOOLS)
    replies = [s.text for s in segs if s.role == "assistant"]
    assert marker in replies[0]
    assert template.parse_tool_calls(replies[0]) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    announced = "".join(s.text for s in segs if s.role in ("system", "user"))
    assert "get_weather" in announced and "Weather of a city" in announced  # tools announced, untrained
    assert all('"temp"' not in r for r in replies)


def test_call_content_shapes_and_errors():
    assert parse_call_content('{"name": "f", "arguments": "{\\"a\\": 1}"}') == [{"name": "f", "arguments": {"a": 1}}]
    assert parse_call_content({"type": "function", "function": {"name": "g", "parameters": {}}}) == [
        {"name": "g", "arguments": {}}]
    with pytest.raises(DataError, match="not valid JSON"):
        parse_call_content("get_weather(Paris)")
    with pytest.raises(DataError, match="name"):
        parse_call_content('{"arguments": {}}')
    hf = to_hf_messages(TOOL_CHAT)
    assert hf[1]["tool_calls"][1]["function"] == {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert [m.get("tool_call_id") for m in hf[2:4]] == ["call00000", "call00001"]
    assert all(len(c["id"]) == 9 and c["id"].isalnum() for c in hf[1]["tool_calls"])


def test_invalid_tools_json_is_a_data_error(tiny_chatml_model):
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    with pytest.raises(DataError, match="tools"):
        get_template("qwen", tok).render(TOOL_CHAT, "[not json")


ONE_CALL_CHAT = [TOOL_CHAT[0], {"role": "function_call", "content": CALL}, TOOL_CHAT[2],
                 {"role": "assistant", "content": "Paris 20."}]


@pytest.mark.parametrize("model,chat", [
    ("Qwen/Qwen2.5-7B-Instruct", TOOL_CHAT),
    ("Qwen/Qwen3-0.6B", TOOL_CHAT),
    ("mistralai/Mistral-7B-Instruct-v0.3", TOOL_CHAT),
    ("mistralai/Mistral-Nemo-Instruct-2407", TOOL_CHAT),
    ("deepseek-ai/DeepSeek-V3", TOOL_CHAT),  # needs content None and arguments as a JSON string
    ("deepseek-ai/DeepSeek-R1", TOOL_CHAT),
    ("meta-llama/Llama-3.1-8B-Instruct", ONE_CALL_CHAT),  # supports one call per turn
])
def test_auto_trains_tool_calls_of_official_templates(official, model, chat):
    template = AutoTemplate(OfficialTokenizer(official[model]))
    tools = TOOLS
    if not template.supports_tools:  # DeepSeek's templates render calls but never the schemas
        with pytest.raises(DataError, match="no tool support"):
            template.render(chat, TOOLS)
        tools = None
    replies = [s.text for s in template.render(chat, tools) if s.role == "assistant"]
    assert len(replies) == 2
    assert template.parse_tool_calls(replies[0]) == parse_call_content(chat[1]["content"])
    assert replies[1].lstrip().startswith(chat[-1]["content"]) or "</think>" in replies[1]
    assert all('"temp"' not in r for r in replies)  # tool results are never trained


def test_auto_refuses_a_template_that_drops_tool_calls(official):
    """Granite 3.0's template only knows its own 'assistant_tool_call' role: an error, not a silent loss."""
    template = AutoTemplate(OfficialTokenizer(official["ibm-granite/granite-3.0-2b-instruct"]))
    with pytest.raises(DataError, match="does not render this conversation's tool calls"):
        template.render(ONE_CALL_CHAT, TOOLS)


@pytest.mark.parametrize("model,supported", [("Qwen/Qwen2.5-7B-Instruct", True), ("deepseek-ai/DeepSeek-V3", False),
                                             ("HuggingFaceTB/SmolLM2-135M-Instruct", False)])
def test_auto_refuses_tool_schemas_its_template_would_leave_out(official, model, supported):
    """FR2-06: tools on a template that cannot show them are an error naming the fix, never dropped silently."""
    template = AutoTemplate(OfficialTokenizer(official[model]))
    plain = [TOOL_CHAT[0], {"role": "assistant", "content": "It is sunny."}]
    assert template.supports_tools is supported
    if supported:
        assert '"name": "get_weather"' in template.render_text(plain, TOOLS)
        return
    with pytest.raises(DataError, match="no tool support") as err:
        template.render(plain, TOOLS)
    assert "template: qwen" in err.value.hint
    assert "It is sunny." in template.render_text(plain)  # without the schemas the row renders
