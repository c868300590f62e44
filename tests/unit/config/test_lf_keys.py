"""config/lf_keys.py: every LLaMA-Factory setting is honoured (a Tunery setting reads it) or refused at parse time.

Also: no Tunery setting is parsed and then dropped. Every field of a Tunery settings class must be read
somewhere in src/tunery outside config/ (an attribute read ``.name`` or ``getattr(x, "name")``), be a
refused LLaMA-Factory key (the refusal is its reader), or be listed in DYNAMIC_READERS with where it is read.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
from pathlib import Path

import pytest
import yaml

from tunery.config import GROUPS, parse_config
from tunery.config.groups import settings_of
from tunery.config.lf_keys import ALIASES, LF_KEYS, REFUSED, REFUSED_VALUES, is_lf_default
from tunery.config.parser import UNSUPPORTED_LF_KEYS
from tunery.config.training_args import TrainingArguments
from tunery.errors import ConfigError, ModelError

SRC = Path(__file__).resolve().parents[3] / "src" / "tunery"

# The user-facing fields of LLaMA-Factory 0.9.5's argument dataclasses (hparams/*_args.py, init=True),
# written out so that dropping a row from the table fails here.
LF_095_KEYS = """
model_name_or_path adapter_name_or_path adapter_folder cache_dir use_fast_tokenizer resize_vocab
split_special_tokens add_tokens add_special_tokens new_special_tokens_config init_special_tokens
model_revision low_cpu_mem_usage rope_scaling flash_attn shift_attn mixture_of_depths use_unsloth
use_unsloth_gc enable_liger_kernel moe_aux_loss_coef disable_gradient_checkpointing use_reentrant_gc
upcast_layernorm upcast_lmhead_output train_from_scratch infer_backend offload_folder use_kv_cache
use_v1_kernels infer_dtype hf_hub_token ms_hub_token om_hub_token print_param_status trust_remote_code
quantization_method quantization_bit quantization_type double_quantization quantization_device_map
image_max_pixels image_min_pixels image_do_pan_and_scan crop_to_patches video_max_pixels video_min_pixels
video_fps video_maxlen use_audio_in_video audio_sampling_rate export_dir export_size export_device
export_quantization_bit export_quantization_dataset export_quantization_nsamples export_quantization_maxlen
export_legacy_format export_hub_model_id vllm_maxlen vllm_gpu_util vllm_enforce_eager vllm_max_lora_rank
vllm_config sglang_maxlen sglang_mem_fraction sglang_tp_size sglang_config sglang_lora_backend use_kt
kt_weight_path kt_expert_checkpoint_path kt_use_lora_experts kt_lora_expert_num
kt_lora_expert_intermediate_size template dataset eval_dataset dataset_dir media_dir cutoff_len
train_on_prompt mask_history streaming buffer_size mix_strategy interleave_probs overwrite_cache
preprocessing_batch_size preprocessing_num_workers max_samples eval_num_beams ignore_pad_token_for_loss
val_size eval_on_each_dataset packing neat_packing tool_format default_system enable_thinking
preserve_thinking tokenized_path data_shared_file_system freeze_trainable_layers freeze_trainable_modules
freeze_extra_modules additional_target lora_alpha lora_dropout lora_rank lora_target loraplus_lr_ratio
loraplus_lr_embedding use_rslora use_dora pissa_init pissa_iter pissa_convert create_new_adapter
module_dropout oft_rank oft_block_size oft_target pref_beta pref_ftx pref_bco_weight pref_loss
dpo_label_smoothing kto_chosen_weight kto_rejected_weight simpo_gamma ppo_buffer_size ppo_epochs
ppo_score_norm ppo_target ppo_whiten_rewards ref_model ref_model_adapters ref_model_quantization_bit
reward_model reward_model_adapters reward_model_quantization_bit reward_model_type ld_alpha use_galore
galore_target galore_rank galore_update_interval galore_scale galore_proj_type galore_layerwise use_apollo
apollo_target apollo_rank apollo_update_interval apollo_scale apollo_proj apollo_proj_type apollo_scale_type
apollo_layerwise apollo_scale_front use_badam badam_mode badam_start_block badam_switch_mode
badam_switch_interval badam_update_ratio badam_mask_mode badam_verbose use_swanlab swanlab_project
swanlab_workspace swanlab_run_name swanlab_mode swanlab_api_key swanlab_logdir swanlab_lark_webhook_url
swanlab_lark_secret pure_bf16 stage finetuning_type use_llama_pro use_adam_mini use_mca use_hyper_parallel
hyper_parallel_args use_muon use_dft_loss use_asft_loss asft_alpha use_eaft_loss eaft_alpha
freeze_vision_tower freeze_multi_modal_projector freeze_language_model compute_accuracy disable_shuffling
early_stopping_steps plot_loss include_effective_tokens_per_second do_sample temperature top_p top_k
num_beams max_length max_new_tokens repetition_penalty length_penalty skip_special_tokens task task_dir
batch_size seed lang n_shot save_dir download_mode ray_num_workers ray_init_kwargs master_addr master_port
enable_torch_profiler profiler_output_dir profiler_wait_steps profiler_warmup_steps profiler_active_steps
profiler_repeat profiler_record_shapes profiler_profile_memory profiler_with_stack profile_modules fp8
fp8_backend fp8_enable_fsdp_float8_all_gather overwrite_output_dir """.split()

# Settings read without a literal ``.name`` in src (each says where).
DYNAMIC_READERS = {
    "adapter_name_or_path": "ModelArguments.adapters splits it",
    "lora_target": "FinetuningArguments.lora_targets splits it",
    "compute_metrics": "inference.predict reads it with setting(cfg, 'compute_metrics')",
    "no_cuda": "TrainingArguments.__post_init__ turns it into use_cpu",
    "warmup_ratio": "TrainingArguments.__post_init__ turns it into warmup_steps",
    "include_tokens_per_second": "accepted: trainer_log.jsonl always logs throughput",
    **{k: "train.trainer.SWANLAB_ENV passes it to SwanLab as an environment variable"
       for k in ("swanlab_project", "swanlab_mode", "swanlab_api_key", "swanlab_logdir")},
    **{f.name: "GeneratingArguments.to_generate_kwargs passes every field (dataclasses.asdict)"
       for f in dataclasses.fields(GROUPS["generation"])},
}


def tunery_settings() -> dict[str, type]:
    """Every setting of Tunery's own settings classes (transformers' training fields excluded) -> class."""
    out = {}
    for cls in [*GROUPS.values(), TrainingArguments]:
        own = {f.name for f in dataclasses.fields(cls)} if cls is not TrainingArguments else set(
            TrainingArguments.__dataclass_fields__) - set(TrainingArguments.__mro__[1].__dataclass_fields__)
        for _, f, _ in settings_of(cls):
            if cls is not TrainingArguments or f.name in own:
                out[f.name] = cls
    return out


def all_setting_names() -> set[str]:
    from tunery.config import group_class

    return {f.name for g in [*GROUPS, "training"] for _, f, _ in settings_of(group_class(g))}


def attribute_reads() -> set[str]:
    """Names read as ``x.name`` or ``getattr(x, "name")`` anywhere in src/tunery outside config/."""
    names = set()
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                names.add(node.args[1].value)
    return names


def test_every_lf_key_is_in_the_table():
    assert len(LF_095_KEYS) == len(set(LF_095_KEYS)) == 237
    assert sorted(set(LF_095_KEYS) - set(LF_KEYS)) == []


def test_honoured_keys_are_tunery_settings_and_aliases_point_at_one():
    names = all_setting_names()
    honoured = [k for k, e in LF_KEYS.items() if e.status == "honoured"]
    assert sorted(k for k in honoured if k not in names) == []
    assert sorted(t for t in ALIASES.values() if t not in names) == []
    assert sorted(k for k in ALIASES if k in names) == []  # an alias is not also a setting of its own


def test_refused_reasons_are_one_line():
    for key, entry in REFUSED.items():
        assert entry.reason and "\n" not in entry.reason, key
    assert UNSUPPORTED_LF_KEYS == {k: e.reason for k, e in REFUSED.items()}


def _asking_value(default):
    """A value that asks for the feature (differs from LLaMA-Factory's default)."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default + 1
    if isinstance(default, str):
        return default + "_other"
    if isinstance(default, dict):
        return {"other": 1}
    return "something"


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_refused_key_stops_at_parse_time_with_its_reason(key):
    entry = REFUSED[key]
    value = _asking_value(entry.default)
    assert not is_lf_default(value, entry.default)
    with pytest.raises(ConfigError) as err:
        parse_config("train", {key: value})
    assert entry.reason in str(err.value) and f"'{key}:" in str(err.value)
    # the same key at LLaMA-Factory's default (the feature off) is accepted
    parse_config("train", {key: entry.default})
    # and so is its CLI spelling
    parse_config("train", {key: "null" if entry.default is None else str(entry.default)})


@pytest.mark.parametrize(("key", "value"), sorted(REFUSED_VALUES))
def test_refused_value_stops_at_parse_time_with_its_reason(key, value):
    with pytest.raises(ConfigError) as err:
        parse_config("chat" if key == "infer_backend" else "train", {key: value})
    assert REFUSED_VALUES[(key, value)] in str(err.value)


def test_alias_is_read_as_its_target():
    cfg = parse_config("chat", {"use_kv_cache": False})
    assert cfg.model.use_cache is False
    with pytest.raises(ConfigError, match="use_kv_cache"):
        parse_config("chat", {"use_kv_cache": False, "use_cache": True})


def test_no_setting_is_parsed_and_dropped():
    reads = attribute_reads()
    unread = sorted(name for name in tunery_settings()
                    if name not in reads and name not in REFUSED and name not in DYNAMIC_READERS)
    assert unread == [], f"settings no code reads (honour them, refuse them in lf_keys.py, or list the reader): {unread}"


def test_dynamic_reader_list_holds_only_settings():
    assert sorted(set(DYNAMIC_READERS) - set(tunery_settings())) == []


EXAMPLE_FOLDERS = ("train_lora", "train_full", "train_qlora", "extras", "merge_lora", "inference")


def test_keys_of_lf_examples_are_known(reference_dir):
    """Every key in LLaMA-Factory's example YAMLs is in the table or is a transformers training argument.

    Folders for other engines (megatron, ktransformers, ascend) and the nested v1 format are out of scope.
    """
    training = set(TrainingArguments.__dataclass_fields__)
    missing, seen = set(), 0
    for folder in EXAMPLE_FOLDERS:
        for path in glob.glob(str(reference_dir / "lf/examples" / folder / "**/*.yaml"), recursive=True):
            raw = yaml.safe_load(open(path, encoding="utf-8"))
            if not isinstance(raw, dict) or "model_name_or_path" not in raw:
                continue  # accelerate / deepspeed / token list files
            seen += 1
            missing |= {(k, Path(path).name) for k in raw if k not in LF_KEYS and k not in training}
    assert seen >= 30
    assert sorted(missing) == []


def test_use_kv_cache_reaches_generation(tiny_chatml_model):
    from tunery.model.loader import load_model, load_tokenizer

    for value in (False, True):
        cfg = parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "use_kv_cache": value})
        model = load_model(load_tokenizer(cfg.model), cfg.model)
        assert model.generation_config.use_cache is value


def test_compat_doc_is_in_sync_with_the_table():
    import importlib.util

    script = SRC.parents[1] / "scripts" / "compat_doc.py"
    spec = importlib.util.spec_from_file_location("compat_doc", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = SRC.parents[1] / "docs" / "compat.md"
    assert doc.read_text(encoding="utf-8") == module.render(), "run: python scripts/compat_doc.py"


def test_lf_template_without_builtin_points_at_auto():
    """A LLaMA-Factory name without a builtin that is no multimodal family's (gemma4) points at template: auto;
    a multimodal family's name (llava) is read as auto, which needs the tokenizer's chat template."""
    from tunery.config.lf_keys import LF_TEMPLATES
    from tunery.data.template import get_template

    class Tok:
        chat_template = None
        eos_token = "</s>"
        bos_token = "<s>"

    assert "gemma4" in LF_TEMPLATES
    with pytest.raises(ConfigError, match="template: auto") as err:
        get_template("gemma4", Tok())
    assert "LLaMA-Factory" in str(err.value)
    with pytest.raises(ModelError, match="template 'auto' needs a tokenizer with a chat template"):
        get_template("llava", Tok())
    assert get_template("qwen3", Tok()).name == "qwen3"  # a shared name is the builtin
    assert get_template("smollm2", Tok()).name == "smollm2"  # every text template name is one
