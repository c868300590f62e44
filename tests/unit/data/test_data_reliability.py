"""Unreadable files are one clear error naming file and place; wrong-typed cells are invalid rows
naming their field; skipped rows are listed; large files are read lazily (docs/reliability.md)."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from tunery.config import parse_config
from tunery.data import readers
from tunery.data.dataset_info import DatasetAttr, parse_dataset_attr
from tunery.data.loader import iter_dataset_records, load_dataset_records, streaming_records
from tunery.data.validation import ValidationReport, problem_from_error
from tunery.errors import DataError

ROW = {"instruction": "question", "input": "", "output": "answer"}


def attr_for(path: Path, **entry) -> DatasetAttr:
    return parse_dataset_attr("d", {"file_name": path.name, **entry}, str(path.parent))


def load(path: Path, stage: str = "sft", **entry):
    return load_dataset_records(attr_for(path, **entry), stage)


def error_of(path: Path, **entry) -> str:
    with pytest.raises(DataError) as info:
        load(path, **entry)
    assert str(path) in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------- unreadable files

def test_non_utf8_jsonl_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "d.jsonl"
    good = (json.dumps(ROW) + "\n").encode()
    body = good * 2 + b'{"instruction": "caf\xe9", "output": "x"}\n'
    path.write_bytes(body)
    text = error_of(path)
    assert "not UTF-8" in text and "line 3" in text and "byte offset {}".format(body.index(b"\xe9")) in text
    assert "0xe9" in text and "iconv" in text


def test_non_utf8_json_array_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "d.json"
    body = b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "\xff", "output": "b"}\n]'
    path.write_bytes(body)
    text = error_of(path)
    assert "not UTF-8" in text and "line 3" in text and "byte offset {}".format(body.index(b"\xff")) in text


def test_non_utf8_csv_is_named_not_a_pandas_traceback(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"instruction,output\nq,a\nq,\xe4\n")
    text = error_of(path)
    assert "not UTF-8" in text and "line 3" in text


@pytest.mark.parametrize("name,body", [
    ("d.json", json.dumps([ROW, ROW])), ("d.jsonl", json.dumps(ROW) + "\n" + json.dumps(ROW)),
    ("d.csv", "instruction,output\nquestion,answer\nq2,a2\n"),
])
def test_utf8_byte_order_mark_is_accepted(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(codecs.BOM_UTF8 + body.encode())
    records, report = load(path)
    assert report.skipped == 0 and len(records) == 2
    assert records[0]["messages"][0]["content"] in ("question",)


def test_utf16_file_is_named(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(codecs.BOM_UTF16_LE + json.dumps([ROW]).encode("utf-16-le"))
    assert "UTF-16" in error_of(path)


def test_truncated_json_array_names_the_row_and_line(tmp_path):
    path = tmp_path / "d.json"
    rows = ",\n".join(json.dumps({**ROW, "output": f"answer {i}"}) for i in range(5))
    path.write_text("[\n" + rows + ',\n{"instruction": "cut sh')
    text = error_of(path)
    assert "breaks at row 5" in text and "line 7" in text and "cut short" in text


def test_broken_array_after_max_samples_is_never_read(tmp_path):
    """max_samples stops reading: the broken tail of the file is not reached."""
    path = tmp_path / "d.json"
    path.write_text("[" + ",".join(json.dumps(ROW) for _ in range(20)) + ', {"broken')
    records, report = load_dataset_records(attr_for(path), "sft", max_samples=5)
    assert len(records) == 5 and report.total == 5


def test_csv_without_header_is_one_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("what is 1+1,2\nwhat is 2+2,4\n")
    text = error_of(path)
    assert "header" in text and "instruction" in text and "what is 1+1" in text


def test_permission_denied_is_named(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROW))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(readers, "open", refuse, raising=False)  # root can read anything: simulate it
    assert "permission denied" in error_of(path)


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.csv"])
def test_empty_file_is_named(tmp_path, name):
    path = tmp_path / name
    path.write_text("  \n" if name != "d.csv" else "")
    assert "empty" in error_of(path)


def test_bad_jsonl_line_is_a_skipped_row_with_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROW) + "\n{oops\n" + json.dumps(ROW) + "\n")
    records, report = load(path)
    assert len(records) == 2 and report.problems[0].row == 1 and "line 2" in report.problems[0].reason


def test_pretty_printed_single_object_and_concatenated_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROW, indent=2))
    assert len(load(path)[0]) == 1
    path.write_text(json.dumps(ROW, indent=2) + "\n" + json.dumps(ROW, indent=2))
    assert len(load(path)[0]) == 2


# ---------------------------------------------------------------- wrong-typed cells

def problems_of(tmp_path: Path, rows: list, stage: str = "sft", good: dict | None = None, **entry) -> list:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows + [good or ROW]))  # one good row so the dataset is not empty
    report = ValidationReport(keep=100)
    attr = attr_for(path, **entry)
    if stage == "pt":
        attr.columns["prompt"] = "text"
    list(iter_dataset_records(attr, stage, report))
    assert report.skipped == len(rows), report.problems
    return [(p.field, p.reason) for p in report.problems]


def test_alpaca_wrong_types_are_invalid_rows_naming_the_column(tmp_path):
    found = problems_of(tmp_path, [
        {"instruction": ["a", "list"], "output": "x"},
        {"instruction": {"a": 1}, "output": "x"},
        {"instruction": "q", "output": 42},
        {"instruction": "q", "input": 3.5, "output": "x"},
        {"instruction": "q", "output": None},
        {"instruction": None, "output": "x"},
        {"instruction": "q", "output": "x", "system": ["s"]},
        {"instruction": "q", "output": "x", "history": [[1, "a"]]},
    ], columns={"system": "system", "history": "history"})
    assert [f for f, _ in found] == ["instruction", "instruction", "output", "input", "output", "instruction",
                                     "system", "history"]
    assert "must be a string, got a list" in found[0][1] and "got a number" in found[2][1]


def test_text_format_wrong_types(tmp_path):
    found = problems_of(tmp_path, [{"text": ["a"]}, {"text": 7}, {"text": None}], stage="pt", good={"text": "doc"})
    assert [f for f, _ in found] == ["text", "text", "text"]


def test_sharegpt_wrong_types(tmp_path):
    ok = {"from": "human", "value": "hi"}
    found = problems_of(tmp_path, [
        {"conversations": [{"from": "human", "value": ["x"]}, {"from": "gpt", "value": "a"}]},
        {"conversations": [ok, {"from": "gpt", "value": 1}]},
        {"conversations": [ok, {"from": "gpt", "value": None}]},
        {"conversations": [{"from": ["human"], "value": "x"}, {"from": "gpt", "value": "a"}]},
        {"conversations": "hello"},
    ], formatting="sharegpt", good={"conversations": [ok, {"from": "gpt", "value": "a"}]})
    assert all(f == "conversations" for f, _ in found)
    assert "message 1 (user) content must be a string, got a list" in found[0][1]
    assert "missing" in found[2][1] and "unknown role a list" in found[3][1]


def test_openai_wrong_types(tmp_path):
    found = problems_of(tmp_path, [
        {"messages": [{"role": "user", "content": {"x": 1}}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": ["x"]}]},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": 5}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": [1]},
    ], formatting="openai", good={"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert [f for f, _ in found] == ["messages"] * 4 + ["tools"]


def test_preference_and_kto_wrong_types(tmp_path):
    found = problems_of(tmp_path, [
        {"instruction": "q", "chosen": ["a"], "rejected": "b"},
        {"instruction": "q", "chosen": "a", "rejected": 3},
    ], stage="dpo", ranking=True, columns={"chosen": "chosen", "rejected": "rejected"},
        good={"instruction": "q", "chosen": "a", "rejected": "b"})
    assert [f for f, _ in found] == ["chosen", "rejected"]
    path = tmp_path / "k.json"
    path.write_text(json.dumps([{**ROW, "label": "maybe"}, {**ROW, "label": True}]))
    records, report = load_dataset_records(attr_for(path, columns={"kto_tag": "label"}), "kto")
    assert len(records) == 1 and report.problems[0].field == "label"


def test_tool_call_and_observation_objects_stay_json(tmp_path):
    path = tmp_path / "d.json"
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": {"name": "f"}},
                             {"from": "observation", "value": {"r": 1}}, {"from": "gpt", "value": "a"}]}
    path.write_text(json.dumps([row]))
    records, _ = load(path, formatting="sharegpt")
    assert [m["content"] for m in records[0]["messages"][1:3]] == ['{"name": "f"}', '{"r": 1}']


# ---------------------------------------------------------------- streaming and skipped rows

def test_streaming_reads_a_json_array_lazily_and_skips_bad_rows(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROW, {"instruction": 5, "output": "x"}, [1], ROW]))
    records = list(streaming_records(attr_for(path), "sft", strict=False, max_samples=None))
    assert len(records) == 2 and records[1]["_source"] == {"file": str(path), "row": 3}


@pytest.mark.parametrize("name,body", [
    ("d.json", b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "caf\xe9", "output": "b"}\n]'),
    ("d.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"}\n{"instruction": "\xe9"}\n'),
    ("d.csv", b"instruction,output\nq,a\nq,\xe4\n"),
    ("d.txt", b"line one\nline two\ncaf\xe9\n"),
])
def test_streaming_non_utf8_file_is_the_same_data_error_before_reading(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(body)
    with pytest.raises(DataError) as streamed:  # raised when the stream is built, not in a DataLoader worker
        streaming_records(attr_for(path), "pt" if name.endswith(".txt") else "sft", strict=False, max_samples=None)
    with pytest.raises(DataError) as loaded:
        load(path, "pt" if name.endswith(".txt") else "sft")
    assert str(streamed.value) == str(loaded.value)
    assert streamed.value.file == str(path) and "not UTF-8" in str(streamed.value) and "line 3" in str(streamed.value)
    assert "iconv" in streamed.value.hint


def test_problem_from_error_parses_processor_errors():
    p = problem_from_error("/x/a b.json row 12: the template rejected it (field 'tools')")
    assert (p.file, p.row, p.field, p.reason) == ("/x/a b.json", 12, "tools", "the template rejected it")


def test_dry_run_names_skipped_rows_and_writes_the_full_list(tiny_chatml_model, tmp_path, capsys, monkeypatch):
    from tests.unit.train_utils import train_config
    from tunery.cli import train as train_cli

    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    rows = [ROW] * 6 + [{"instruction": ["x"], "output": "y"}, {"instruction": "q", "output": 3}]
    (data / "d.json").write_text(json.dumps(rows))
    cfg = train_config(tiny_chatml_model, tmp_path / "out", dataset="d.json", dataset_dir=str(data),
                       cutoff_len=64, dry_run=True, template="chatml")
    assert train_cli.run(cfg) == 0
    text = capsys.readouterr().out
    assert "2 of 8 rows skipped as invalid" in text
    assert f"{data / 'd.json'} row 6 field 'instruction': the prompt must be a string, got a list" in text
    listed = text.split("every skipped row: ")[1].split()[0]
    assert listed.startswith(str(tmp_path / "cache")) and listed.endswith("skipped_rows.jsonl")
    entries = [json.loads(line) for line in Path(listed).read_text().splitlines()]
    assert [(e["row"], e["field"]) for e in entries] == [(6, "instruction"), (7, "output")]
    assert not (tmp_path / "out").exists()


def test_copy_skipped_puts_the_list_in_output_dir(tmp_path):
    from tunery.data import DataStats, copy_skipped, skipped_lines

    source = tmp_path / "skipped_rows.jsonl"
    source.write_text('{"row": 1}\n')
    stats = DataStats(total=3, skipped_invalid=1, problems=["a.json row 1: bad"], skipped_file=str(source))
    target = copy_skipped(stats, str(tmp_path / "out"))
    assert Path(target).read_text() == '{"row": 1}\n'
    assert skipped_lines(stats, target)[-1].endswith(target)


def test_data_check_streaming_and_max_samples(tmp_path):
    from tunery.data.checker import check_datasets

    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(ROW) for _ in range(30)) + "\n{broken")
    for streaming in (False, True):
        cfg = parse_config("data", {"dataset": "d.jsonl", "dataset_dir": str(tmp_path), "max_samples": 10,
                                    "streaming": streaming})
        (result,) = check_datasets(cfg)
        assert (result.status, result.total, result.valid) == ("ok", 10, 10)


@pytest.mark.parametrize("entry,field", [
    ({"file_name": "d.json", "num_samples": []}, "num_samples"),      # found by the fuzzer: int([]) crashed
    ({"file_name": "d.json", "num_samples": 0}, "num_samples"),
    ({"file_name": ["d.json"]}, "file_name"),
    ({"file_name": "d.json", "columns": ["prompt"]}, "columns"),
    ({"file_name": "d.json", "columns": {"prompt": 3}}, "columns"),
    ({"file_name": "d.json", "tags": {"role_tag": None}}, "tags"),
    ({"file_name": "d.json", "ranking": "yes"}, "ranking"),
    ({"file_name": "d.json", "split": None}, "split"),
    ({"file_name": "d.json", "subset": {"a": 1}}, "subset"),
    ({"file_name": "d.json", "formatting": ["alpaca"]}, "formatting"),
])
def test_dataset_info_values_of_the_wrong_type_are_data_errors(tmp_path, entry, field):
    with pytest.raises(DataError) as info:
        parse_dataset_attr("d", entry, str(tmp_path))
    assert info.value.field == field and "dataset_info.json" in str(info.value)


def test_single_line_csv_is_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("what is 1+1,2\n")
    assert "single line" in error_of(path)


def test_training_copies_skipped_rows_into_output_dir(tiny_chatml_model, tmp_path, monkeypatch):
    from tests.unit.train_utils import train_config
    from tunery.train import workflow

    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "d.json").write_text(json.dumps([ROW] * 4 + [{"instruction": "q", "output": {"a": 1}}]))
    out = tmp_path / "out"
    cfg = train_config(tiny_chatml_model, out, dataset="d.json", dataset_dir=str(data), cutoff_len=64,
                       template="chatml", max_steps=1)
    workflow.run_train(cfg)
    entries = [json.loads(line) for line in (out / "skipped_rows.jsonl").read_text().splitlines()]
    assert entries == [{"file": str(data / "d.json"), "row": 4, "field": "output",
                        "reason": "the reply must be a string, got an object"}]


def test_an_empty_column_name_means_not_mapped(tmp_path):
    """LLaMA-Factory's dataset_info.json writes "query": "" for a column that is not there."""
    from tunery.data.dataset_info import get_dataset_attrs

    (tmp_path / "pairs.json").write_text("[]")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"pairs": {
        "file_name": "pairs.json", "ranking": True,
        "columns": {"prompt": "instruction", "query": "", "chosen": "chosen", "rejected": "rejected"}}}))
    (attr,) = get_dataset_attrs("pairs", str(tmp_path))
    assert attr.columns["query"] is None and attr.columns["prompt"] == "instruction"
