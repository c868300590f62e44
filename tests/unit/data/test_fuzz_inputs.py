"""Bounded fuzzing: nothing a user can write (rows, dataset_info.json entries, settings) may end in an
internal error. Every exception must be a TuneryError (one clear line, exit 2). Bounded to run in
well under a minute (max_examples, no deadline); a failure prints the smallest input that crashed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tunery.config import parse_config  # noqa: E402
from tunery.data.checker import check_datasets  # noqa: E402
from tunery.data.dataset_info import COLUMN_DEFAULTS, KNOWN_KEYS, TAG_DEFAULTS  # noqa: E402
from tunery.errors import TuneryError  # noqa: E402

# CI: 60 fixed examples per test. A longer random hunt: TUNERY_FUZZ_EXAMPLES=2000 pytest tests/unit/test_fuzz_inputs.py
EXAMPLES = int(os.environ.get("TUNERY_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="TUNERY_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["", "true", "human", "gpt", "user", "assistant",
                                                           "system", "tool", "function_call", "observation"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=6)
texts = st.text(min_size=1, max_size=20)


def message(role_key: str, content_key: str, roles: list[str]):
    odd_roles = st.one_of(st.lists(st.sampled_from(roles), max_size=2), st.dictionaries(st.text(max_size=3), scalars,
                                                                                         max_size=1), json_values)
    return st.fixed_dictionaries({role_key: st.one_of(st.sampled_from(roles), odd_roles),
                                  content_key: st.one_of(texts, json_values)},
                                 optional={"tool_calls": json_values})


def column(valid):
    return st.one_of(valid, json_values)


FORMATS = {
    "alpaca": ({}, "sft", st.fixed_dictionaries(
        {}, optional={"instruction": column(texts), "input": column(texts), "output": column(texts),
                      "system": column(texts), "history": column(st.lists(st.lists(texts, min_size=2, max_size=2))),
                      "tools": json_values})),
    "text": ({"columns": {"prompt": "text"}}, "pt", st.fixed_dictionaries({}, optional={"text": column(texts)})),
    "sharegpt": ({"formatting": "sharegpt", "columns": {"tools": "tools", "system": "system"}}, "sft",
                 st.fixed_dictionaries({}, optional={
                     "conversations": column(st.lists(message("from", "value", ["human", "gpt", "observation",
                                                                                "function_call", "system"]),
                                                      max_size=4)),
                     "system": column(texts), "tools": json_values})),
    "openai": ({"formatting": "openai"}, "sft", st.fixed_dictionaries({}, optional={
        "messages": column(st.lists(message("role", "content", ["user", "assistant", "system", "tool"]),
                                    max_size=4)),
        "tools": json_values})),
    "preference": ({"ranking": True, "columns": {"chosen": "chosen", "rejected": "rejected"}}, "dpo",
                   st.fixed_dictionaries({}, optional={"instruction": column(texts), "chosen": column(texts),
                                                       "rejected": column(texts)})),
    "kto": ({"columns": {"kto_tag": "label"}}, "kto", st.fixed_dictionaries(
        {}, optional={"instruction": column(texts), "output": column(texts), "label": json_values})),
}


@pytest.fixture(scope="module")
def tokenizer_and_template(tiny_chatml_model):
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer

    cfg = parse_config("data", {"model_name_or_path": str(tiny_chatml_model)})
    tokenizer = load_tokenizer(cfg.model)
    return tokenizer, get_template("chatml", tokenizer, cfg.data)


def check_folder(folder: Path, name: str | None, stage: str, tokenizer=None, template=None, **data) -> None:
    cfg = parse_config("data", {"dataset_dir": str(folder), **({"dataset": name} if name else {}), **data})
    try:
        results = check_datasets(cfg, tokenizer, template, stage)
    except TuneryError:
        return
    for r in results:
        assert r.status in ("ok", "invalid_rows", "error", "skipped")
        if r.status in ("ok", "invalid_rows"):
            assert r.valid + r.invalid == r.total


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(FUZZ, max_examples=max(EXAMPLES // 4, 1))
@given(data=st.data())
def test_random_rows_never_crash_data_check(tokenizer_and_template, fmt, data):
    entry, stage, row_strategy = FORMATS[fmt]
    rows = data.draw(st.lists(st.one_of(row_strategy, row_strategy, json_values), min_size=1, max_size=4))
    tokenizer, template = tokenizer_and_template
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "d.json").write_text(json.dumps(rows))
        (folder / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json", **entry}}))
        check_folder(folder, "d", stage, tokenizer, template, cutoff_len=32)


info_entries = st.dictionaries(st.sampled_from(sorted(KNOWN_KEYS | {"bogus"})), json_values, max_size=4).map(
    lambda e: {"file_name": "d.jsonl", **e})
info_values = st.one_of(info_entries, json_values, st.fixed_dictionaries({}, optional={
    "file_name": st.sampled_from(["d.jsonl", "missing.json", "", "."]),
    "formatting": st.sampled_from(["alpaca", "sharegpt", "openai", "other"]),
    "columns": st.one_of(json_values, st.dictionaries(st.sampled_from(sorted(COLUMN_DEFAULTS)), json_values,
                                                      max_size=3)),
    "tags": st.one_of(json_values, st.dictionaries(st.sampled_from(sorted(TAG_DEFAULTS)), json_values, max_size=3)),
    "ranking": json_values, "num_samples": json_values, "split": json_values, "subset": json_values}))


@FUZZ
@given(info=st.one_of(st.dictionaries(st.sampled_from(["d", "e"]), info_values, min_size=1, max_size=2), json_values),
       named=st.booleans(), stage=st.sampled_from(["sft", "pt", "dpo", "kto"]))
def test_random_dataset_info_never_crashes_data_check(info, named, stage):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "d.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
        (folder / "dataset_info.json").write_text(json.dumps(info))
        check_folder(folder, "d" if named else None, stage)


# Settings whose values name places Tunery writes to are left out, so the fuzzer never writes outside tmp.
WRITES = {"output_dir", "tokenized_path", "cache_dir", "export_dir", "logging_dir", "save_dir", "run_name",
          "overwrite_output_dir", "deepspeed", "hub_model_id", "push_to_hub", "ms_hub_token", "hf_hub_token",
          "om_hub_token", "resume_from_checkpoint", "export_hub_model_id"}
TRAINING_KEYS = ["learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "warmup_ratio", "warmup_steps", "logging_steps", "save_steps",
                 "seed", "lr_scheduler_type", "optim", "eval_strategy", "save_strategy", "do_train", "do_eval",
                 "do_predict", "bf16", "fp16", "report_to", "max_grad_norm", "weight_decay", "eval_steps",
                 "gradient_checkpointing", "predict_with_generate", "save_total_limit", "label_smoothing_factor"]


def setting_types() -> dict[str, object]:
    import dataclasses

    from tunery.config import GROUPS, group_class
    from tunery.config.groups import settings_of

    types = {f.name: (tp, f.metadata) for cls in GROUPS.values() for _, f, tp in settings_of(cls)}
    training = {f.name: f for f in dataclasses.fields(group_class("training"))}
    types.update({name: (training[name].type, training[name].metadata) for name in TRAINING_KEYS if name in training})
    return {name: value for name, value in types.items() if name not in WRITES}


def typed_value(tp, meta) -> st.SearchStrategy:
    """A value of the setting's own type (so more configs get past parsing and reach the rules and the plan)."""
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if args and typing.get_origin(tp) is not list:
        return st.one_of(*[typed_value(a, meta) for a in args])
    if "choices" in meta:
        return st.sampled_from(list(meta["choices"]))
    if tp is bool or tp == "bool":
        return st.booleans()
    if tp is int or tp == "int":
        return st.integers(-1, 64)
    if tp is float or tp == "float":
        return st.floats(-0.5, 2.0)
    return SETTING_VALUES


SETTING_VALUES = st.one_of(json_values, st.integers(-2, 5000), st.sampled_from(
    ["lora", "full", "freeze", "sft", "pt", "dpo", "kto", "rm", "ppo", "orpo", "auto", "chatml", "all", "cosine",
     "steps", "no", "0.1", "-1", "1e-4", "d", "d,d", "q_proj", "sigmoid", "concat", "interleave_under"]))
TYPES = setting_types()
SETTINGS = st.one_of(
    st.dictionaries(st.sampled_from(sorted(TYPES)), SETTING_VALUES, min_size=1, max_size=4),
    st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: typed_value(*TYPES[k]) for k in keys})),
)


@FUZZ
@given(changes=SETTINGS)
def test_random_settings_never_crash_parse_config_or_the_dry_run(tiny_chatml_model, tmp_path_factory, monkeypatch,
                                                                 changes):
    from tunery.train.dry_run import build_plan

    tmp = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(tmp)  # a relative path in a fuzzed value lands here
    monkeypatch.setenv("TUNERY_CACHE", str(tmp / "cache"))
    (tmp / "d.json").write_text(json.dumps([{"instruction": f"q {i}", "output": f"a {i}"} for i in range(6)]))
    raw = {"model_name_or_path": str(tiny_chatml_model), "dataset": "d.json", "dataset_dir": str(tmp),
           "template": "chatml", "output_dir": str(tmp / "out"), "dry_run": True, "report_to": "none",
           "cutoff_len": 64, "max_steps": 2, **changes}
    try:
        cfg = parse_config("train", raw)
    except TuneryError:
        return
    if cfg.finetuning.stage in ("ppo", "grpo") or not cfg.training.do_train:
        return  # their plans load a reward model / run prediction; parse-time checks are what is fuzzed here
    hypothesis.event("reached the dry-run plan")
    try:
        build_plan(cfg)
    except TuneryError:
        pass
    assert not os.path.exists(tmp / "out")  # a dry run writes nothing
