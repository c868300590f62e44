"""Load a base model, fold its adapters into the weights and write a plain checkpoint.

Adapters are merged one at a time, in the order ``adapter_name_or_path`` lists them, with peft's
``merge_and_unload`` (each adapter was trained on top of the previous ones merged). Merging is
done here rather than through ``load_model``'s inference path so the export can refuse a
quantized base and name the adapter that failed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tunery.errors import ModelError
from tunery.logging import get_logger
from tunery.model.loader import load_model, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tunery.config import ExportArguments, RunConfig

logger = get_logger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def export_dtype(cfg: RunConfig, model: PreTrainedModel) -> torch.dtype:
    """The dtype written to disk: ``infer_dtype`` when given, else what the base checkpoint declares.

    Merging happens in the loaded dtype (fp32 on a CPU); saving in the base's own dtype keeps an
    fp16/bf16 model from doubling in size.
    """
    if cfg.model.infer_dtype in DTYPES:
        return DTYPES[cfg.model.infer_dtype]
    declared = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = DTYPES.get(declared)
    return declared if isinstance(declared, torch.dtype) else torch.float32


def merge_adapters(model: PreTrainedModel, adapters: list[str]) -> PreTrainedModel:
    """Apply and merge each adapter in order; the result is a plain transformers model."""
    from peft import PeftModel

    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file() and Path(adapter).exists():
            raise ModelError(
                f"adapter folder {adapter} has no adapter_config.json",
                hint="point adapter_name_or_path at the folder a LoRA run saved (output_dir or a checkpoint-N)",
            )
        try:
            peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"cannot load adapter {adapter}: {exc}",
                hint="check that the adapter was trained on this base model (same architecture and size)",
            ) from exc
        model = peft_model.merge_and_unload()
        logger.info("merged adapter %s", adapter)
    return model


def load_merged(cfg: RunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Tokenizer and base model with every adapter merged, on ``export_device``."""
    base_args = dataclasses.replace(cfg.model, adapter_name_or_path=None)
    tokenizer = load_tokenizer(base_args)
    model = load_model(tokenizer, base_args, cfg.finetuning, is_trainable=False)
    trained_tokenizer = adapter_tokenizer(cfg.model.adapters)
    if trained_tokenizer is not None and len(trained_tokenizer) != len(tokenizer):
        tokenizer = trained_tokenizer
        _match_vocab(model, cfg.model.adapters[-1], len(tokenizer))
    if cfg.export.export_device == "auto" and torch.cuda.is_available():
        model = model.to("cuda")
    model = merge_adapters(model, cfg.model.adapters)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def adapter_tokenizer(adapters: list[str]) -> PreTrainedTokenizerBase | None:
    """The tokenizer training saved beside the last adapter, if any (it has the tokens training added)."""
    if not adapters or not (Path(adapters[-1]) / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(adapters[-1])
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the tokenizer saved with adapter %s: %s", adapters[-1], exc)
        return None


def _match_vocab(model: PreTrainedModel, adapter: str, n_tokens: int) -> None:
    """Resize the base embeddings to the rows the adapter's saved embeddings have (training resized them)."""
    from safetensors import safe_open

    rows = None
    weights = Path(adapter) / "adapter_model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                if "embed_tokens" in key and key.endswith("weight") and "lora_" not in key:
                    rows = f.get_slice(key).get_shape()[0]
                    break
    target = rows or n_tokens
    if model.get_input_embeddings().weight.shape[0] != target:
        model.resize_token_embeddings(target)
        logger.info("resized the base embeddings to %d rows to match adapter %s", target, adapter)


def shard_size(export_args: ExportArguments) -> int:
    """``export_size`` (GB, a float is allowed) as bytes for ``max_shard_size``."""
    size = float(export_args.export_size)  # > 0: checked by parse_config
    return max(1, int(size * 1024**3))


def save_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, export_args: ExportArguments,
    dtype: torch.dtype,
) -> None:
    """Weights in shards of ``export_size`` GB (safetensors, or .bin with export_legacy_format),
    plus config, generation config and tokenizer with its chat template."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(dtype=dtype, device="cpu")
    model.config.use_cache = True
    max_shard = shard_size(export_args)
    if export_args.export_legacy_format:
        # transformers 5 writes safetensors only; huggingface_hub still shards torch .bin files.
        from huggingface_hub import save_torch_state_dict

        model.config.save_pretrained(out_dir)
        model.generation_config.save_pretrained(out_dir)
        save_torch_state_dict(
            model.state_dict(), out_dir, safe_serialization=False, max_shard_size=max_shard,
            filename_pattern="pytorch_model{suffix}.bin",
        )
    else:
        model.save_pretrained(out_dir, max_shard_size=max_shard)
    tokenizer.save_pretrained(out_dir)
    logger.info("wrote the merged model to %s", out_dir)


def write_model_card(out_dir: Path, cfg: RunConfig, extra: dict[str, Any] | None = None) -> Path:
    """README.md with the base, the adapters and how to load the export (the Hub shows it)."""
    base = cfg.model.model_name_or_path
    adapters = cfg.model.adapters
    front = ["---", "library_name: transformers", "tags: [tunery" + (", merged-lora]" if adapters else "]")]
    if base and str(base).count("/") == 1 and not Path(str(base)).exists():
        front.append(f"base_model: {base}")  # a hub id: the Hub links the card to its base
    front.append("---")
    merged = f" with adapter(s) merged in this order: {', '.join(f'`{a}`' for a in adapters)}" if adapters else ""
    body = [
        f"# {Path(out_dir).name}",
        "",
        f"Exported by Tunery from base model `{base}`{merged}.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{out_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{out_dir}")',
        "```",
    ]
    if extra:
        body += ["", "## Export settings", "", "```json", json.dumps(extra, indent=2, default=str), "```"]
    path = Path(out_dir) / "README.md"
    path.write_text("\n".join(front + [""] + body) + "\n", encoding="utf-8")
    return path


def push_to_hub(out_dir: Path, repo_id: str, token: str | None) -> str:
    """Upload the export folder to ``export_hub_model_id`` (creates the repo when missing)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, commit_message="Upload model exported by Tunery")
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(
            f"could not push {out_dir} to the hub repo {repo_id}: {exc}",
            hint="check hf_hub_token (write access), the repo id (owner/name) and the network; the export "
            f"itself is complete in {out_dir}",
        ) from exc
    logger.info("pushed %s to %s", out_dir, repo_id)
    return str(getattr(info, "commit_url", repo_id))
