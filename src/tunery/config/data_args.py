"""Dataset and preprocessing settings (LLaMA-Factory's names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FREE = "free text"
PATH = "a path, checked when it is opened"


@dataclass
class DataArguments:
    template: str | None = field(
        default=None,
        metadata={"help": "Chat template: 'auto' (the tokenizer's own) or a builtin name (e.g. llama3, qwen).",
                  "default_text": "'auto' (the tokenizer's chat template; 'default' when it has none)",
                  "domain": "a template name, checked against the builtin templates when the tokenizer loads"},
    )
    dataset: str | None = field(default=None, metadata={"help": "Training dataset name(s), comma separated.", "domain": "names in dataset_info.json, checked when loaded"})
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation dataset name(s).", "domain": "names in dataset_info.json, checked when loaded"})
    dataset_dir: str = field(default="data", metadata={"help": "Folder holding dataset_info.json.", "domain": PATH})
    media_dir: str | None = field(default=None, metadata={"help": "Folder media paths (images, videos, audios) are relative to (defaults to dataset_dir).", "domain": PATH})
    cutoff_len: int = field(default=2048, metadata={"help": "Max tokens per example after tokenization.", "min": 1})
    train_on_prompt: bool = field(default=False, metadata={"help": "Also train on prompt tokens."})
    mask_history: bool = field(default=False, metadata={"help": "Train only on the last assistant turn."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of loading it."})
    buffer_size: int = field(default=16384, metadata={"help": "Shuffle buffer when streaming.", "min": 1})
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = field(
        default="concat", metadata={"help": "How several datasets are mixed."}
    )
    interleave_probs: str | None = field(default=None, metadata={"help": "Sampling probabilities, comma separated.",
                  "domain": "numbers >= 0 summing to 1, one per dataset (rule interleave_probs_match_datasets)"})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize even if cached."})
    preprocessing_batch_size: int = field(default=1000, metadata={"help": "Examples per preprocessing batch.", "min": 1})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Preprocessing processes.", "min": 1})
    max_samples: int | None = field(default=None, metadata={"help": "Keep at most this many examples per dataset.", "min": 1})
    eval_num_beams: int | None = field(default=None, metadata={"help": "Beams for evaluation generation.", "min": 1})
    ignore_pad_token_for_loss: bool = field(default=True, metadata={"help": "Pad tokens never count in the loss."})
    val_size: float = field(default=0.0, metadata={"help": "Validation split: fraction (<1) or count (>=1).", "min": 0})
    eval_on_each_dataset: bool = field(default=False, metadata={"help": "Evaluate each eval dataset separately."})
    packing: bool | None = field(
        default=None, metadata={"help": "Pack examples into cutoff_len rows (default: on for pt, off otherwise)."}
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Flatten each batch into one row without padding (sft/pt without packing); position ids restart per example, no cross-example attention."},
    )
    neat_packing: bool = field(default=False, metadata={"help": "Packing without cross-example attention."})
    tool_format: str | None = field(default=None, metadata={"help": "Tool-call format override.", "domain": "a tool format name, checked by the template registry"})
    default_system: str | None = field(default=None, metadata={"help": "System prompt used when none is given.", "domain": FREE})
    enable_thinking: bool | None = field(default=True, metadata={"help": "Thinking mode for reasoning templates."})
    preserve_thinking: bool = field(
        default=False,
        metadata={"help": "Reasoning templates: earlier replies keep their reasoning (in prompts, and in training with mask_history)."},
    )
    tokenized_path: str | None = field(default=None, metadata={"help": "Save/load tokenized data here.", "domain": PATH})
    data_shared_file_system: bool = field(default=False, metadata={"help": "Data on a shared file system."})
    metrics: str | None = field(
        default=None,
        metadata={"help": "Prediction metrics, comma separated: bleu, rouge, exact_match, f1, accuracy (default: bleu,rouge).",
                  "domain": "builtin metric names, checked by inference.metrics before the model loads"},
    )
    compute_metrics: str | None = field(
        default=None, metadata={"help": "Custom per-sample metric: path/file.py:function or package.module:function.",
                          "domain": "a function reference, checked when it is imported"}
    )
    strict: bool = field(default=False, metadata={"help": "Fail on the first invalid example instead of skipping it."})
