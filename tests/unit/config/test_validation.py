"""validation.py: every rule between settings and every setting's domain fail at parse time, naming the settings."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from tunery.config import GROUPS, FinetuningArguments, ModelArguments, parse_config
from tunery.config.groups import settings_of
from tunery.config.training_args import TrainingArguments
from tunery.config.validation import RULES, has_domain
from tunery.errors import ConfigError

DS_DIR = Path(__file__).resolve().parents[3] / "examples" / "deepspeed"
ZERO3 = str(DS_DIR / "ds_z3_config.json")

TRAIN = {"model_name_or_path": "/nonexistent/model", "dataset": "d", "output_dir": "unused-out", "report_to": "none"}

# (rule name, command, raw settings, words the message must contain)
CASES = [
    ("media_pixel_bounds_ordered", "train", {"image_min_pixels": 4096, "image_max_pixels": 1024},
     ["image_min_pixels: 4096", "image_max_pixels: 1024"]),
    ("media_pixel_bounds_ordered", "train", {"video_min_pixels": 70000}, ["video_min_pixels: 70000", "video_max_pixels"]),
    ("nothing_to_do", "train", {"do_train": False}, ["do_train", "do_eval", "do_predict"]),
    ("streaming_needs_max_steps", "train", {"streaming": True}, ["streaming", "max_steps"]),
    ("streaming_needs_max_steps", "train", {"streaming": True, "dry_run": True}, ["streaming", "max_steps"]),
    ("val_size_or_eval_dataset", "train", {"val_size": 0.1, "eval_dataset": "e"}, ["val_size", "eval_dataset"]),
    ("streaming_val_size_is_a_count", "train", {"streaming": True, "max_steps": 5, "val_size": 0.1},
     ["streaming", "val_size"]),
    ("interleave_probs_match_datasets", "train", {"dataset": "a,b", "mix_strategy": "interleave_under",
                                                  "interleave_probs": "1.0"}, ["interleave_probs", "2 datasets"]),
    ("interleave_probs_match_datasets", "train", {"interleave_probs": "1.0"}, ["interleave_probs", "mix_strategy"]),
    ("quantization_bit_fits_method", "train", {"quantization_bit": 3}, ["quantization_method", "quantization_bit: 3"]),
    ("quantization_bit_fits_method", "chat", {"quantization_method": "eetq", "quantization_bit": 4},
     ["quantization_method: eetq", "quantization_bit: 4"]),
    ("quantization_bit_fits_method", "chat", {"quantization_method": "gptq", "quantization_bit": 4},
     ["quantization_method: gptq", "quantization_bit"]),
    ("quantized_base_needs_lora", "train", {"quantization_bit": 4, "finetuning_type": "full"},
     ["quantization_bit", "finetuning_type: full"]),
    ("quantized_base_merges_no_adapters", "train", {"quantization_bit": 4, "adapter_name_or_path": "a,b"},
     ["quantization_bit", "adapter_name_or_path"]),
    ("quantized_base_needs_lora", "train", {"quantization_bit": 4, "finetuning_type": "freeze"},
     ["LoRA or OFT", "finetuning_type: freeze"]),
    ("oft_rank_or_block_size", "train", {"finetuning_type": "oft", "oft_rank": 4},
     ["oft_rank: 4", "oft_block_size: 32"]),
    ("oft_rank_or_block_size", "train", {"finetuning_type": "oft", "oft_block_size": 0},
     ["oft_rank: 0", "oft_block_size: 0"]),
    ("oft_not_for_reward_models", "train", {"finetuning_type": "oft", "stage": "rm"},
     ["finetuning_type: oft", "stage: rm"]),
    ("llama_pro_needs_freeze_or_adapter", "train", {"use_llama_pro": True, "finetuning_type": "full"},
     ["use_llama_pro", "finetuning_type: full"]),
    ("llama_pro_needs_freeze_or_adapter", "train",
     {"use_llama_pro": True, "finetuning_type": "freeze", "freeze_trainable_layers": -2},
     ["use_llama_pro", "freeze_trainable_layers: -2"]),
    ("shift_attn_not_ppo", "train", {"shift_attn": True, "stage": "ppo", "reward_model": "rm"},
     ["shift_attn", "stage: ppo"]),
    ("pissa_needs_full_precision", "train", {"quantization_bit": 4, "pissa_init": True},
     ["pissa_init", "quantization_bit"]),
    ("loraplus_needs_lora", "train", {"finetuning_type": "full", "loraplus_lr_ratio": 16},
     ["loraplus_lr_ratio", "finetuning_type"]),
    ("optimizer_needs_full_weights", "train", {"use_galore": True}, ["use_galore", "finetuning_type: lora"]),
    ("optimizer_needs_full_weights", "train", {"use_apollo": True}, ["use_apollo", "finetuning_type: lora"]),
    ("optimizer_needs_full_weights", "train", {"use_adam_mini": True}, ["use_adam_mini", "finetuning_type: lora"]),
    ("one_optimizer_choice", "train", {"use_galore": True, "use_apollo": True, "finetuning_type": "full"},
     ["use_galore and use_apollo", "only one"]),
    ("one_optimizer_choice", "train", {"use_adam_mini": True, "use_galore": True, "finetuning_type": "full"},
     ["use_galore and use_adam_mini", "only one"]),
    ("layerwise_optimizer_needs_no_accumulation", "train",
     {"use_galore": True, "galore_layerwise": True, "finetuning_type": "full", "gradient_accumulation_steps": 2},
     ["galore_layerwise", "gradient_accumulation_steps: 2"]),
    ("layerwise_optimizer_needs_no_accumulation", "train",
     {"use_apollo": True, "apollo_layerwise": True, "finetuning_type": "full", "gradient_accumulation_steps": 4},
     ["apollo_layerwise", "gradient_accumulation_steps: 4"]),
    ("early_stopping_needs_evaluation", "train", {"early_stopping_steps": 3, "val_size": 0.1},
     ["early_stopping_steps: 3", "eval_strategy"]),
    ("early_stopping_needs_evaluation", "train", {"early_stopping_steps": 3, "do_train": True, "eval_strategy": "steps",
                                                   "eval_steps": 5},
     ["early_stopping_steps: 3", "evaluation data"]),
    ("token_loss_is_sft", "train", {"use_dft_loss": True, "stage": "pt"}, ["use_dft_loss", "stage pt"]),
    ("token_loss_is_sft", "train", {"use_asft_loss": True, "stage": "pt"}, ["use_asft_loss", "stage pt"]),
    ("token_loss_is_sft", "train", {"use_eaft_loss": True, "stage": "dpo"}, ["use_eaft_loss", "stage dpo"]),
    ("one_token_loss", "train", {"use_dft_loss": True, "use_eaft_loss": True},
     ["use_dft_loss and use_eaft_loss", "only one"]),
    ("optimizer_needs_full_weights", "train", {"use_badam": True}, ["use_badam", "finetuning_type: lora"]),
    ("one_optimizer_choice", "train", {"use_muon": True, "use_badam": True, "finetuning_type": "full"},
     ["use_badam and use_muon", "only one"]),
    ("one_optimizer_choice", "train", {"use_muon": True, "loraplus_lr_ratio": 16},
     ["use_muon and loraplus_lr_ratio", "only one"]),
    ("badam_is_single_process", "train", {"use_badam": True, "finetuning_type": "full",
                                          "deepspeed": str(DS_DIR / "ds_z2_config.json")},
     ["use_badam", "deepspeed"]),
    ("compute_accuracy_is_sft_evaluation", "train", {"compute_accuracy": True, "stage": "dpo"},
     ["compute_accuracy", "stage dpo"]),
    ("compute_accuracy_is_sft_evaluation", "train", {"compute_accuracy": True, "predict_with_generate": True},
     ["compute_accuracy", "predict_with_generate"]),
    ("label_smoothing_needs_sigmoid", "train", {"stage": "dpo", "pref_loss": "hinge", "dpo_label_smoothing": 0.1},
     ["dpo_label_smoothing", "pref_loss", "hinge"]),
    ("ld_alpha_is_dpo", "train", {"stage": "dpo", "pref_loss": "simpo", "ld_alpha": 0.5},
     ["ld_alpha", "pref_loss simpo"]),
    ("ld_alpha_is_dpo", "train", {"stage": "kto", "ld_alpha": 0.5}, ["ld_alpha", "stage kto"]),
    ("kto_pair_removed", "train", {"stage": "dpo", "pref_loss": "kto_pair"}, ["pref_loss", "kto_pair"]),
    ("kto_needs_batch_of_two", "train", {"stage": "kto", "per_device_train_batch_size": 1},
     ["stage kto", "per_device_train_batch_size", "at least 2"]),
    ("grpo_needs_rewards", "train", {"stage": "grpo"}, ["grpo", "reward_funcs", "reward_model"]),
    ("ppo_needs_reward_model", "train", {"stage": "ppo"}, ["ppo", "reward_model"]),
    ("lora_reward_model_needs_lora_policy", "train", {"stage": "ppo", "reward_model": "rm", "finetuning_type": "full"},
     ["reward_model_type: lora", "finetuning_type"]),
    ("prediction_needs_data_and_output_dir", "predict", {"dataset": None}, ["prediction", "dataset"]),
    ("prediction_needs_data_and_output_dir", "predict", {"output_dir": ""}, ["prediction", "output_dir"]),
    ("vllm_applies_one_adapter", "chat", {"infer_backend": "vllm", "adapter_name_or_path": "a,b"},
     ["infer_backend: vllm", "adapter_name_or_path"]),
    ("vllm_no_beam_search", "chat", {"infer_backend": "vllm", "num_beams": 2}, ["infer_backend: vllm", "num_beams"]),
    ("eval_needs_a_task", "eval", {}, ["task", "harness_tasks"]),
    ("export_needs_export_dir", "export", {}, ["export_dir"]),
    ("gguf_has_its_own_quantization", "export", {"export_dir": "o", "export_format": "gguf",
                                                 "export_quantization_bit": 4},
     ["export_quantization_bit", "export_format: gguf"]),
    ("gptq_needs_calibration_data", "export", {"export_dir": "o", "export_quantization_bit": 4,
                                               "export_quantization_method": "gptq"},
     ["export_quantization_method: gptq", "export_quantization_dataset"]),
    ("deepspeed_or_fsdp", "train", {"deepspeed": str(DS_DIR / "ds_z2_config.json"), "fsdp": "full_shard"},
     ["deepspeed", "fsdp"]),
    ("fsdp_qlora_is_4bit", "train", {"quantization_bit": 8, "fsdp": "full_shard"},
     ["quantization_bit: 8", "FSDP", "int8", "quantization_bit: 4"]),
    ("zero3_refuses_ppo", "train", {"stage": "ppo", "reward_model": "rm", "deepspeed": ZERO3},
     ["stage: ppo", "ZeRO-3", "value head", "ds_z2_config.json"]),
    ("zero3_refuses_quantization", "train", {"quantization_bit": 4, "deepspeed": ZERO3},
     ["quantization_bit: 4", "ZeRO-3"]),
    ("zero3_refuses_pissa_init", "train", {"pissa_init": True, "deepspeed": ZERO3}, ["pissa_init", "ZeRO-3"]),
    ("liger_kernel_needs_cuda", "train", {"enable_liger_kernel": True}, ["enable_liger_kernel needs CUDA"]),
    ("liger_kernel_needs_cuda", "train", {"use_liger_kernel": True}, ["use_liger_kernel needs CUDA"]),
    ("fp8_needs_cuda", "train", {"fp8": True}, ["fp8 needs CUDA"]),
    ("pure_bf16_needs_cuda", "train", {"pure_bf16": True}, ["pure_bf16 needs CUDA"]),
    ("fp8_options_need_fp8", "train", {"fp8_backend": "te"}, ["fp8_backend: te", "fp8 is false"]),
    ("fp8_options_need_fp8", "train", {"fp8_enable_fsdp_float8_all_gather": True},
     ["fp8_enable_fsdp_float8_all_gather", "fp8 is false"]),
    ("loftq_needs_cuda", "train", {"loftq_init": True}, ["loftq_init needs CUDA"]),
    ("unsloth_needs_cuda", "train", {"use_unsloth": True}, ["use_unsloth needs CUDA"]),
    ("unsloth_needs_cuda", "chat", {"use_unsloth": True, "adapter_name_or_path": "a"}, ["use_unsloth needs CUDA"]),
    ("unsloth_gc_needs_cuda", "train", {"use_unsloth_gc": True}, ["use_unsloth_gc needs CUDA"]),
    ("unsloth_gc_needs_checkpointing", "train", {"use_unsloth_gc": True, "disable_gradient_checkpointing": True},
     ["use_unsloth_gc", "disable_gradient_checkpointing is true"]),
    ("unsloth_trains_lora_or_full", "train", {"use_unsloth": True, "finetuning_type": "freeze"},
     ["use_unsloth cannot train finetuning_type: freeze"]),
    ("unsloth_trains_lora_or_full", "train", {"use_unsloth": True, "finetuning_type": "oft"},
     ["finetuning_type: oft", "no OFT builder"]),
    ("unsloth_loads_one_adapter", "chat", {"use_unsloth": True, "adapter_name_or_path": "a,b"},
     ["use_unsloth loads one adapter", "not 2"]),
    ("unsloth_loads_one_adapter", "train", {"use_unsloth": True, "adapter_name_or_path": "a",
                                            "create_new_adapter": True}, ["create_new_adapter"]),
    ("unsloth_not_for_export", "export", {"export_dir": "o", "use_unsloth": True}, ["use_unsloth does not apply to export"]),
    ("unsloth_not_with_vllm", "chat", {"use_unsloth": True, "infer_backend": "vllm"}, ["infer_backend: vllm"]),
    ("unsloth_excludes", "train", {"use_unsloth": True, "shift_attn": True}, ["use_unsloth cannot be combined with shift_attn"]),
    ("unsloth_excludes", "train", {"use_unsloth": True, "stage": "rm"}, ["stage: rm", "sequence classifier"]),
    ("unsloth_excludes", "train", {"use_unsloth": True, "train_from_scratch": True}, ["train_from_scratch"]),
    ("unsloth_excludes", "train", {"use_unsloth": True, "quantization_bit": 4, "quantization_method": "hqq"},
     ["quantization_method: hqq", "bitsandbytes"]),
    ("unsloth_excludes", "train", {"use_unsloth": True, "deepspeed": ZERO3}, ["DeepSpeed ZeRO-3"]),
    ("loftq_needs_full_precision", "train", {"loftq_init": True, "quantization_bit": 4},
     ["loftq_init", "quantization_bit: 4", "must not be given a quantized model"]),
    ("loftq_scale_is_one", "train", {"loftq_init": True, "lora_rank": 8, "lora_alpha": 16},
     ["loftq_init", "lora_alpha: 16 with lora_rank: 8"]),
    ("loftq_scale_is_one", "train", {"loftq_init": True, "use_rslora": True}, ["loftq_init", "use_rslora: true"]),
    ("one_lora_init", "train", {"loftq_init": True, "pissa_init": True}, ["pissa_init and loftq_init"]),
    ("export_refuses_quantized_base", "export", {"export_dir": "o", "quantization_bit": 4},
     ["quantization_bit: 4", "export_quantization_bit: 4"]),
    ("export_refuses_quantized_base", "export", {"export_dir": "o", "quantization_bit": 8, "adapter_name_or_path": "a"},
     ["quantized base", "export_quantization_bit: 8"]),
]


def _raw(command: str, extra: dict) -> dict:
    base = dict(TRAIN) if command in ("train", "predict") else {"model_name_or_path": "/nonexistent/model"}
    if command == "predict":
        base["eval_dataset"] = "e"
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None and (k, v) != ("dataset", None)}


@pytest.mark.parametrize(("name", "command", "extra", "needles"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_refuses_its_pair_and_names_the_settings(name, command, extra, needles, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CUDA-only rules refuse on any machine
    if "deepspeed" in extra:
        pytest.importorskip("deepspeed")  # without it parse_config refuses deepspeed first (tested below)
    raw = _raw(command, extra)
    if name == "prediction_needs_data_and_output_dir" and "dataset" in extra:
        raw.pop("dataset", None), raw.pop("eval_dataset", None)
    with pytest.raises(ConfigError) as err:
        parse_config(command, raw)
    message = str(err.value)
    for needle in needles:
        assert needle in message, (name, message)


def test_deepspeed_config_is_checked_before_anything_loads(tmp_path, monkeypatch):
    from tunery.errors import DependencyError

    pytest.importorskip("deepspeed")
    with pytest.raises(ConfigError, match="is not a file"):
        parse_config("train", {**TRAIN, "deepspeed": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config("train", {**TRAIN, "deepspeed": str(bad)})
    # ZeRO-2 takes ppo, QLoRA and PiSSA; ZeRO-3 takes plain LoRA
    ds2 = str(DS_DIR / "ds_z2_config.json")
    cfg = parse_config("train", {**TRAIN, "stage": "ppo", "reward_model": "rm", "deepspeed": ds2})
    assert cfg.training.deepspeed == ds2
    parse_config("train", {**TRAIN, "quantization_bit": 4, "deepspeed": str(DS_DIR / "ds_z2_offload_config.json")})
    parse_config("train", {**TRAIN, "deepspeed": ZERO3})
    # without the package: the install command, before anything else
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(DependencyError, match="tunery\\[deepspeed\\]"):
        parse_config("train", {**TRAIN, "deepspeed": ds2})


def test_every_rule_has_a_case():
    assert {r.name for r in RULES} == {c[0] for c in CASES}


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("train", {"stage": "grpo", "reward_funcs": "r.py:f"}),
        ("train", {"stage": "ppo", "reward_model": "https://scorer.example/score"}),
        ("train", {"stage": "ppo", "reward_model": "rm", "finetuning_type": "full", "reward_model_type": "full"}),
        ("train", {"streaming": True, "max_steps": 10, "val_size": 5}),
        ("train", {"quantization_bit": 4}),
        ("train", {"quantization_bit": 4, "adapter_name_or_path": "a"}),  # continue one adapter: fine
        ("train", {"quantization_bit": 4, "finetuning_type": "oft"}),  # QOFT, as LLaMA-Factory allows
        ("train", {"finetuning_type": "oft", "oft_rank": 4, "oft_block_size": 0}),
        ("train", {"finetuning_type": "freeze", "use_llama_pro": True, "freeze_trainable_layers": 2}),
        ("train", {"finetuning_type": "lora", "use_llama_pro": True}),
        ("train", {"shift_attn": True}),
        ("train", {"quantization_method": "hqq", "quantization_bit": 3}),
        ("train", {"stage": "dpo", "dpo_label_smoothing": 0.1}),
        ("train", {"do_train": False, "do_eval": True, "val_size": 0.1}),
        ("train", {"dataset": "a,b", "mix_strategy": "interleave_over", "interleave_probs": "0.9,0.1"}),
        ("chat", {"quantization_bit": 4, "finetuning_type": "full"}),  # inference on a quantized base is fine
        ("chat", {"infer_backend": "vllm", "adapter_name_or_path": "a"}),
        ("eval", {"harness_tasks": "arc_easy"}),
        ("train", {"early_stopping_steps": 2, "val_size": 0.1, "eval_strategy": "steps", "eval_steps": 5}),
        ("train", {"compute_accuracy": True, "val_size": 0.1}),
        ("chat", {"use_unsloth": True}),  # no adapter: chat loads with transformers (as in LLaMA-Factory)
        ("train", {"use_unsloth_gc": False, "use_unsloth": False}),
        ("export", {"export_dir": "o", "export_quantization_bit": 4, "export_quantization_dataset": "c4",
                    "export_quantization_method": "gptq"}),
    ],
)
def test_allowed_combinations_parse(command, extra):
    parse_config(command, _raw(command, extra))


def test_omitted_do_train_means_train():
    cfg = parse_config("train", dict(TRAIN))
    assert cfg.training.do_train is True
    cfg = parse_config("train", {**TRAIN, "do_train": False, "do_eval": True, "val_size": 0.1})
    assert cfg.training.do_train is False


@pytest.mark.parametrize(
    ("command", "key", "value", "needle"),
    [
        ("train", "cutoff_len", -1, "'cutoff_len' must be 1 or more"),
        ("train", "lora_rank", 0, "'lora_rank' must be 1 or more"),
        ("train", "lora_dropout", 1.0, "'lora_dropout' must be less than 1"),
        ("train", "val_size", -0.1, "'val_size' must be 0 or more"),
        ("train", "learning_rate", -1e-4, "'learning_rate' must be 0 or more"),
        ("train", "max_steps", 0, "'max_steps' cannot be 0"),
        ("train", "per_device_train_batch_size", 0, "'per_device_train_batch_size'"),
        ("train", "quantization_bit", 7, "'quantization_bit' got 7"),
        ("train", "freeze_trainable_layers", 0, "'freeze_trainable_layers' cannot be 0"),
        ("train", "num_generations", 1, "'num_generations' must be 2 or more"),
        ("train", "dpo_label_smoothing", 0.7, "'dpo_label_smoothing' must be 0.5 or less"),
        ("train", "early_stopping_steps", 0, "'early_stopping_steps' must be 1 or more"),
        ("train", "galore_rank", 0, "'galore_rank' must be 1 or more"),
        ("train", "apollo_scale", 0, "'apollo_scale' must be more than 0"),
        ("chat", "top_p", 0, "'top_p' must be more than 0"),
        ("eval", "n_shot", -1, "'n_shot' must be 0 or more"),
        ("eval", "split", "train", "'split' got 'train'"),
        ("export", "export_size", 0, "'export_size' must be more than 0"),
        ("export", "export_quantization_bit", 3, "'export_quantization_bit' got 3"),
    ],
)
def test_values_outside_their_domain_are_refused(command, key, value, needle):
    raw = _raw(command, {"task": "sample_en_test", "export_dir": "o"} if command in ("eval", "export") else {})
    if command == "eval":
        raw.pop("export_dir")
    elif command == "export":
        raw.pop("task")
    raw[key] = value
    with pytest.raises(ConfigError) as err:
        parse_config(command, raw)
    assert needle in str(err.value)


@pytest.mark.parametrize("key", ["dataset_dir", "finetuning_type", "cutoff_len", "lora_target"])
def test_null_for_a_setting_that_cannot_be_empty_is_refused(key):
    """Found by the settings fuzzer: `dataset_dir: null` passed parsing and crashed loading the data."""
    raw = _raw("train", {})
    raw[key] = None
    with pytest.raises(ConfigError, match=f"'{key}' cannot be empty"):
        parse_config("train", raw)


def test_null_is_fine_where_a_setting_may_be_empty():
    raw = _raw("train", {})
    raw.update(template=None, max_samples=None)
    cfg = parse_config("train", raw)
    assert cfg.data.template is None and cfg.data.max_samples is None


def _tunery_settings():
    classes = list(GROUPS.values()) + [TrainingArguments]
    own = {f.name for f in dataclasses.fields(TrainingArguments)} - {
        f.name for f in dataclasses.fields(TrainingArguments.__mro__[1])}
    for cls in classes:
        for group, f, tp in settings_of(cls):
            if cls is TrainingArguments and f.name not in own:
                continue  # transformers' own fields: checked by transformers, plus validation.TRAINING_DOMAINS
            yield f"{cls.__name__}.{group + '.' if group else ''}{f.name}", f, tp


def test_every_setting_states_its_domain():
    missing = [name for name, f, tp in _tunery_settings() if not has_domain(f.metadata, tp)]
    assert not missing, f"settings without a domain (add choices/min/max/gt/lt or a 'domain' reason): {missing}"
    numeric = [name for name, f, tp in _tunery_settings()
               if {a for a in typing.get_args(tp) or (tp,) if a is not type(None)} <= {int, float}
               and not any(k in f.metadata for k in ("min", "max", "gt", "lt", "nonzero", "choices", "domain"))]
    assert not numeric


def test_has_domain_fails_a_bare_setting():
    @dataclasses.dataclass
    class Bare:
        size: int = 3
        name: str = "x"
        flag: bool = False

    flags = {f.name: has_domain(f.metadata, tp) for _, f, tp in settings_of(Bare)}
    assert flags == {"size": False, "name": False, "flag": True}


def test_method_settings_live_in_groups_and_flat_names_still_work():
    cfg = parse_config("train", {**TRAIN, "lora_rank": "16", "pref_beta": 0.2, "quantization_bit": 4,
                                 "freeze_trainable_layers": 3, "num_generations": 8})
    ft, model = cfg.finetuning, cfg.model
    assert ft.lora.lora_rank == 16 and ft.lora.lora_alpha == 32 and ft.lora_rank == 16
    assert ft.preference.pref_beta == 0.2 and ft.freeze.freeze_trainable_layers == 3 and ft.rl.num_generations == 8
    assert model.quantization.quantization_bit == 4 and model.quantization_bit == 4
    ft.lora_rank = 4  # the compatibility layer writes through to the group
    assert ft.lora.lora_rank == 4
    assert cfg.resolved()["lora_rank"] == 4 and "lora" not in cfg.resolved()


def test_flat_constructor_copy_and_replace_keep_groups_independent():
    ft = FinetuningArguments(lora_rank=4, stage="simpo")
    assert ft.lora.lora_rank == 4 and ft.lora.lora_alpha == 8 and ft.preference.pref_loss == "simpo"
    twin = copy.copy(ft)
    twin.lora_rank = 32
    assert ft.lora_rank == 4
    other = dataclasses.replace(ft, lora_dropout=0.1)
    other.lora_rank = 64
    assert (ft.lora_rank, ft.lora_dropout, other.lora_dropout) == (4, 0.0, 0.1)
    assert ModelArguments(quantization_method="bitsandbytes").quantization.quantization_method == "bnb"


def test_help_shows_the_groups():
    result = subprocess.run([sys.executable, "-m", "tunery", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for title in ("finetuning.lora", "finetuning.freeze", "finetuning.preference", "finetuning.rl",
                  "model.quantization"):
        assert f"\n{title} (" in result.stdout
    assert "--lora_rank (default: 8)" in result.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--stage", "grpo"], ["reward_funcs"]),
        (["--streaming", "true", "--dry_run", "true"], ["streaming", "max_steps"]),
        (["--quantization_bit", "4", "--finetuning_type", "full"], ["quantization_bit", "finetuning_type: full"]),
    ],
)
def test_cli_config_error_wins_before_any_model_loads(tmp_path, args, needles):
    # /nonexistent would fail as a model error if anything were loaded; the config error comes first.
    result = subprocess.run(
        [sys.executable, "-m", "tunery", "train", "--model_name_or_path", "/nonexistent/model", "--dataset", "d",
         "--output_dir", str(tmp_path / "out"), *args],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert not (tmp_path / "out").exists()


def test_fsdp_through_accelerate_launch_counts_for_the_qlora_rule(monkeypatch):
    """`accelerate launch` with an FSDP config sets ACCELERATE_USE_FSDP in the process; 4-bit QLoRA is fine."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="quantization_bit: 8 cannot train under FSDP"):
        parse_config("train", {**TRAIN, "quantization_bit": 8})
    assert parse_config("train", {**TRAIN, "quantization_bit": 4}).model.quantization_bit == 4
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert parse_config("train", {**TRAIN, "quantization_bit": 8}).model.quantization_bit == 8
