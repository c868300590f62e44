"""Loader: local file types and folders, mixing, max_samples, splits, streaming, hub errors, invalid rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunery.config import parse_config
from tunery.data.dataset_info import get_dataset_attrs
from tunery.data.loader import load_dataset_records, load_mixed, split_eval
from tunery.errors import ConfigError, DataError

ROWS = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(10)]


def write_info(folder: Path, info: dict) -> str:
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return str(folder)


def data_args(folder, **kw):
    return parse_config("data", {"dataset_dir": str(folder), **kw}).data


def write_all_formats(folder: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    (folder / "a.json").write_text(json.dumps(ROWS))
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    keys = list(ROWS[0])
    (folder / "a.csv").write_text(",".join(keys) + "\n" + "\n".join(",".join(r[k] for k in keys) for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "a.parquet")
    ds = Dataset.from_list(ROWS)
    ds.save_to_disk(str(folder / "arrow_dir"))
    arrow_file = next((folder / "arrow_dir").glob("*.arrow"))
    arrow_file.rename(folder / "a.arrow")
    (folder / "a.txt").write_text("\n".join(f"document {i}" for i in range(10)))
    (folder / "shards").mkdir()
    (folder / "shards" / "p1.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:4]))
    (folder / "shards" / "p2.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[4:]))
    return {"json": {"file_name": "a.json"}, "jsonl": {"file_name": "a.jsonl"}, "csv": {"file_name": "a.csv"},
            "parquet": {"file_name": "a.parquet"}, "arrow": {"file_name": "a.arrow"},
            "txt": {"file_name": "a.txt", "columns": {"prompt": "text"}}, "folder": {"file_name": "shards"}}


@pytest.fixture
def all_formats(tmp_path):
    return write_info(tmp_path, write_all_formats(tmp_path))


@pytest.mark.parametrize("name", ["json", "jsonl", "csv", "parquet", "arrow", "folder"])
def test_each_file_type_loads_the_same_records(all_formats, name):
    (a,) = get_dataset_attrs(name, all_formats)
    records, report = load_dataset_records(a, "sft")
    assert report.total == 10 and report.skipped == 0
    assert [r["messages"] for r in records] == [
        [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
        for i in range(10)]


def test_txt_lines_are_documents(all_formats):
    (a,) = get_dataset_attrs("txt", all_formats)
    records, _ = load_dataset_records(a, "pt")
    assert [r["messages"][0]["content"] for r in records] == [f"document {i}" for i in range(10)]


def test_max_samples_and_num_samples(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    folder = write_info(tmp_path, {"a": {"file_name": "a.json"}, "b": {"file_name": "a.json", "num_samples": 25}})
    (a, b) = get_dataset_attrs("a,b", folder)
    records, _ = load_dataset_records(a, "sft", max_samples=3)
    assert [r["_source"]["row"] for r in records] == [0, 1, 2]
    sampled, _ = load_dataset_records(b, "sft")
    assert len(sampled) == 25 and len({r["_source"]["row"] for r in sampled}) == 10


def _two_datasets(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": f"b{i}", "output": "x"} for i in range(4)]))
    return write_info(tmp_path, {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}})


def test_mix_concat_and_interleave(tmp_path):
    folder = _two_datasets(tmp_path)
    concat, report = load_mixed("a,b", data_args(folder), "sft")
    assert len(concat) == 14 and report.total == 14
    under, _ = load_mixed("a,b", data_args(folder, mix_strategy="interleave_under"), "sft")
    over, _ = load_mixed("a,b", data_args(folder, mix_strategy="interleave_over"), "sft")
    assert len(under) == 8  # alternates until the 4-row dataset runs out
    assert len(over) == 20  # alternates until both are exhausted (the short one repeats)
    probs, _ = load_mixed("a,b", data_args(folder, mix_strategy="interleave_over", interleave_probs="0.9,0.1"), "sft")
    firsts = [m[0]["content"] for m in probs["messages"]]
    assert sum(c.startswith("b") for c in firsts) < sum(c.startswith("question") for c in firsts)
    with pytest.raises(ConfigError, match="2 datasets"):
        load_mixed("a,b", data_args(folder, mix_strategy="interleave_under", interleave_probs="1.0"), "sft")


def test_val_size_fraction_count_and_eval_dataset(tmp_path):
    folder = _two_datasets(tmp_path)
    records, _ = load_mixed("a", data_args(folder), "sft")
    train, evaluation = split_eval(records, 0.2, seed=1)
    assert (len(train), len(evaluation)) == (8, 2)
    train, evaluation = split_eval(records, 3, seed=1)
    assert (len(train), len(evaluation)) == (7, 3)
    with pytest.raises(DataError, match="leaves no training"):
        split_eval(records, 10, seed=1)


def test_streaming_yields_records_and_skips_invalid(tmp_path, caplog):
    rows = ROWS[:5] + [{"instruction": "", "output": "x"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    folder = write_info(tmp_path, {"a": {"file_name": "a.jsonl"}})
    stream, _ = load_mixed("a", data_args(folder, streaming=True), "sft")
    from datasets import IterableDataset

    assert isinstance(stream, IterableDataset)
    got = list(stream)
    assert len(got) == 5 and got[0]["messages"][1]["content"] == "answer 0"


def test_invalid_rows_are_skipped_counted_and_reported(tmp_path):
    rows = [ROWS[0], {"instruction": "", "output": "x"}, {"instruction": "q"}, ROWS[1], "not an object"]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    folder = write_info(tmp_path, {"a": {"file_name": "a.json"}})
    (a,) = get_dataset_attrs("a", folder)
    records, report = load_dataset_records(a, "sft")
    assert len(records) == 2 and report.skipped == 3 and report.total == 5
    p = report.problems
    assert (p[0].row, p[0].field, p[0].reason) == (1, "instruction", "the prompt is empty")
    assert (p[1].row, p[1].reason) == (2, "the conversation must end with an assistant reply")
    assert p[2].row == 4 and "not an object" in p[2].reason
    assert p[0].file.endswith("a.json") and "a.json row 1 field 'instruction'" in report.summary()


def test_strict_turns_the_first_invalid_row_into_an_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([ROWS[0], {"instruction": "", "output": "x"}]))
    folder = write_info(tmp_path, {"a": {"file_name": "a.json"}})
    with pytest.raises(DataError) as err:
        load_mixed("a", data_args(folder, strict=True), "sft")
    assert err.value.row == 1 and err.value.field == "instruction" and err.value.file.endswith("a.json")


def test_no_valid_example_left_says_why(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "q"}] * 3))
    folder = write_info(tmp_path, {"a": {"file_name": "a.json"}})
    with pytest.raises(DataError, match="none of the 3 examples is valid: the conversation must end with an assistant"):
        load_mixed("a", data_args(folder), "sft")


def test_dataset_shaped_for_another_stage_names_that_stage(tmp_path):
    """A newcomer's `tunery data check --dataset dpo_en_demo` (stage sft by default) used to end in
    "the conversation must end with an assistant reply" with a generic hint; the hint names the stage."""
    pairs = [{"instruction": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(3)]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "sft.json").write_text(json.dumps(ROWS[:3]))
    (tmp_path / "text.jsonl").write_text("\n".join(json.dumps({"text": f"document {i}"}) for i in range(3)))
    folder = write_info(tmp_path, {
        "pairs": {"file_name": "pairs.json", "ranking": True,
                  "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
        "sft": {"file_name": "sft.json"},
        "text": {"file_name": "text.jsonl", "columns": {"prompt": "text"}},
    })
    with pytest.raises(DataError) as err:
        load_mixed("pairs", data_args(folder), "sft")
    assert "'pairs' is a preference dataset (ranking: true" in err.value.hint and "stage rm, dpo" in err.value.hint
    with pytest.raises(DataError) as err:
        load_mixed("sft", data_args(folder), "dpo")
    assert "stage dpo trains on preference pairs" in err.value.hint and "ranking: true" in err.value.hint
    with pytest.raises(DataError) as err:
        load_mixed("text", data_args(folder), "sft")
    assert "'text' is plain text" in err.value.hint and "stage pt" in err.value.hint
    dataset, report = load_mixed("pairs", data_args(folder), "dpo")  # the right stage loads them
    assert len(dataset) == 3 and report.valid == 3


def test_bad_jsonl_line_is_an_invalid_row(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n{broken\n" + json.dumps(ROWS[1]))
    folder = write_info(tmp_path, {"a": {"file_name": "a.jsonl"}})
    (a,) = get_dataset_attrs("a", folder)
    records, report = load_dataset_records(a, "sft")
    assert len(records) == 2 and report.problems[0].row == 1 and "not valid JSON" in report.problems[0].reason


def test_missing_file_and_unknown_dataset_are_clear_errors(tmp_path):
    folder = write_info(tmp_path, {"gone": {"file_name": "gone.json"}})
    with pytest.raises(DataError, match="file of dataset 'gone' not found"):
        load_mixed("gone", data_args(folder), "sft")
    with pytest.raises(DataError, match="'nope' is not in"):
        load_mixed("nope", data_args(folder), "sft")


def test_wrong_dataset_dir_says_the_folder_is_missing_or_empty(tmp_path):
    """A relative dataset_dir run from another folder used to read "'x' is not in D/dataset_info.json"."""
    with pytest.raises(DataError) as err:
        load_mixed("demo", data_args(tmp_path / "nowhere"), "sft")
    assert f"dataset_dir '{tmp_path / 'nowhere'}' does not exist" in err.value.message
    assert "a relative dataset_dir starts at the folder tunery runs in" in err.value.hint
    with pytest.raises(DataError, match="holds no dataset_info.json"):
        load_mixed("demo", data_args(tmp_path), "sft")


def test_hub_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = write_info(tmp_path, {"remote": {"hf_hub_url": "tunery-test/does-not-exist"}})
    with pytest.raises(DataError, match="could not load dataset 'remote'.*Hugging Face Hub: offline mode") as err:
        load_mixed("remote", data_args(folder), "sft")
    assert "file_name" in err.value.hint


def test_modelscope_without_package_is_a_dependency_error(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed")
    from tunery.errors import DependencyError

    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    folder = write_info(tmp_path, {"remote": {"hf_hub_url": "a/b", "ms_hub_url": "c/d"}})
    with pytest.raises(DependencyError, match="modelscope"):
        load_mixed("remote", data_args(folder), "sft")


def test_non_utf8_file_is_a_data_error_and_a_bom_is_accepted(tmp_path):
    (tmp_path / "latin.json").write_bytes(b'[{"instruction": "caf\xe9", "output": "ok"}]')
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS).encode())
    folder = write_info(tmp_path, {"latin": {"file_name": "latin.json"}, "bom": {"file_name": "bom.json"}})
    with pytest.raises(DataError, match="not UTF-8: byte 0xe9 at byte offset 21") as err:
        load_mixed("latin", data_args(folder), "sft")
    assert err.value.file.endswith("latin.json") and "convert the file to UTF-8" in str(err.value.hint)
    (bom,) = get_dataset_attrs("bom", folder)
    records, report = load_dataset_records(bom, "sft")
    assert len(records) == len(ROWS) and not report.problems


def test_dataset_info_not_utf8_or_with_bom(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "dataset_info.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": {"file_name": "a.json"}}).encode())
    (a,) = get_dataset_attrs("a", str(tmp_path))
    assert a.name == "a"
    (tmp_path / "dataset_info.json").write_bytes(b'{"caf\xe9": {"file_name": "a.json"}}')
    with pytest.raises(DataError, match="dataset_info.json is not UTF-8 text"):
        get_dataset_attrs("a", str(tmp_path))
