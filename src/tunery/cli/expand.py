"""``tunery expand``: LLaMA Pro block expansion of a model folder (LLaMA-Factory's scripts/llama_pro.py)."""

from __future__ import annotations

from tunery.cli import options
from tunery.errors import ConfigError

FLAGS = {"model_name_or_path": True, "output_dir": True, "num_expand": True, "shard_size": True,
         "save_safetensors": True, "cache_dir": True, "hf_hub_token": True}
USAGE = ("tunery expand --model_name_or_path MODEL --output_dir DIR --num_expand N "
         "[--shard_size 5GB] [--cache_dir DIR] [--hf_hub_token TOKEN]")


def main(tokens: list[str]) -> int:
    """Write the expanded model and say how to train its new blocks."""
    found, rest = options.pop_flags(tokens, FLAGS)
    options.refuse_positionals(rest, hint=f"usage: {USAGE}")
    missing = [name for name in ("model_name_or_path", "output_dir", "num_expand") if not found.get(name)]
    if missing:
        raise ConfigError(f"tunery expand needs --{', --'.join(missing)}", hint=f"usage: {USAGE}")
    try:
        num_expand = int(found["num_expand"])
    except ValueError:
        raise ConfigError(f"--num_expand must be a whole number, got {found['num_expand']!r}") from None
    if str(found.get("save_safetensors", "true")).lower() not in ("true", "1", "yes"):
        raise ConfigError("tunery expand writes safetensors only", hint="drop --save_safetensors")
    # the expansion imports torch and safetensors (seconds); --help must not pay for them
    from tunery.model.expand import expand_blocks

    result = expand_blocks(found["model_name_or_path"], found["output_dir"], num_expand,
                           shard_size=found.get("shard_size") or "5GB", cache_dir=found.get("cache_dir"),
                           token=found.get("hf_hub_token"))
    print(f"expanded {result.layers_before} layers to {result.layers_after}: new blocks "
          f"{', '.join(map(str, result.new_layer_ids))} (copies with o_proj/down_proj zeroed), in {result.output_dir}")
    print(f"train them with: finetuning_type: freeze, use_llama_pro: true, freeze_trainable_layers: {num_expand}, "
          f"model_name_or_path: {result.output_dir}")
    return 0
