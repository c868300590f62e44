"""get_dataset / get_collator / load_records end to end: columns per stage, stats, cache, workers."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.tiny_models import build_tokenizer
from tunery.config import parse_config
from tunery.data import get_collator, get_dataset, load_records
from tunery.data.processors import IGNORE_INDEX


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("chatml")


@pytest.fixture(scope="module")
def template(tok):
    from tunery.data.template import get_template

    return get_template("chatml", tok)  # the tiny tokenizer's own template has no tool support


def cfg_for(reference_dir, **kw):
    return parse_config("data", {"dataset_dir": str(reference_dir / "lf" / "data"), "cutoff_len": 256, **kw})


@pytest.mark.parametrize("stage, dataset, columns", [
    ("sft", "alpaca_en_demo,glaive_toolcall_en_demo", ["input_ids", "attention_mask", "labels"]),
    ("pt", "c4_demo", ["input_ids", "labels", "position_ids"]),
    ("dpo", "dpo_en_demo", ["prompt_ids", "chosen_ids", "rejected_ids", "chosen_input_ids", "chosen_attention_mask",
                            "chosen_labels", "rejected_input_ids", "rejected_attention_mask", "rejected_labels"]),
    ("kto", "kto_en_demo", ["prompt_ids", "completion_ids", "label", "input_ids", "attention_mask", "labels"]),
    ("unsupervised", "alpaca_en_demo", ["input_ids", "attention_mask", "labels"]),
])
def test_stage_columns_and_collated_batch(reference_dir, tok, template, stage, dataset, columns):
    cfg = cfg_for(reference_dir, dataset=dataset, max_samples=12, val_size=0.25)
    module = get_dataset(cfg, tok, template, stage)
    assert module.train_dataset.column_names == columns
    assert module.eval_dataset is not None and len(module.eval_dataset) > 0
    assert module.stats.skipped_invalid == 0 and module.stats.total == 12 * len(dataset.split(","))
    for row in module.train_dataset:
        for key in columns:
            if key.endswith("input_ids") or key == "input_ids":
                assert 0 < len(row[key]) <= 256
    batch = get_collator(stage, tok, cfg)([module.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].dim() == 2


def test_sft_stats_count_truncated_and_cut_examples(reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="glaive_toolcall_en_demo", max_samples=20, cutoff_len=64)
    module = get_dataset(cfg, tok, template, "sft")
    s = module.stats
    assert s.truncated > 0 and s.truncated + s.reply_cut <= 20
    assert s.train_examples == 20 - s.reply_cut == len(module.train_dataset)
    assert all(any(x != IGNORE_INDEX for x in row["labels"]) for row in module.train_dataset)


def test_sft_packing_rows_fit_cutoff(reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="identity", packing=True, cutoff_len=512)
    module = get_dataset(cfg, tok, template, "sft")
    rows = module.train_dataset
    assert rows.column_names == ["input_ids", "labels", "position_ids"]
    assert len(rows) < 91 and module.stats.packed_rows == len(rows)
    assert all(len(r["input_ids"]) <= 512 for r in rows)
    assert sum(p.count(0) for p in rows["position_ids"]) == 91  # every example starts once
    assert type(get_collator("sft", tok, cfg)).__name__ == "PackedCollator"


def test_cache_hit_and_overwrite(reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="alpaca_en_demo", max_samples=30)
    first = get_dataset(cfg, tok, template, "sft")
    second = get_dataset(cfg, tok, template, "sft")
    assert not first.stats.from_cache and second.stats.from_cache
    assert second.train_dataset["input_ids"] == first.train_dataset["input_ids"]
    changed = get_dataset(cfg_for(reference_dir, dataset="alpaca_en_demo", max_samples=30, cutoff_len=200),
                          tok, template, "sft")
    assert not changed.stats.from_cache  # a different setting is a different key
    rebuilt = get_dataset(cfg_for(reference_dir, dataset="alpaca_en_demo", max_samples=30, overwrite_cache=True),
                          tok, template, "sft")
    assert not rebuilt.stats.from_cache


def test_two_workers_give_the_same_ids(tmp_path, tok, template):
    rows = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(40)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"file_name": "a.json"}}))
    base = {"dataset": "a", "dataset_dir": str(tmp_path), "preprocessing_batch_size": 10, "overwrite_cache": True}
    one = get_dataset(parse_config("data", base), tok, template, "sft")
    two = get_dataset(parse_config("data", {**base, "preprocessing_num_workers": 2}), tok, template, "sft")
    assert one.train_dataset["input_ids"] == two.train_dataset["input_ids"]
    assert one.train_dataset["labels"] == two.train_dataset["labels"]


def test_tokenized_path_saves_then_loads(tmp_path, reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="identity", tokenized_path=str(tmp_path / "tok"))
    first = get_dataset(cfg, tok, template, "sft")
    assert (tmp_path / "tok" / "tunery_stats.json").is_file()
    again = get_dataset(cfg, tok, template, "sft")
    assert again.stats.from_cache and again.train_dataset["input_ids"] == first.train_dataset["input_ids"]


def test_streaming_dataset_is_iterable(reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="alpaca_en_demo", streaming=True, max_samples=5)
    module = get_dataset(cfg, tok, template, "sft")
    rows = list(module.train_dataset)
    assert len(rows) == 5 and all(len(r["input_ids"]) <= 256 for r in rows)


def test_eval_dataset_and_load_records(reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="identity", eval_dataset="alpaca_en_demo", max_samples=4)
    module = get_dataset(cfg, tok, template, "sft")
    assert len(module.train_dataset) == 4 and len(module.eval_dataset) == 4
    records = load_records(cfg)
    assert len(records) == 4 and records[0]["messages"][0]["role"] == "user"
    assert load_records(cfg, which="eval_dataset")[0]["_source"]["file"].endswith("alpaca_en_demo.json")


def test_collators_per_stage(reference_dir, tok):
    cfg = cfg_for(reference_dir, dataset="identity")
    names = {stage: type(get_collator(stage, tok, cfg)).__name__
             for stage in ("sft", "pt", "dpo", "rm", "kto", "unsupervised")}
    assert names == {"sft": "PaddedCollator", "pt": "PackedCollator", "dpo": "PairwiseCollator",
                     "rm": "PairwiseCollator", "kto": "KTOCollator", "unsupervised": "GenerationCollator"}
    left = get_collator("unsupervised", tok, cfg)([{"input_ids": [5, 6]}, {"input_ids": [7]}])
    assert left["input_ids"][1].tolist() == [tok.pad_token_id, 7] and left["attention_mask"][1].tolist() == [0, 1]
    pair = get_collator("dpo", tok, cfg)([{"chosen_input_ids": [1, 2], "chosen_labels": [-100, 2],
                                          "rejected_input_ids": [1], "rejected_labels": [-100]}])
    assert pair["input_ids"].tolist() == [[1, 2], [1, tok.pad_token_id]]
    assert pair["labels"].tolist() == [[-100, 2], [-100, -100]]


def test_no_dataset_is_a_config_error(tok, template):
    from tunery.errors import ConfigError

    with pytest.raises(ConfigError, match="no dataset"):
        get_dataset(parse_config("data", {}), tok, template, "sft")


def test_examples_the_template_rejects_are_skipped_and_reported(tmp_path, tok, template):
    from tests.unit.data.test_data_processors import PickyTemplate
    from tunery.errors import DataError

    rows = [{"instruction": "hello", "output": "hi"}, {"instruction": "forbidden", "output": "x"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"file_name": "a.json"}}))
    cfg = parse_config("data", {"dataset": "a", "dataset_dir": str(tmp_path)})
    module = get_dataset(cfg, tok, PickyTemplate(template), "sft")
    assert len(module.train_dataset) == 1 and module.stats.skipped_invalid == 1
    assert module.stats.problems[0].endswith("a.json row 1: the tokenizer's chat template rejected this conversation (field 'messages')")
    strict = parse_config("data", {"dataset": "a", "dataset_dir": str(tmp_path), "strict": True,
                                   "overwrite_cache": True})
    with pytest.raises(DataError, match="template rejected an example: .*a.json row 1"):
        get_dataset(strict, tok, PickyTemplate(template), "sft")


def test_stage_columns_map_to_trl_column_names(reference_dir, tok, template):
    """The pipeline's pairwise/KTO columns through the one trl column mapper (tunery.train.pref_common)."""
    from tunery.train.pref_common import to_kto_columns, to_pairwise_columns
    from tunery.train.rm import to_reward_columns

    cfg = cfg_for(reference_dir, dataset="dpo_en_demo", max_samples=3)
    pairs = get_dataset(cfg, tok, template, "dpo").train_dataset
    trl_pairs = to_pairwise_columns(pairs)
    assert trl_pairs.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    rm = to_reward_columns(pairs)
    assert sorted(rm.column_names) == ["chosen_ids", "rejected_ids"]
    assert rm[0]["chosen_ids"] == trl_pairs[0]["prompt_ids"] + trl_pairs[0]["chosen_ids"]
    kto = get_dataset(cfg_for(reference_dir, dataset="kto_en_demo", max_samples=3), tok, template, "kto").train_dataset
    assert to_kto_columns(kto).column_names == ["prompt_ids", "completion_ids", "label"]


@pytest.mark.slow
def test_smollm2_sft_trains_exactly_the_replies(reference_dir, smollm2_path):
    """The real tokenizer and its ChatML template: trained tokens are each reply plus <|im_end|>."""
    from transformers import AutoTokenizer

    from tunery.data.template import get_template

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    cfg = cfg_for(reference_dir, dataset="alpaca_en_demo", max_samples=5, cutoff_len=2048)
    module = get_dataset(cfg, tokenizer, get_template("auto", tokenizer), "sft")
    records = load_records(cfg, stage="sft")
    for row, record in zip(module.train_dataset, records):
        trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
        assert tokenizer.decode(trained) == record["messages"][-1]["content"] + "<|im_end|>"
        assert tokenizer.decode(row["input_ids"]) == tokenizer.apply_chat_template(record["messages"], tokenize=False)


def test_eval_on_each_dataset_gives_one_eval_set_per_name(reference_dir, tok, template):
    cfg = cfg_for(reference_dir, dataset="identity", eval_dataset="alpaca_en_demo,identity", max_samples=3,
                  eval_on_each_dataset=True)
    module = get_dataset(cfg, tok, template, "sft")
    assert set(module.eval_dataset) == {"alpaca_en_demo", "identity"}
    assert len(module.eval_dataset["alpaca_en_demo"]) == 3 and module.stats.eval_examples == 6
    assert module.eval_dataset["identity"]["input_ids"] == module.train_dataset["input_ids"]
    cached = get_dataset(cfg, tok, template, "sft")
    assert cached.stats.from_cache and set(cached.eval_dataset) == {"alpaca_en_demo", "identity"}
    assert cached.eval_dataset["alpaca_en_demo"]["input_ids"] == module.eval_dataset["alpaca_en_demo"]["input_ids"]
