"""Every user-facing LLaMA-Factory setting and what Tunery does with it (data; docs/compat.md is generated from it).

Source: the argument dataclasses of LLaMA-Factory 0.9.5 (``hparams/model_args.py``, ``data_args.py``,
``finetuning_args.py``, ``generating_args.py``, ``evaluation_args.py``, ``training_args.py``; fields with
``init=False`` are internal and left out), plus a few names of older releases still found in configs.
transformers' own training arguments (``learning_rate``, ``bf16``, ...) are not listed: Tunery's
TrainingArguments is transformers' class, so they mean what they mean there.

Each key has one status:

- ``honoured``: a Tunery setting of the same name and meaning (``note`` says where details differ);
- ``alias``: read as the Tunery setting ``target`` (same meaning, another name);
- ``refused``: Tunery cannot do what the key asks. Set to anything but LLaMA-Factory's default, the
  parser stops at parse time with ``reason`` (one line); set to the default (the feature stays off,
  as LLaMA-Factory's web UI writes it) it is accepted and changes nothing.

Methods Tunery does not have yet (the torch profiler, LD-DPO, ...) are refused with "not supported by Tunery yet";
whoever implements one flips its keys to ``honoured`` here (tests/unit/config/test_lf_keys.py then
checks that a Tunery setting reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import yaml

Status = Literal["honoured", "alias", "refused"]



@dataclass(frozen=True)
class LFKey:
    """What Tunery does with one LLaMA-Factory key (see the module docstring)."""

    status: Status
    reason: str = ""  # refused: why, one line; honoured: a note on details that differ
    target: str = ""  # alias: the Tunery setting it is read as
    default: Any = None  # refused: LLaMA-Factory's default, accepted as "feature off"


def honoured(note: str = "") -> LFKey:
    return LFKey("honoured", reason=note)


def alias(target: str) -> LFKey:
    return LFKey("alias", target=target)


def refused(reason: str, default: Any) -> LFKey:
    return LFKey("refused", reason=reason, default=default)


def yet(feature: str, instead: str = "") -> str:
    """Reason for a feature Tunery may add: 'X is not supported by Tunery yet[: what to do]'."""
    return f"{feature} is not supported by Tunery yet" + (f": {instead}" if instead else "")


def no(feature: str, instead: str = "") -> str:
    """Reason for a feature outside Tunery's scope: 'X is not supported by Tunery[: what to do]'."""
    return f"{feature} is not supported by Tunery" + (f": {instead}" if instead else "")


LF_KEYS: dict[str, LFKey] = {
    # model_args.py
    "model_name_or_path": honoured(),
    "adapter_name_or_path": honoured(),
    "adapter_folder": refused(yet("adapter_folder", "give the adapter's own folder in adapter_name_or_path"), None),
    "cache_dir": honoured(),
    "use_fast_tokenizer": honoured(),
    "resize_vocab": honoured(),
    "split_special_tokens": honoured(),
    "add_tokens": honoured(),
    "add_special_tokens": honoured(),
    "new_special_tokens_config": refused(yet("describing and initialising new special tokens", "add_special_tokens adds them (resize_vocab initialises their embeddings)"), None),
    "init_special_tokens": refused(yet("describing and initialising new special tokens", "add_special_tokens adds them (resize_vocab initialises their embeddings)"), 'noise_init'),
    "model_revision": honoured(),
    "low_cpu_mem_usage": refused("transformers 5 always loads weights lazily (low_cpu_mem_usage is always on)", True),
    "rope_scaling": honoured("factor from cutoff_len and the model's context, as LLaMA-Factory computes it"),
    "flash_attn": honoured("fa3 needs the flash-attn 3 package; 'disabled' means eager attention"),
    "shift_attn": honoured("through a registered attention function (sdpa on the groups); the wrapped group keeps causal order"),
    "mixture_of_depths": refused(no("Mixture-of-Depths", "no maintained library provides it (LLaMA-Factory's MoD package is unmaintained)"), None),
    "use_unsloth": honoured("CUDA only (refused without it), package unsloth: FastLanguageModel loads the model and "
                            "builds LoRA while training lora/full (freeze and oft refused); chat/predict/api/eval "
                            "load the one adapter with it; export refused"),
    "use_unsloth_gc": honoured("CUDA only (refused without it): checkpointed layer inputs kept in CPU memory "
                               "(transformers' offloaded checkpointing); with use_unsloth, Unsloth's own"),
    "enable_liger_kernel": honoured("CUDA only (refused without it): transformers' use_liger_kernel, package liger-kernel"),
    "moe_aux_loss_coef": refused(yet("setting the MoE router loss coefficient", "the model config's value is used"), None),
    "disable_gradient_checkpointing": honoured(),
    "use_reentrant_gc": honoured(),
    "upcast_layernorm": honoured(),
    "upcast_lmhead_output": refused(yet("an fp32 output head", "the head computes in the model's dtype"), False),
    "train_from_scratch": honoured(),
    "infer_backend": honoured("huggingface or vllm (sglang and ktransformers are refused by value)"),
    "offload_folder": refused("Tunery loads a model on one device and never offloads weights to a folder", 'offload'),
    "use_kv_cache": alias("use_cache"),
    "use_v1_kernels": refused(no("LLaMA-Factory's own v1 kernel set", "on CUDA enable_liger_kernel gives fused Triton kernels"), False),
    "infer_dtype": honoured(),
    "hf_hub_token": honoured(),
    "ms_hub_token": honoured(),
    "om_hub_token": refused(no("the Modelers hub", "models come from local folders, the Hugging Face Hub or ModelScope"), None),
    "print_param_status": honoured(),
    "trust_remote_code": honoured(),
    "quantization_method": honoured("bnb, hqq and eetq quantize while loading; gptq and awq read quantized checkpoints"),
    "quantization_bit": honoured(),
    "quantization_type": honoured(),
    "double_quantization": honoured(),
    "quantization_device_map": refused(yet("spreading a quantized model over devices", "it loads on one device"), None),
    "image_max_pixels": honoured("images larger than this are scaled down (aspect kept) before the processor sees them"),
    "image_min_pixels": honoured("images smaller than this are scaled up (aspect kept) before the processor sees them"),
    "image_do_pan_and_scan": refused(yet("pan-and-scan image crops"), False),
    "crop_to_patches": refused(yet("cropping images to patches"), False),
    "video_max_pixels": honoured("per frame, as image_max_pixels"),
    "video_min_pixels": honoured("per frame, as image_min_pixels"),
    "video_fps": honoured("frames sampled per second of video (needs the av package for video files)"),
    "video_maxlen": honoured(),
    "use_audio_in_video": refused(yet("the audio track of a video"), False),
    "audio_sampling_rate": honoured("audio is resampled to this rate (wav files read without extra packages)"),
    "export_dir": honoured(),
    "export_size": honoured(),
    "export_device": honoured(),
    "export_quantization_bit": honoured(),
    "export_quantization_dataset": honoured(),
    "export_quantization_nsamples": honoured(),
    "export_quantization_maxlen": honoured(),
    "export_legacy_format": honoured(),
    "export_hub_model_id": honoured(),
    "vllm_maxlen": honoured(),
    "vllm_gpu_util": honoured(),
    "vllm_enforce_eager": honoured(),
    "vllm_max_lora_rank": honoured(),
    "vllm_config": honoured(),
    "sglang_maxlen": refused(no("the SGLang engine", "use infer_backend: huggingface or vllm"), 4096),
    "sglang_mem_fraction": refused(no("the SGLang engine", "use infer_backend: huggingface or vllm"), 0.7),
    "sglang_tp_size": refused(no("the SGLang engine", "use infer_backend: huggingface or vllm"), -1),
    "sglang_config": refused(no("the SGLang engine", "use infer_backend: huggingface or vllm"), None),
    "sglang_lora_backend": refused(no("the SGLang engine", "use infer_backend: huggingface or vllm"), 'triton'),
    "use_kt": refused(no("KTransformers"), False),
    "kt_weight_path": refused(no("KTransformers"), None),
    "kt_expert_checkpoint_path": refused(no("KTransformers"), None),
    "kt_use_lora_experts": refused(no("KTransformers"), None),
    "kt_lora_expert_num": refused(no("KTransformers"), None),
    "kt_lora_expert_intermediate_size": refused(no("KTransformers"), None),
    # data_args.py
    "template": honoured(),
    "dataset": honoured(),
    "eval_dataset": honoured(),
    "dataset_dir": honoured(),
    "media_dir": honoured("media paths are read relative to media_dir (default: dataset_dir)"),
    "cutoff_len": honoured(),
    "train_on_prompt": honoured(),
    "mask_history": honoured(),
    "streaming": honoured(),
    "buffer_size": honoured(),
    "mix_strategy": honoured(),
    "interleave_probs": honoured(),
    "overwrite_cache": honoured(),
    "preprocessing_batch_size": honoured(),
    "preprocessing_num_workers": honoured(),
    "max_samples": honoured(),
    "eval_num_beams": honoured(),
    "ignore_pad_token_for_loss": refused("padding never counts in Tunery's loss (ignore_pad_token_for_loss is always on)", True),
    "val_size": honoured(),
    "eval_on_each_dataset": honoured(),
    "packing": honoured(),
    "neat_packing": honoured(),
    "tool_format": honoured(),
    "default_system": honoured(),
    "enable_thinking": honoured(),
    "preserve_thinking": honoured(),
    "tokenized_path": honoured(),
    "data_shared_file_system": refused(yet("data_shared_file_system", "each machine prepares its data into its own cache"), False),
    # finetuning_args.py
    "freeze_trainable_layers": honoured(),
    "freeze_trainable_modules": honoured(),
    "freeze_extra_modules": honoured(),
    "additional_target": honoured(),
    "lora_alpha": honoured(),
    "lora_dropout": honoured(),
    "lora_rank": honoured(),
    "lora_target": honoured(),
    "loraplus_lr_ratio": honoured(),
    "loraplus_lr_embedding": honoured(),
    "use_rslora": honoured(),
    "use_dora": honoured(),
    "pissa_init": honoured(),
    "pissa_iter": honoured(),
    "pissa_convert": honoured(),
    "create_new_adapter": honoured(),
    "module_dropout": honoured(),
    "oft_rank": honoured(),
    "oft_block_size": honoured(),
    "oft_target": honoured("LLaMA-Factory 0.9.5 parses it but targets lora_target's modules; Tunery targets oft_target"),
    "pref_beta": honoured(),
    "pref_ftx": honoured(),
    "pref_bco_weight": refused(yet("the BCO loss term", "trl's bco_pair loss lacks LLaMA-Factory's running reward mean"), 0.0),
    "pref_loss": honoured(),
    "dpo_label_smoothing": honoured(),
    "kto_chosen_weight": honoured(),
    "kto_rejected_weight": honoured(),
    "simpo_gamma": honoured(),
    "ppo_buffer_size": honoured(),
    "ppo_epochs": honoured(),
    "ppo_score_norm": honoured(),
    "ppo_target": honoured(),
    "ppo_whiten_rewards": honoured(),
    "ref_model": honoured(),
    "ref_model_adapters": honoured(),
    "ref_model_quantization_bit": honoured(),
    "reward_model": honoured(),
    "reward_model_adapters": honoured(),
    "reward_model_quantization_bit": honoured(),
    "reward_model_type": honoured(),
    "ld_alpha": honoured("trl's DPOConfig.ld_alpha (stage dpo); trl weights the reference's tail too, LLaMA-Factory only the policy's"),
    "use_galore": honoured(),
    "galore_target": honoured(),
    "galore_rank": honoured(),
    "galore_update_interval": honoured(),
    "galore_scale": honoured(),
    "galore_proj_type": honoured(),
    "galore_layerwise": honoured(),
    "use_apollo": honoured(),
    "apollo_target": honoured(),
    "apollo_rank": honoured(),
    "apollo_update_interval": honoured(),
    "apollo_scale": honoured(),
    "apollo_proj": honoured(),
    "apollo_proj_type": honoured(),
    "apollo_scale_type": honoured(),
    "apollo_layerwise": honoured(),
    "apollo_scale_front": refused("transformers' APOLLO optimizer has no scale_front option", False),
    "use_badam": honoured(),
    "badam_mode": honoured(),
    "badam_start_block": honoured(),
    "badam_switch_mode": honoured(),
    "badam_switch_interval": honoured("-1 never switches (badam itself would switch every step)"),
    "badam_update_ratio": honoured(),
    "badam_mask_mode": honoured(),
    "badam_verbose": honoured(),
    "use_swanlab": honoured(),
    "swanlab_project": honoured(),
    "swanlab_workspace": refused("transformers' SwanLab integration does not read it: set it in SwanLab itself", None),
    "swanlab_run_name": honoured(),
    "swanlab_mode": honoured(),
    "swanlab_api_key": honoured(),
    "swanlab_logdir": honoured(),
    "swanlab_lark_webhook_url": refused("transformers' SwanLab integration does not read it: set it in SwanLab itself", None),
    "swanlab_lark_secret": refused("transformers' SwanLab integration does not read it: set it in SwanLab itself", None),
    "pure_bf16": honoured("CUDA only (refused without it): weights load and train in bf16, no fp32 copies"),
    "stage": honoured("also accepts orpo, simpo and grpo"),
    "finetuning_type": honoured(),
    "use_llama_pro": honoured("the expansion is `tunery expand` (LLaMA-Factory's scripts/llama_pro.py)"),
    "use_adam_mini": honoured(),
    "use_mca": refused(no("Megatron-Core training (mcore_adapter)", "use deepspeed or FSDP through accelerate"), False),
    "use_hyper_parallel": refused(no("HyperParallel training", "use deepspeed or FSDP through accelerate"), False),
    "hyper_parallel_args": refused(no("HyperParallel training", "use deepspeed or FSDP through accelerate"), None),
    "use_muon": honoured("torch.optim.Muon (LLaMA-Factory bundles its own copy); the same split and learning-rate scaling"),
    "use_dft_loss": honoured(),
    "use_asft_loss": honoured("with LoRA the reference is the base with the adapter switched off"),
    "asft_alpha": honoured(),
    "use_eaft_loss": honoured(),
    "eaft_alpha": honoured(),
    "freeze_vision_tower": honoured(),
    "freeze_multi_modal_projector": honoured(),
    "freeze_language_model": honoured(),
    "compute_accuracy": honoured(),
    "disable_shuffling": honoured(),
    "early_stopping_steps": honoured(),
    "plot_loss": honoured(),
    "include_effective_tokens_per_second": refused(yet("effective tokens per second", "trainer_log.jsonl logs throughput"), False),
    # generating_args.py
    "do_sample": honoured(),
    "temperature": honoured(),
    "top_p": honoured(),
    "top_k": honoured(),
    "num_beams": honoured(),
    "max_length": honoured(),
    "max_new_tokens": honoured(),
    "repetition_penalty": honoured(),
    "length_penalty": honoured(),
    "skip_special_tokens": honoured(),
    # evaluation_args.py
    "task": honoured(),
    "task_dir": honoured(),
    "batch_size": honoured(),
    "seed": honoured(),
    "lang": honoured(),
    "n_shot": honoured(),
    "save_dir": honoured(),
    "download_mode": refused(yet("choosing the download mode", "delete the task's cache folder to fetch it again"), '?DownloadMode.REUSE_DATASET_IF_EXISTS'),
    # training_args.py
    "ray_num_workers": honoured(),
    "ray_init_kwargs": honoured(),
    "master_addr": refused("Ray Train chooses the process group's address and port itself: drop it (docs/distributed.md)", None),
    "master_port": refused("Ray Train chooses the process group's address and port itself: drop it (docs/distributed.md)", None),
    "enable_torch_profiler": refused(yet("the torch profiler"), False),
    "profiler_output_dir": refused(yet("the torch profiler"), None),
    "profiler_wait_steps": refused(yet("the torch profiler"), 1),
    "profiler_warmup_steps": refused(yet("the torch profiler"), 1),
    "profiler_active_steps": refused(yet("the torch profiler"), 1),
    "profiler_repeat": refused(yet("the torch profiler"), 1),
    "profiler_record_shapes": refused(yet("the torch profiler"), True),
    "profiler_profile_memory": refused(yet("the torch profiler"), True),
    "profiler_with_stack": refused(yet("the torch profiler"), True),
    "profile_modules": refused(yet("the torch profiler"), None),
    "fp8": honoured("CUDA only (refused without it): accelerate's mixed_precision fp8 with the backend's recipe"),
    "fp8_backend": honoured("auto takes the first of torchao, te, msamp installed (accelerate's order)"),
    "fp8_enable_fsdp_float8_all_gather": honoured("torchao backend only (refused with te/msamp)"),
    "overwrite_output_dir": honoured("guards finished runs: without it Tunery will not write into a folder that holds one"),
    # names of older LLaMA-Factory releases
    "use_cache": honoured("LLaMA-Factory 0.9.5 calls it use_kv_cache"),
    "use_ray": honoured("LLaMA-Factory turns Ray on with USE_RAY=1 only; Tunery reads both"),
    "ray_run_name": honoured(),
    "ray_storage_path": honoured(),
    "ray_storage_filesystem": honoured(),
    "resources_per_worker": honoured("default: one GPU per worker when torch sees one, else one CPU (LLaMA-Factory: {GPU: 1})"),
    "placement_strategy": honoured(),
    # transformers 4 training arguments LLaMA-Factory's examples still use
    "fsdp_transformer_layer_cls_to_wrap": refused(
        "transformers 5 removed it: use fsdp_config: {transformer_layer_cls_to_wrap: [...]}", None),
}

# The chat template names LLaMA-Factory 0.9.5 registers (data/template.py). A name Tunery has as a builtin
# means the same; the others are served by ``template: auto`` (the model's own chat template).
LF_TEMPLATES: tuple[str, ...] = tuple("""
    alpaca bailing bailing_v2 breeze chatglm3 chatml chatml_de cohere cpm4 dbrx deepseek deepseek3
    deepseekr1 hy3 deepseekcoder default dots_ocr empty ernie ernie_nothink ernie_vl exaone falcon
    falcon_h1 fewshot gemma gemma2 gemma3 gemma3n gemma4 gemma4n glm4 glm4_moe glm4v glm4_5v glm_ocr
    glm4_7 glmz1 gpt_oss granite3 granite3_vision granite4 index hunyuan hunyuan_small intern2
    intern_vl intern_s1 keye_vl kimi_vl lfm2 lfm2_vl llama2 llama2_zh llama3 llama4 mllama moonlight
    llava llava_next llava_next_llama3 llava_next_mistral llava_next_qwen llava_next_yi
    llava_next_video llava_next_video_mistral llava_next_video_yi mimo mimo_v2 mimo_vl minicpm_v
    minicpm_v_4_6 minicpm_o minimax1 minimax2 ministral mistral mistral_small ministral3 olmo
    openchat openchat-3.6 opencoder paligemma paligemma_chat phi phi_small phi4 phi4_mini pixtral
    qwen qwen3 qwen3_nothink qwen2_audio qwen2_omni qwen3_omni qwen3_omni_nothink qwen2_vl qwen3_vl
    qwen3_vl_nothink qwen3_5 qwen3_5_nothink qwen3_6 sailor seed_coder seed_oss smollm smollm2 solar
    starchat telechat2 vicuna video_llava xuanyuan yi yi_vl youtu youtu_vl yuan zephyr aeva
""".split())

# Values of honoured keys that ask for something Tunery lacks: (key, value) -> one-line reason.
REFUSED_VALUES: dict[tuple[str, str], str] = {
    ("infer_backend", "sglang"): no("the SGLang engine", "use infer_backend: huggingface or vllm"),
    ("infer_backend", "ktransformers"): no("KTransformers", "use infer_backend: huggingface or vllm"),
}

ALIASES: dict[str, str] = {key: entry.target for key, entry in LF_KEYS.items() if entry.status == "alias"}
REFUSED: dict[str, LFKey] = {key: entry for key, entry in LF_KEYS.items() if entry.status == "refused"}


def is_lf_default(value: Any, default: Any) -> bool:
    """True when ``value`` (as read from YAML or a CLI string) equals LLaMA-Factory's ``default``."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "null", "none", "~"):
            return default is None
        if isinstance(default, bool):
            return text.lower() in (("true", "1", "yes", "on") if default else ("false", "0", "no", "off"))
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                return float(text) == float(default)
            except ValueError:
                return False
        if isinstance(default, (dict, list)):
            return yaml.safe_load(text) == default
        return isinstance(default, str) and text == default
    if value is None or default is None:
        return value is None and default is None
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    return bool(value == default)
