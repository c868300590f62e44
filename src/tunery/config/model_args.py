"""Model, tokenizer and quantization settings (LLaMA-Factory's names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tunery.config.groups import flat_groups, group_field

FREE = "free text"
PATH = "a path or hub id, checked when it is opened"

# Bit widths each on-the-fly quantization library loads (LLaMA-Factory's table); gptq/awq read
# already-quantized checkpoints, so quantization_bit must stay unset for them.
QUANTIZATION_BITS: dict[str, tuple[int, ...]] = {"bnb": (4, 8), "hqq": (1, 2, 3, 4, 5, 6, 8), "eetq": (8,)}


@dataclass
class QuantizationArguments:
    """Loading the base quantized (QLoRA)."""

    quantization_method: Literal["bnb", "bitsandbytes", "hqq", "eetq", "gptq", "awq"] = field(
        default="bnb", metadata={"help": "On-the-fly quantization library."}
    )
    quantization_bit: int | None = field(
        default=None,
        metadata={"help": "Load the base in 4 or 8 bit (QLoRA).", "choices": (1, 2, 3, 4, 5, 6, 8)},
    )
    quantization_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "4-bit data type."})
    double_quantization: bool = field(default=True, metadata={"help": "Quantize the 4-bit scales too."})
    quantization_device_map: Literal["auto"] | None = field(
        default=None, metadata={"help": "Device map for quantized loading."}
    )

    def __post_init__(self) -> None:
        if self.quantization_method == "bitsandbytes":
            self.quantization_method = "bnb"


@dataclass
class MultimodalArguments:
    """Media preprocessing before the model's processor (LLaMA-Factory's meanings; see docs/multimodal.md).

    Pixels are width x height; an image outside [min, max] is scaled (aspect kept) into the range.
    """

    image_max_pixels: int = field(default=768 * 768, metadata={"help": "Max pixels per image.", "min": 1})
    image_min_pixels: int = field(default=32 * 32, metadata={"help": "Min pixels per image.", "min": 1})
    video_max_pixels: int = field(default=256 * 256, metadata={"help": "Max pixels per video frame.", "min": 1})
    video_min_pixels: int = field(default=16 * 16, metadata={"help": "Min pixels per video frame.", "min": 1})
    video_fps: float = field(default=2.0, metadata={"help": "Video frames per second.", "gt": 0})
    video_maxlen: int = field(default=128, metadata={"help": "Max video frames.", "min": 1})
    audio_sampling_rate: int = field(default=16000, metadata={"help": "Audio samples per second.", "min": 1})


@flat_groups
@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Local folder, .gguf file, hub id, or alias (e.g. smollm2-135m-instruct).", "domain": PATH},
    )
    adapter_name_or_path: str | None = field(
        default=None, metadata={"help": "Adapter folder(s) or hub id(s), comma separated, applied in order.", "domain": PATH}
    )
    adapter_folder: str | None = field(default=None, metadata={"help": "Folder holding adapters to load.", "domain": PATH})
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file name inside model_name_or_path (when it is a folder).", "domain": PATH}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where hub downloads are cached.", "domain": PATH})
    model_revision: str = field(default="main", metadata={"help": "Hub branch, tag or commit.", "domain": "a hub revision name"})
    hf_hub_token: str | None = field(default=None, metadata={"help": "Token for gated Hugging Face models.", "domain": "a secret token"})
    ms_hub_token: str | None = field(default=None, metadata={"help": "Token for ModelScope.", "domain": "a secret token"})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the model's own Python code."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use the fast (Rust) tokenizer."})
    resize_vocab: bool = field(default=False, metadata={"help": "Resize embeddings to the tokenizer's size."})
    split_special_tokens: bool = field(default=False, metadata={"help": "Tokenize special tokens as text."})
    add_tokens: str | None = field(default=None, metadata={"help": "Extra normal tokens, comma separated.", "domain": FREE})
    add_special_tokens: str | None = field(
        default=None, metadata={"help": "Extra special tokens, comma separated.", "domain": FREE}
    )
    low_cpu_mem_usage: bool = field(default=True, metadata={"help": "Load weights lazily (transformers 5 always does; false is refused)."})
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = field(
        default=None,
        metadata={"help": "RoPE scaling for contexts longer than the model's: factor ceil(cutoff_len / max positions)."},
    )
    model_max_length: int | None = field(
        default=None, init=False,
        metadata={"help": "Set from cutoff_len at parse time (not a setting): the length RoPE scaling aims at."},
    )
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2", "fa3"] = field(
        default="auto", metadata={"help": "Attention kernel: auto, disabled (eager), sdpa, fa2."}
    )
    shift_attn: bool = field(
        default=False,
        metadata={"help": "LongLoRA shift short attention (S^2-Attn) while training: attention within quarter-length "
                          "groups, half the heads shifted by half a group."},
    )
    enable_liger_kernel: bool = field(
        default=False,
        metadata={"help": "Liger kernels while training (Triton, CUDA only; package liger-kernel): fused RMSNorm, "
                          "RoPE, SwiGLU and cross-entropy, through transformers' use_liger_kernel."},
    )
    use_unsloth: bool = field(
        default=False,
        metadata={"help": "Unsloth while training LoRA/QLoRA or full (CUDA only; pip install unsloth): its "
                          "FastLanguageModel loads the model and builds the adapter. chat/predict/api/eval load "
                          "the one adapter with it."},
    )
    use_unsloth_gc: bool = field(
        default=False,
        metadata={"help": "Gradient checkpointing that keeps each layer's saved input in CPU memory until backward "
                          "(CUDA only; no unsloth package needed). With use_unsloth, Unsloth's own does it."},
    )
    disable_gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Turn gradient checkpointing off (faster, more memory)."}
    )
    gradient_checkpointing_budget: float | None = field(
        default=None,
        metadata={"help": "Peak memory (GiB) gradient checkpointing may leave room for (pt/sft fast path): layers "
                          "are checkpointed only as far as this budget needs. Default: what the same run with every "
                          "layer checkpointed and full logits (LLaMA-Factory's default) would need; 0: every layer.",
                  "min": 0},
    )
    use_reentrant_gc: bool = field(default=True, metadata={"help": "Reentrant gradient checkpointing."})
    upcast_layernorm: bool = field(default=False, metadata={"help": "Keep layer norms in fp32."})
    upcast_lmhead_output: bool = field(default=False, metadata={"help": "fp32 output head (not supported yet: true is refused)."})
    train_from_scratch: bool = field(default=False, metadata={"help": "Random init from the config."})
    infer_backend: Literal["huggingface", "vllm"] = field(
        default="huggingface", metadata={"help": "Inference engine."}
    )
    infer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = field(
        default="auto", metadata={"help": "Weights dtype for inference."}
    )
    use_cache: bool = field(default=True, metadata={"help": "KV cache during generation."})
    offload_folder: str = field(default="offload", metadata={"help": "Where offloaded weights go (Tunery never offloads; only the default is accepted).", "domain": PATH})
    print_param_status: bool = field(default=False, metadata={"help": "Log each parameter's status."})
    vllm_maxlen: int = field(default=4096, metadata={"help": "vLLM max sequence length.", "min": 1})
    vllm_gpu_util: float = field(default=0.9, metadata={"help": "vLLM GPU memory share.", "gt": 0, "max": 1})
    vllm_enforce_eager: bool = field(default=False, metadata={"help": "vLLM without CUDA graphs."})
    vllm_max_lora_rank: int = field(default=32, metadata={"help": "vLLM max LoRA rank.", "min": 1})
    vllm_config: dict[str, Any] | str | None = field(default=None, metadata={"help": "Extra vLLM engine args.", "domain": "a JSON object of vLLM engine arguments"})
    quantization: QuantizationArguments = group_field(QuantizationArguments, "quantized base")
    multimodal: MultimodalArguments = group_field(MultimodalArguments, "vision-language models")

    @property
    def adapters(self) -> list[str]:
        """adapter_name_or_path split on commas, in the order they are applied."""
        if not self.adapter_name_or_path:
            return []
        return [p.strip() for p in str(self.adapter_name_or_path).split(",") if p.strip()]
