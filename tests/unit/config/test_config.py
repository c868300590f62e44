"""Config parsing: YAML + both override styles, unknown keys, bad types, LLaMA-Factory YAMLs."""

from __future__ import annotations

import glob
import importlib.util

import pytest
import yaml

from tunery.config import load_config, parse_config
from tunery.config.parser import UNSUPPORTED_LF_KEYS, load_raw_config, parse_overrides
from tunery.errors import ConfigError, DependencyError


def write_yaml(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_then_both_override_styles(tmp_path):
    path = write_yaml(tmp_path, {"model_name_or_path": "m", "lora_rank": 8, "learning_rate": 1.0e-4,
                                 "output_dir": str(tmp_path / "o")})
    cfg, rest = load_config("train", [path, "--lora_rank", "16", "learning_rate=2e-4", "--packing=true", "--plot_loss"])
    assert rest == []
    assert cfg.finetuning.lora_rank == 16
    assert cfg.finetuning.lora_alpha == 32  # default is 2 x rank, computed after overrides
    assert cfg.training.learning_rate == pytest.approx(2e-4)
    assert cfg.data.packing is True
    assert cfg.finetuning.plot_loss is True
    assert cfg.model.model_name_or_path == "m"


def test_json_config(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"model_name_or_path": "x", "temperature": 0.5}')
    cfg, _ = load_config("chat", [str(path)])
    assert cfg.generation.temperature == 0.5


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError) as err:
        parse_config("train", {"lora_rnak": 4})
    assert "lora_rnak" in str(err.value)
    assert "lora_rank" in str(err.value)


def test_unknown_key_without_close_match_points_to_help():
    with pytest.raises(ConfigError, match="--help"):
        parse_config("chat", {"zzzzzz": 1})


def test_key_of_another_command_is_unknown():
    # lora_rank configures training; chat does not take it... but finetuning_type etc. are shared.
    with pytest.raises(ConfigError, match="export_dir"):
        parse_config("chat", {"export_dir": "x"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lora_rank", "eight", "integer"),
        ("lora_rank", "1.5", "integer"),
        ("lora_dropout", "lots", "number"),
        ("plot_loss", "maybe", "true or false"),
        ("finetuning_type", "half", "choose one of: lora, oft, freeze, full"),
        ("stage", "rlhf", "sft"),
    ],
)
def test_bad_value_names_key_value_and_allowed(key, value, expected):
    with pytest.raises(ConfigError) as err:
        parse_config("train", {key: value})
    text = str(err.value)
    assert key in text and value in text and expected in text


def test_types_are_coerced_from_strings():
    cfg = parse_config("train", {"lora_rank": "4", "lora_dropout": "0.05", "use_dora": "yes", "max_samples": "null",
                                 "num_train_epochs": "2", "report_to": "none"})
    assert cfg.finetuning.lora_rank == 4 and cfg.finetuning.lora_dropout == 0.05
    assert cfg.finetuning.use_dora is True
    assert cfg.data.max_samples is None
    assert cfg.training.num_train_epochs == 2.0
    assert cfg.training.report_to in ([], ["none"], "none")


def test_bitsandbytes_spelling_is_accepted():
    cfg = parse_config("train", {"quantization_bit": 4, "quantization_method": "bitsandbytes"})
    assert cfg.model.quantization_method == "bnb"


def test_bf16_on_cpu_falls_back_to_fp32(caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("only meaningful without a GPU")
    cfg = parse_config("train", {"bf16": True})
    assert cfg.training.bf16 is False


def test_lf_only_names_still_accepted():
    cfg = parse_config("train", {"overwrite_output_dir": True, "warmup_ratio": 0.1, "no_cuda": True})
    assert cfg.training.overwrite_output_dir is True
    assert cfg.training.warmup_steps == pytest.approx(0.1)
    assert cfg.training.use_cpu is True


def test_unsupported_lf_feature_is_named():
    with pytest.raises(ConfigError, match="KTransformers"):
        parse_config("train", {"use_kt": True})
    assert "use_kt" in UNSUPPORTED_LF_KEYS and "use_badam" not in UNSUPPORTED_LF_KEYS
    assert "use_unsloth" not in UNSUPPORTED_LF_KEYS  # honoured on CUDA since issue #15


def test_override_token_forms():
    overrides, positional = parse_overrides(["cfg.yaml", "--a", "1", "--b=2", "c=3", "--flag", "--d", "x", "word"])
    assert overrides == {"a": "1", "b": "2", "c": "3", "flag": "true", "d": "x"}
    assert positional == ["cfg.yaml", "word"]


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_raw_config([str(tmp_path / "nope.yaml")])


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_raw_config([str(path)])


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_config("train", {"model_name_or_path": "m", "lora_rank": 4, "dataset": "a,b",
                                 "learning_rate": 3e-4, "output_dir": str(tmp_path / "o"), "lr_scheduler_type": "cosine"})
    saved = tmp_path / "training_args.yaml"
    cfg.save(saved)
    again, _ = load_config("train", [str(saved)])
    assert again.finetuning.lora_rank == 4
    assert again.data.dataset == "a,b"
    assert again.training.learning_rate == pytest.approx(3e-4)
    assert str(again.training.lr_scheduler_type.value) == "cosine"
    assert again.resolved() == cfg.resolved()


def lf_train_yamls(reference_root):
    return sorted(glob.glob(str(reference_root / "lf/examples/train_*/*.yaml")))


def test_llamafactory_example_yamls_parse(reference_dir):
    """Every LLaMA-Factory train YAML whose features Tunery has parses with the same meaning."""
    parsed = 0
    for path in lf_train_yamls(reference_dir):
        raw = yaml.safe_load(open(path))
        if any(k in UNSUPPORTED_LF_KEYS for k in raw) or raw.get("stage") in (None,):
            continue
        if raw.get("deepspeed"):  # LLaMA-Factory's paths are relative to its checkout
            raw["deepspeed"] = str(reference_dir / "lf" / raw["deepspeed"])
        if raw.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            with pytest.raises(DependencyError, match="deepspeed"):
                parse_config("train", raw, source=path)
            continue
        if raw.get("stage") == "kto" and raw.get("per_device_train_batch_size", 8) < 2:  # trl's KL needs a pair
            with pytest.raises(ConfigError, match="stage kto needs per_device_train_batch_size of at least 2"):
                parse_config("train", raw, source=path)
            continue
        cfg = parse_config("train", raw, source=path)
        for key in ("model_name_or_path", "dataset", "cutoff_len", "output_dir"):
            if key in raw:
                group = {"model_name_or_path": cfg.model, "dataset": cfg.data, "cutoff_len": cfg.data,
                         "output_dir": cfg.training}[key]
                assert str(getattr(group, key)) == str(raw[key]), (path, key)
        if "lora_rank" in raw:
            assert cfg.finetuning.lora_rank == raw["lora_rank"]
        if "stage" in raw:
            assert cfg.finetuning.stage == raw["stage"]
        parsed += 1
    assert parsed >= 10


def test_llamafactory_merge_and_inference_yamls_parse(reference_dir):
    for path in glob.glob(str(reference_dir / "lf/examples/merge_lora/qwen3*.yaml")):
        raw = yaml.safe_load(open(path))
        cfg = parse_config("export", raw, source=path)
        assert cfg.export.export_dir == raw["export_dir"]
    for path in glob.glob(str(reference_dir / "lf/examples/inference/qwen3*.yaml")):
        raw = yaml.safe_load(open(path))
        raw.pop("infer_backend", None) if raw.get("infer_backend") not in ("huggingface", "vllm") else None
        cfg = parse_config("chat", raw, source=path)
        assert cfg.model.model_name_or_path == raw["model_name_or_path"]


@pytest.mark.parametrize(("value", "expected"), [(False, False), ("False", False), ("true", True), (True, True)])
def test_str_or_bool_fields_take_booleans(value, expected):
    """include_num_input_tokens_seen is typed str | bool in transformers: false must not become 'False'."""
    cfg = parse_config("train", {"include_num_input_tokens_seen": value})
    assert cfg.training.include_num_input_tokens_seen in ((expected, "all") if expected else (False, "no"))


def test_prediction_metric_settings():
    # prediction needs data (rule prediction_needs_data_and_output_dir), hence eval_dataset
    cfg = parse_config("predict", {"eval_dataset": "demo", "metrics": "bleu,f1", "compute_metrics": "m.py:fn"})
    assert cfg.data.metrics == "bleu,f1" and cfg.data.compute_metrics == "m.py:fn"
