"""Converters: each dataset format becomes the canonical record; bad rows raise InvalidExample."""

from __future__ import annotations

import json
import os

import pytest

from tunery.data.converters import InvalidExample, convert_alpaca, convert_openai, convert_sharegpt
from tunery.data.dataset_info import DatasetAttr, parse_dataset_attr


def attr(entry: dict) -> DatasetAttr:
    return parse_dataset_attr("t", {"file_name": "x.json", **entry}, "/data")


def roles(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_dataset_info_defaults_match_llamafactory():
    a = attr({})
    assert a.formatting == "alpaca" and a.ranking is False and a.split == "train"
    assert a.columns["prompt"] == "instruction" and a.columns["query"] == "input"
    assert a.columns["response"] == "output" and a.columns["messages"] == "conversations"
    assert a.columns["history"] is None and a.columns["system"] is None
    assert a.tags == {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                      "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
    hub = parse_dataset_attr("h", {"hf_hub_url": "org/ds", "subset": "s", "folder": "f", "num_samples": 5}, "/d")
    assert (hub.load_from, hub.dataset_name, hub.subset, hub.folder, hub.num_samples) == ("hf_hub", "org/ds", "s", "f", 5)


def test_dataset_info_rejects_unknown_column_key():
    from tunery.errors import DataError

    with pytest.raises(DataError, match="unknown column keys.*promt"):
        attr({"columns": {"promt": "q"}})


def test_alpaca_joins_instruction_and_input_with_history_and_system():
    a = attr({"columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                          "history": "history"}})
    rec = convert_alpaca({"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief",
                          "history": [["hi", "hello!"], ["2+2", "4"]]}, a)
    assert roles(rec) == [("system", "Be brief"), ("user", "hi"), ("assistant", "hello!"), ("user", "2+2"),
                          ("assistant", "4"), ("user", "Translate\nbonjour"), ("assistant", "hello")]
    no_input = convert_alpaca({"instruction": "Say hi", "input": "", "output": "hi"}, a)
    assert roles(no_input) == [("user", "Say hi"), ("assistant", "hi")]


def test_alpaca_plain_text_is_one_user_message():
    rec = convert_alpaca({"text": "a document"}, attr({"columns": {"prompt": "text"}}))
    assert roles(rec) == [("user", "a document")]


def test_alpaca_preference_and_kto():
    pref = convert_alpaca({"instruction": "q", "chosen": "good", "rejected": "bad"},
                          attr({"ranking": True, "columns": {"chosen": "chosen", "rejected": "rejected"}}))
    assert roles(pref) == [("user", "q")]
    assert pref["chosen"] == {"role": "assistant", "content": "good"}
    assert pref["rejected"] == {"role": "assistant", "content": "bad"}
    kto = convert_alpaca({"instruction": "q", "output": "a", "tag": "false"}, attr({"columns": {"kto_tag": "tag"}}))
    assert kto["kto_tag"] is False
    with pytest.raises(InvalidExample) as err:
        convert_alpaca({"instruction": "q", "output": "a", "tag": "maybe"}, attr({"columns": {"kto_tag": "tag"}}))
    assert err.value.field == "tag"


def test_alpaca_empty_prompt_is_invalid():
    with pytest.raises(InvalidExample, match="prompt is empty") as err:
        convert_alpaca({"instruction": "", "output": "x"}, attr({}))
    assert err.value.field == "instruction"


SHAREGPT = {"formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools", "system": "system"}}


def test_sharegpt_tool_roles_and_tools():
    tools = json.dumps([{"name": "f", "description": "d", "parameters": {}}])
    rec = convert_sharegpt({"conversations": [
        {"from": "human", "value": "call f"},
        {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
        {"from": "observation", "value": "42"},
        {"from": "gpt", "value": "it is 42"},
    ], "tools": tools, "system": "sys"}, attr(SHAREGPT))
    assert roles(rec) == [("system", "sys"), ("user", "call f"), ("function_call", '{"name": "f", "arguments": {}}'),
                          ("tool", "42"), ("assistant", "it is 42")]
    assert json.loads(rec["tools"]) == [{"name": "f", "description": "d", "parameters": {}}]


def test_sharegpt_leading_system_turn_overrides_system_column():
    rec = convert_sharegpt({"conversations": [{"from": "system", "value": "turn sys"}, {"from": "human", "value": "q"},
                                              {"from": "gpt", "value": "a"}], "system": "column sys"}, attr(SHAREGPT))
    assert roles(rec)[0] == ("system", "turn sys")


@pytest.mark.parametrize("conv, message", [
    ([{"from": "gpt", "value": "a"}], "message 1 is 'gpt', expected human or observation"),
    ([{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}], "message 2 is 'human', expected gpt or"),
    ([{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}], "unknown role 'bot'"),
    ([], "non-empty list"),
])
def test_sharegpt_role_position_rules(conv, message):
    with pytest.raises(InvalidExample, match=message) as err:
        convert_sharegpt({"conversations": conv}, attr(SHAREGPT))
    assert err.value.field == "conversations"


def test_sharegpt_preference_with_message_dicts_and_custom_tags():
    a = attr({"formatting": "sharegpt", "ranking": True,
              "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
              "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}})
    rec = convert_sharegpt({"messages": [{"role": "user", "content": "q"}],
                            "chosen": {"role": "assistant", "content": "good"},
                            "rejected": {"role": "assistant", "content": "bad"}}, a)
    assert roles(rec) == [("user", "q")]
    assert rec["chosen"]["content"] == "good" and rec["rejected"]["content"] == "bad"


OPENAI = {"formatting": "openai", "columns": {"messages": "messages", "tools": "tools"}}


def test_openai_tool_calls_become_function_call_turns():
    rec = convert_openai({"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]},
        attr(OPENAI))
    assert roles(rec) == [("system", "sys"), ("user", "weather in Paris?"),
                          ("function_call", '{"name": "get_weather", "arguments": {"city": "Paris"}}'),
                          ("tool", "sunny"), ("assistant", "It is sunny.")]
    assert json.loads(rec["tools"]) == [{"name": "get_weather", "parameters": {"type": "object"}}]


def test_openai_parallel_tool_calls_are_a_json_list_and_bad_arguments_are_invalid():
    calls = [{"type": "function", "function": {"name": "a", "arguments": "{}"}},
             {"type": "function", "function": {"name": "b", "arguments": '{"x": 1}'}}]
    rec = convert_openai({"messages": [{"role": "user", "content": "q"},
                                       {"role": "assistant", "tool_calls": calls}]}, attr(OPENAI))
    assert json.loads(rec["messages"][1]["content"]) == [{"name": "a", "arguments": {}},
                                                           {"name": "b", "arguments": {"x": 1}}]
    bad = [{"type": "function", "function": {"name": "a", "arguments": "{not json"}}]
    with pytest.raises(InvalidExample, match="not valid JSON"):
        convert_openai({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": bad}]},
                       attr(OPENAI))


def test_every_local_reference_dataset_converts(reference_dir):
    """Each entry of LLaMA-Factory's dataset_info.json with a local file loads with no invalid row."""
    import os

    from tunery.data.dataset_info import read_dataset_info
    from tunery.data.loader import load_dataset_records
    from tunery.data.validation import check_record

    data_dir = str(reference_dir / "lf" / "data")
    checked = []
    for name, entry in read_dataset_info(data_dir).items():
        a = parse_dataset_attr(name, entry, data_dir)
        if a.load_from != "file" or not os.path.exists(a.path):
            continue
        stage = "pairwise" if a.ranking else "kto" if a.column("kto_tag") else "pt" if name == "c4_demo" else "sft"
        records, report = load_dataset_records(a, stage)
        assert report.skipped == 0, (name, report.problems)
        assert len(records) == report.total > 0
        assert all(check_record(r, stage) is None for r in records)
        checked.append(name)
    assert {"identity", "alpaca_en_demo", "glaive_toolcall_en_demo", "dpo_en_demo", "kto_en_demo", "c4_demo",
            "mllm_demo"} <= set(checked)


def test_identity_placeholders_are_kept(reference_dir):
    from tunery.data.dataset_info import get_dataset_attrs
    from tunery.data.loader import load_dataset_records

    (a,) = get_dataset_attrs("identity", str(reference_dir / "lf" / "data"))
    records, _ = load_dataset_records(a, "sft")
    assert any("{{name}}" in r["messages"][-1]["content"] and "{{author}}" in r["messages"][-1]["content"]
               for r in records)


def test_mllm_demo_keeps_image_paths(reference_dir):
    """Image paths are read relative to dataset_dir (media_dir unset), as LLaMA-Factory reads them."""
    from tunery.data.dataset_info import get_dataset_attrs
    from tunery.data.loader import load_dataset_records

    data_dir = str(reference_dir / "lf" / "data")
    (a,) = get_dataset_attrs("mllm_demo", data_dir)
    records, _ = load_dataset_records(a, "sft")
    assert records[0]["images"] == [os.path.join(data_dir, "mllm_demo_data/1.jpg")] * 2
    assert records[0]["messages"][0] == {"role": "user", "content": "<image>Who are they?"}
