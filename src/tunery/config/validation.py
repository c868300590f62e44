"""The config checks itself, once, at parse time: every setting's domain and every rule between settings.

:func:`validate` runs from :func:`tunery.config.parse_config` after the types are read and before any
tokenizer, dataset or model loads, so a contradictory config fails in a second with exit 2 (ConfigError).

- Domains: each dataclass field states its domain in metadata, checked here centrally:
  ``choices`` (allowed values), ``min``/``max`` (inclusive), ``gt``/``lt`` (exclusive), ``nonzero``,
  or ``domain`` (a sentence saying why no range applies, e.g. a path checked when opened).
  bool and Literal types are their own domain. transformers' TrainingArguments fields are checked by
  transformers itself, plus :data:`TRAINING_DOMAINS` for the ones where a bad value fails late.
- Rules: each function registered with :func:`rule` relates two or more settings (or a setting and
  the command). Checks that need a loaded file or model (adapter folders, module names, checkpoints)
  stay where the file or model is opened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tunery.config.finetuning_args import split_list
from tunery.config.groups import settings_of
from tunery.config.model_args import QUANTIZATION_BITS
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config import RunConfig

DOMAIN_KEYS = ("choices", "min", "max", "gt", "lt", "nonzero", "domain")

# Domains of transformers' own training settings whose bad values would otherwise surface mid-run.
TRAINING_DOMAINS: dict[str, dict[str, Any]] = {
    "learning_rate": {"min": 0},
    "num_train_epochs": {"min": 0},
    "max_steps": {"min": -1, "nonzero": True},
    "per_device_train_batch_size": {"min": 1},
    "per_device_eval_batch_size": {"min": 1},
    "gradient_accumulation_steps": {"min": 1},
    "weight_decay": {"min": 0},
    "max_grad_norm": {"min": 0},
    "warmup_steps": {"min": 0},
    "warmup_ratio": {"min": 0, "max": 1},
    "logging_steps": {"gt": 0},
    "save_steps": {"gt": 0},
    "adam_beta1": {"min": 0, "lt": 1},
    "adam_beta2": {"min": 0, "lt": 1},
    "adam_epsilon": {"min": 0},
    "seed": {"min": 0},
    "dataloader_num_workers": {"min": 0},
    "neftune_noise_alpha": {"min": 0},
}


# ---------------------------------------------------------------------------------------- domains


def check_value(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """Raise ConfigError when ``value`` of setting ``key`` is outside the domain in ``meta``."""
    if value is None or isinstance(value, bool):
        return
    choices = meta.get("choices")
    if choices is not None:
        text = str(value).lower()
        if text not in [str(c).lower() for c in choices]:
            raise ConfigError(f"'{key}' got {value!r}, which is not allowed",
                              hint=f"choose one of: {', '.join(str(c) for c in choices)}")
    if not isinstance(value, (int, float)):
        return
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"'{key}' must be {meta['min']} or more, got {value}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"'{key}' must be {meta['max']} or less, got {value}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"'{key}' must be more than {meta['gt']}, got {value}")
    if "lt" in meta and value >= meta["lt"]:
        raise ConfigError(f"'{key}' must be less than {meta['lt']}, got {value}")
    if meta.get("nonzero") and value == 0:
        raise ConfigError(f"'{key}' cannot be 0")


def has_domain(meta: typing.Mapping[str, Any], tp: Any) -> bool:
    """True when a field states its domain: bool/Literal type, or a DOMAIN_KEYS entry in metadata."""
    args = [tp]
    if typing.get_origin(tp) is not Literal:
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if all(a is bool or typing.get_origin(a) is Literal for a in args):
        return True
    return any(key in meta for key in DOMAIN_KEYS)


def check_domains(cfg: RunConfig, groups: list[str]) -> None:
    """Every setting of the command's groups against its stated domain."""
    for name in groups:
        obj = getattr(cfg, name)
        if obj is None:
            continue
        for _, f, tp in settings_of(type(obj)):
            meta = f.metadata if any(k in f.metadata for k in DOMAIN_KEYS) else TRAINING_DOMAINS.get(f.name, {})
            value = getattr(obj, f.name)
            if value is None and name != "training" and not _admits_none(tp) and f.default is not None:
                # `dataset_dir: null` (a YAML key left empty) read as None crashed later, when used as a path
                default = "" if f.default is dataclasses.MISSING else f" ({f.default!r})"
                raise ConfigError(f"'{f.name}' cannot be empty (null)",
                                  hint=f"give a value, or remove the key to use the default{default}")
            check_value(f.name, value, meta)


def _admits_none(tp: Any) -> bool:
    return tp is Any or type(None) in typing.get_args(tp)


# ------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[Any, str], None]


RULES: list[Rule] = []


def rule(name: str) -> Callable[[Callable[[Any, str], None]], Callable[[Any, str], None]]:
    """Register ``check(cfg, command)`` as the rule ``name``; it raises ConfigError naming the settings."""

    def register(fn: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
        RULES.append(Rule(name, fn))
        return fn

    return register


def _trains(cfg: Any, command: str) -> bool:
    return command == "train" and cfg.training is not None and bool(cfg.training.do_train)


def _new_adapter(cfg: Any) -> bool:
    return bool(cfg.finetuning.create_new_adapter or not cfg.model.adapters)


@rule("nothing_to_do")
def _nothing_to_do(cfg: Any, command: str) -> None:
    t = cfg.training
    if command == "train" and not (t.do_train or t.do_eval or t.do_predict):
        raise ConfigError(
            "nothing to do: do_train is false and neither do_eval nor do_predict is set",
            hint="set do_train: true to train, or do_eval / do_predict to evaluate or predict",
        )


@rule("streaming_needs_max_steps")
def _streaming_needs_max_steps(cfg: Any, command: str) -> None:
    if _trains(cfg, command) and cfg.data.streaming and cfg.training.max_steps <= 0:
        raise ConfigError(
            "streaming: true needs max_steps (a streamed dataset has no length, so num_train_epochs cannot "
            "be turned into steps)",
            hint="set max_steps: N, or drop streaming",
        )


@rule("val_size_or_eval_dataset")
def _val_size_or_eval_dataset(cfg: Any, command: str) -> None:
    if command in ("train", "predict") and cfg.data.val_size > 0 and cfg.data.eval_dataset:
        raise ConfigError(
            f"val_size: {cfg.data.val_size} and eval_dataset: {cfg.data.eval_dataset} both choose the evaluation data",
            hint="keep one: eval_dataset, or val_size to split it off the training data",
        )


@rule("streaming_val_size_is_a_count")
def _streaming_val_size_is_a_count(cfg: Any, command: str) -> None:
    if cfg.data.streaming and 0 < cfg.data.val_size < 1:
        raise ConfigError(
            f"with streaming: true, val_size must be a count of examples (>= 1), got {cfg.data.val_size}",
            hint="a streamed dataset has no length to take a fraction of; give e.g. val_size: 100",
        )


@rule("media_pixel_bounds_ordered")
def _media_pixel_bounds_ordered(cfg: Any, command: str) -> None:
    mm = cfg.model.multimodal
    for kind in ("image", "video"):
        low, high = getattr(mm, f"{kind}_min_pixels"), getattr(mm, f"{kind}_max_pixels")
        if low > high:
            raise ConfigError(
                f"{kind}_min_pixels: {low} is larger than {kind}_max_pixels: {high}",
                hint=f"{kind}s are scaled into [{kind}_min_pixels, {kind}_max_pixels] (pixels = width x height)",
            )


@rule("interleave_probs_match_datasets")
def _interleave_probs(cfg: Any, command: str) -> None:
    text = cfg.data.interleave_probs
    if not text:
        return
    if cfg.data.mix_strategy == "concat":
        raise ConfigError("interleave_probs needs mix_strategy interleave_under or interleave_over, not concat",
                          hint="set mix_strategy: interleave_under, or drop interleave_probs")
    try:
        probs = [float(p) for p in split_list(text)]
    except ValueError:
        raise ConfigError(f"interleave_probs '{text}' is not a comma-separated list of numbers") from None
    n = len(split_list(cfg.data.dataset))
    if n and len(probs) != n:
        raise ConfigError(f"interleave_probs has {len(probs)} values for {n} datasets (dataset: {cfg.data.dataset})",
                          hint="give one probability per dataset")
    if abs(sum(probs) - 1.0) > 1e-6 or any(p < 0 for p in probs):
        raise ConfigError(f"interleave_probs {probs} must be non-negative and sum to 1")


@rule("quantization_bit_fits_method")
def _quantization_bit_fits_method(cfg: Any, command: str) -> None:
    q = cfg.model.quantization
    if q.quantization_bit is None:
        return
    allowed = QUANTIZATION_BITS.get(q.quantization_method)
    if allowed is None:
        raise ConfigError(
            f"quantization_method: {q.quantization_method} reads checkpoints quantized offline; "
            f"quantization_bit: {q.quantization_bit} does not apply",
            hint="drop quantization_bit and load the GPTQ/AWQ model (its config says how it is quantized), "
            f"or quantize while loading with quantization_method: {', '.join(QUANTIZATION_BITS)}",
        )
    if q.quantization_bit not in allowed:
        raise ConfigError(
            f"quantization_method: {q.quantization_method} loads {'/'.join(map(str, allowed))}-bit weights, "
            f"not quantization_bit: {q.quantization_bit}",
            hint=f"use quantization_bit: {allowed[-1] if 4 not in allowed else 4}",
        )


@rule("quantized_base_needs_lora")
def _quantized_base_needs_lora(cfg: Any, command: str) -> None:
    bits, kind = cfg.model.quantization_bit, cfg.finetuning.finetuning_type
    if _trains(cfg, command) and bits is not None and kind not in ("lora", "oft"):
        raise ConfigError(
            f"a {bits}-bit quantized base (quantization_bit: {bits}) can only be trained with an adapter "
            f"(LoRA or OFT), not finetuning_type: {kind}",
            hint="set finetuning_type: lora (or oft), or drop quantization_bit",
        )


@rule("oft_rank_or_block_size")
def _oft_rank_or_block_size(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if not (_trains(cfg, command) and ft.finetuning_type == "oft"):
        return
    rank, block = ft.oft.oft_rank, ft.oft.oft_block_size
    if (rank == 0) == (block == 0):
        raise ConfigError(
            f"OFT takes either oft_rank or oft_block_size (blocks x block size = the layer's width), "
            f"got oft_rank: {rank} and oft_block_size: {block}",
            hint="set oft_block_size (default 32) and leave oft_rank: 0, or set oft_rank and oft_block_size: 0",
        )


@rule("oft_not_for_reward_models")
def _oft_not_for_reward_models(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if _trains(cfg, command) and ft.finetuning_type == "oft" and ft.stage in ("rm", "ppo"):
        raise ConfigError(f"finetuning_type: oft trains causal-LM adapters; stage: {ft.stage} needs a value or "
                          "score head Tunery sets up for LoRA, freeze and full only",
                          hint="use finetuning_type: lora for rm and ppo")


@rule("llama_pro_needs_freeze_or_adapter")
def _llama_pro_needs_freeze_or_adapter(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if _trains(cfg, command) and ft.use_llama_pro and ft.finetuning_type == "full":
        raise ConfigError(
            "use_llama_pro trains only the expanded blocks; finetuning_type: full trains every weight",
            hint="set finetuning_type: freeze (freeze_trainable_layers: the num_expand of `tunery expand`), "
            "or lora/oft",
        )
    if _trains(cfg, command) and ft.use_llama_pro and ft.freeze.freeze_trainable_layers < 0:
        raise ConfigError(
            f"use_llama_pro reads freeze_trainable_layers as the number of expanded blocks, "
            f"got freeze_trainable_layers: {ft.freeze.freeze_trainable_layers}",
            hint="set freeze_trainable_layers to the --num_expand given to `tunery expand`",
        )


@rule("shift_attn_not_ppo")
def _shift_attn_not_ppo(cfg: Any, command: str) -> None:
    if _trains(cfg, command) and cfg.model.shift_attn and cfg.finetuning.stage == "ppo":
        raise ConfigError("shift_attn (LongLoRA S^2-Attn) cannot be used with stage: ppo, which generates "
                          "while it trains", hint="drop shift_attn for ppo")


@rule("quantized_base_merges_no_adapters")
def _quantized_base_merges_no_adapters(cfg: Any, command: str) -> None:
    adapters = cfg.model.adapters
    to_merge = adapters if cfg.finetuning.create_new_adapter else adapters[:-1]
    if _trains(cfg, command) and cfg.model.quantization_bit is not None and to_merge:
        raise ConfigError(
            "adapters cannot be merged into a quantized base before training "
            "(quantization_bit with several adapter_name_or_path, or with create_new_adapter)",
            hint="pass a single adapter_name_or_path to continue it, without create_new_adapter",
        )


@rule("pissa_needs_full_precision")
def _pissa_needs_full_precision(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if (_trains(cfg, command) and ft.finetuning_type == "lora" and ft.lora.pissa_init and _new_adapter(cfg)
            and cfg.model.quantization_bit is not None):
        raise ConfigError("pissa_init needs a full-precision base, but quantization_bit is set",
                          hint="drop quantization_bit or pissa_init")


@rule("loraplus_needs_lora")
def _loraplus_needs_lora(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if _trains(cfg, command) and ft.lora.loraplus_lr_ratio is not None and ft.finetuning_type != "lora":
        raise ConfigError(f"loraplus_lr_ratio applies to LoRA adapters, not finetuning_type: {ft.finetuning_type}",
                          hint="drop loraplus_lr_ratio, or set finetuning_type: lora")


@rule("optimizer_needs_full_weights")
def _optimizer_needs_full_weights(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    on = [k for k, v in (("use_galore", ft.galore.use_galore), ("use_apollo", ft.apollo.use_apollo),
                         ("use_adam_mini", ft.use_adam_mini), ("use_badam", ft.badam.use_badam)) if v]
    if _trains(cfg, command) and on and ft.finetuning_type == "lora":
        raise ConfigError(f"{on[0]} shapes its updates by the blocks of full weight matrices (heads, rows, layers); "
                          "finetuning_type: lora trains small adapter matrices instead",
                          hint=f"set finetuning_type: full (or freeze), or drop {on[0]}")


@rule("one_optimizer_choice")
def _one_optimizer_choice(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    chosen = [k for k, v in (("use_galore", ft.galore.use_galore), ("use_apollo", ft.apollo.use_apollo),
                             ("use_adam_mini", ft.use_adam_mini), ("use_badam", ft.badam.use_badam),
                             ("use_muon", ft.use_muon),
                             ("loraplus_lr_ratio", ft.lora.loraplus_lr_ratio is not None)) if v]
    if _trains(cfg, command) and len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} each choose the optimizer; only one can",
                          hint=f"keep one of {', '.join(chosen)}")


@rule("layerwise_optimizer_needs_no_accumulation")
def _layerwise_needs_no_accumulation(cfg: Any, command: str) -> None:
    ft, steps = cfg.finetuning, cfg.training.gradient_accumulation_steps if cfg.training is not None else 1
    for use, layerwise, name in ((ft.galore.use_galore, ft.galore.galore_layerwise, "galore_layerwise"),
                                 (ft.apollo.use_apollo, ft.apollo.apollo_layerwise, "apollo_layerwise")):
        if _trains(cfg, command) and use and layerwise and steps != 1:
            raise ConfigError(f"{name}: true steps each weight during backward, so it cannot accumulate "
                              f"gradients (gradient_accumulation_steps: {steps})",
                              hint=f"set gradient_accumulation_steps: 1 (raise the batch size instead), or drop {name}")


@rule("early_stopping_needs_evaluation")
def _early_stopping_needs_evaluation(cfg: Any, command: str) -> None:
    ft, t = cfg.finetuning, cfg.training
    if not _trains(cfg, command) or ft.early_stopping_steps is None:
        return
    if str(getattr(t.eval_strategy, "value", t.eval_strategy)) == "no":
        raise ConfigError(f"early_stopping_steps: {ft.early_stopping_steps} counts evaluations, but eval_strategy is no",
                          hint="set eval_strategy: steps and eval_steps: N")
    if not (cfg.data.val_size > 0 or cfg.data.eval_dataset):
        raise ConfigError(f"early_stopping_steps: {ft.early_stopping_steps} needs evaluation data",
                          hint="set val_size: 0.1 (held out of dataset) or eval_dataset")


def _token_losses(ft: Any) -> list[str]:
    return [k for k in ("use_dft_loss", "use_asft_loss", "use_eaft_loss") if getattr(ft, k)]


@rule("token_loss_is_sft")
def _token_loss_is_sft(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    on = _token_losses(ft)
    if _trains(cfg, command) and on and ft.stage != "sft":
        raise ConfigError(f"{on[0]} reweights the token loss of stage sft, not stage {ft.stage}",
                          hint=f"drop {on[0]}, or set stage: sft")


@rule("one_token_loss")
def _one_token_loss(cfg: Any, command: str) -> None:
    on = _token_losses(cfg.finetuning)
    if _trains(cfg, command) and len(on) > 1:
        raise ConfigError(f"{' and '.join(on)} each replace the token loss; only one can",
                          hint=f"keep one of {', '.join(on)}")


@rule("badam_is_single_process")
def _badam_is_single_process(cfg: Any, command: str) -> None:
    t = cfg.training
    if _trains(cfg, command) and cfg.finetuning.badam.use_badam and (t.deepspeed or t.fsdp):
        raise ConfigError(f"use_badam switches trainable blocks inside one process; with "
                          f"{'deepspeed' if t.deepspeed else 'fsdp'} the sharded optimizer would not follow the switch",
                          hint="drop deepspeed/fsdp for BAdam (it already needs little memory), or drop use_badam")


@rule("compute_accuracy_is_sft_evaluation")
def _compute_accuracy_is_sft(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if command != "train" or not ft.compute_accuracy:
        return
    if ft.stage != "sft":
        raise ConfigError(f"compute_accuracy measures next-token accuracy of stage sft, not stage {ft.stage}",
                          hint="drop compute_accuracy (preference stages log rewards/accuracies themselves)")
    if cfg.training.predict_with_generate:
        raise ConfigError("compute_accuracy scores the model's next-token choices, which predict_with_generate "
                          "replaces with generated text", hint="drop one of compute_accuracy, predict_with_generate")


@rule("label_smoothing_needs_sigmoid")
def _label_smoothing_needs_sigmoid(cfg: Any, command: str) -> None:
    p = cfg.finetuning.preference
    if cfg.finetuning.stage in ("dpo", "orpo", "simpo") and p.dpo_label_smoothing > 0 and p.pref_loss != "sigmoid":
        raise ConfigError(
            f"dpo_label_smoothing works with pref_loss sigmoid, not {p.pref_loss}",
            hint="drop dpo_label_smoothing, or set pref_loss: sigmoid",
        )


@rule("ld_alpha_is_dpo")
def _ld_alpha_is_dpo(cfg: Any, command: str) -> None:
    ft = cfg.finetuning
    if command == "train" and ft.preference.ld_alpha is not None and (
            ft.stage != "dpo" or ft.pref_loss not in ("sigmoid", "hinge", "ipo")):
        raise ConfigError(f"ld_alpha (LD-DPO) weights the log-probabilities of trl's DPO losses, not stage {ft.stage} "
                          f"with pref_loss {ft.pref_loss}",
                          hint="drop ld_alpha, or use stage: dpo with pref_loss sigmoid, hinge or ipo")


@rule("kto_pair_removed")
def _kto_pair_removed(cfg: Any, command: str) -> None:
    if cfg.finetuning.stage == "dpo" and cfg.finetuning.pref_loss == "kto_pair":
        raise ConfigError("pref_loss kto_pair was removed from trl", hint="use stage: kto with a kto_tag dataset")


@rule("kto_needs_batch_of_two")
def _kto_needs_batch_of_two(cfg: Any, command: str) -> None:
    # trl's KTOTrainer pairs each prompt with another reply of the same batch for the KL term and
    # refuses a batch of 1 when it builds the trainer; say so before anything loads.
    if _trains(cfg, command) and cfg.finetuning.stage == "kto" and cfg.training.per_device_train_batch_size < 2:
        raise ConfigError(
            f"stage kto needs per_device_train_batch_size of at least 2, not "
            f"{cfg.training.per_device_train_batch_size}: trl's KTO pairs each prompt with another reply of the "
            "same batch for its KL term (LLaMA-Factory pairs them across the dataset)",
            hint="set per_device_train_batch_size: 2 (halve gradient_accumulation_steps to keep the same update)")


@rule("grpo_needs_rewards")
def _grpo_needs_rewards(cfg: Any, command: str) -> None:
    rl = cfg.finetuning.rl
    if _trains(cfg, command) and cfg.finetuning.stage == "grpo" and not rl.reward_funcs and not rl.reward_model:
        raise ConfigError("stage grpo needs rewards: neither reward_funcs nor reward_model is set",
                          hint="set reward_funcs: path/file.py:function and/or reward_model")


@rule("ppo_needs_reward_model")
def _ppo_needs_reward_model(cfg: Any, command: str) -> None:
    if _trains(cfg, command) and cfg.finetuning.stage == "ppo" and not cfg.finetuning.rl.reward_model:
        raise ConfigError("stage ppo needs a reward_model",
                          hint="train one with stage: rm, or give an http(s) scoring API with reward_model_type: api")


@rule("lora_reward_model_needs_lora_policy")
def _lora_reward_needs_lora_policy(cfg: Any, command: str) -> None:
    ft, rl = cfg.finetuning, cfg.finetuning.rl
    api = rl.reward_model_type == "api" or str(rl.reward_model or "").startswith(("http://", "https://"))
    if (_trains(cfg, command) and ft.stage == "ppo" and rl.reward_model and not api
            and rl.reward_model_type == "lora" and ft.finetuning_type != "lora"):
        raise ConfigError(
            f"reward_model_type: lora needs a LoRA policy (finetuning_type: lora), not finetuning_type: {ft.finetuning_type}",
            hint="use reward_model_type: full to load the reward model on its own",
        )


@rule("prediction_needs_data_and_output_dir")
def _prediction_needs_data(cfg: Any, command: str) -> None:
    if not (command == "predict" or (command == "train" and cfg.training.do_predict)):
        return
    if not (cfg.data.eval_dataset or cfg.data.dataset):
        raise ConfigError("prediction needs a dataset (eval_dataset or dataset)",
                          hint="set eval_dataset (or dataset) to a name in dataset_info.json")
    if not getattr(cfg.training, "output_dir", None):
        raise ConfigError("prediction needs output_dir", hint="set output_dir: where the predictions are written")


@rule("vllm_applies_one_adapter")
def _vllm_one_adapter(cfg: Any, command: str) -> None:
    if command in ("chat", "api", "predict") and cfg.model.infer_backend == "vllm" and len(cfg.model.adapters) > 1:
        raise ConfigError("infer_backend: vllm applies one adapter, but adapter_name_or_path names "
                          f"{len(cfg.model.adapters)}", hint="merge the adapters first with tunery export")


@rule("vllm_no_beam_search")
def _vllm_no_beam_search(cfg: Any, command: str) -> None:
    if command in ("chat", "api", "predict") and cfg.model.infer_backend == "vllm" and cfg.generation.num_beams > 1:
        raise ConfigError(f"infer_backend: vllm does not do beam search here (num_beams: {cfg.generation.num_beams})",
                          hint="set num_beams: 1")


@rule("eval_needs_a_task")
def _eval_needs_a_task(cfg: Any, command: str) -> None:
    if command == "eval" and not cfg.evaluation.task and not cfg.evaluation.harness_tasks:
        raise ConfigError(
            "nothing to evaluate: neither task nor harness_tasks is set",
            hint="set task (e.g. mmlu_test, ceval_validation, sample_en_test) or harness_tasks",
        )


@rule("export_needs_export_dir")
def _export_needs_dir(cfg: Any, command: str) -> None:
    if command == "export" and not cfg.export.export_dir:
        raise ConfigError("export_dir is not set", hint="add export_dir: path/to/output to the config")


@rule("gguf_has_its_own_quantization")
def _gguf_quantization(cfg: Any, command: str) -> None:
    e = cfg.export
    if command == "export" and e.export_format == "gguf" and e.export_quantization_bit is not None:
        raise ConfigError(
            "export_quantization_bit quantizes a transformers checkpoint, not a GGUF file (export_format: gguf)",
            hint="for a smaller GGUF use export_gguf_type: q8_0 and drop export_quantization_bit",
        )


@rule("gptq_needs_calibration_data")
def _gptq_needs_data(cfg: Any, command: str) -> None:
    e = cfg.export
    if (command == "export" and e.export_quantization_bit is not None and e.export_quantization_method == "gptq"
            and not e.export_quantization_dataset):
        raise ConfigError("export_quantization_method: gptq needs calibration data",
                          hint="set export_quantization_dataset (a text/jsonl file or c4)")


@rule("export_refuses_quantized_base")
def _export_refuses_quantized_base(cfg: Any, command: str) -> None:
    """Merging LoRA deltas into 4/8-bit weights rounds them away; refuse and say what works."""
    bits = cfg.model.quantization_bit
    if command != "export" or bits is None:
        return
    if not cfg.model.adapters:
        raise ConfigError(
            f"quantization_bit: {bits} quantizes a model while it loads for training or chat; an export "
            "would save those on-the-fly quantized weights",
            hint=f"remove quantization_bit and set export_quantization_bit: {bits} to write a quantized export",
        )
    raise ConfigError(
        f"cannot merge adapters into a {bits}-bit quantized base (quantization_bit: {bits}): the merged "
        "weights would be re-rounded to the quantization grid and lose most of what the adapter learned",
        hint="remove quantization_bit so the base loads unquantized (the adapter trained with QLoRA merges "
        f"fine into it), and set export_quantization_bit: {bits} to quantize the merged model on export",
    )


# ------------------------------------------------------------------------------- CUDA-only methods


def _has_cuda() -> bool:
    import torch  # heavy: config stays importable without torch (tunery --help); only these rules need it

    return bool(torch.cuda.is_available())


@rule("liger_kernel_needs_cuda")
def _liger_kernel_needs_cuda(cfg: Any, command: str) -> None:
    """Liger's kernels are Triton programs for NVIDIA GPUs; transformers applies them when training starts."""
    key = "enable_liger_kernel" if cfg.model.enable_liger_kernel else "use_liger_kernel"
    on = cfg.model.enable_liger_kernel or bool(getattr(cfg.training, "use_liger_kernel", False))
    if _trains(cfg, command) and on and not _has_cuda():
        raise ConfigError(f"{key} needs CUDA (Liger kernels are Triton GPU kernels, and torch sees no CUDA GPU here)",
                          hint=f"drop {key} on this machine: without it the same model trains with torch's kernels")


@rule("fp8_needs_cuda")
def _fp8_needs_cuda(cfg: Any, command: str) -> None:
    """FP8 matrix multiplies (torchao, Transformer Engine, MS-AMP) run on NVIDIA GPUs of the Hopper class or newer."""
    if _trains(cfg, command) and cfg.training.fp8 and not _has_cuda():
        raise ConfigError("fp8 needs CUDA (FP8 matrix multiplies run on NVIDIA GPUs of the Hopper class or newer, "
                          "and torch sees no CUDA GPU here)", hint="drop fp8 on this machine (bf16/fp32 training)")


@rule("pure_bf16_needs_cuda")
def _pure_bf16_needs_cuda(cfg: Any, command: str) -> None:
    """Pure bf16 trains bf16 weights without fp32 copies: fast only where the GPU computes in bf16."""
    if _trains(cfg, command) and cfg.finetuning.pure_bf16 and not _has_cuda():
        raise ConfigError("pure_bf16 needs CUDA (bf16 weights train fast only on a GPU that computes in bf16, and "
                          "torch sees no CUDA GPU here)", hint="drop pure_bf16 on this machine (training runs in fp32)")


@rule("fp8_options_need_fp8")
def _fp8_options_need_fp8(cfg: Any, command: str) -> None:
    t = cfg.training
    if not _trains(cfg, command):
        return
    if not t.fp8 and (t.fp8_backend != "auto" or t.fp8_enable_fsdp_float8_all_gather):
        key = "fp8_backend" if t.fp8_backend != "auto" else "fp8_enable_fsdp_float8_all_gather"
        raise ConfigError(f"{key}: {getattr(t, key)} configures FP8 training, but fp8 is false",
                          hint=f"set fp8: true, or drop {key}")
    if t.fp8_enable_fsdp_float8_all_gather and t.fp8_backend in ("te", "msamp"):
        raise ConfigError(f"fp8_enable_fsdp_float8_all_gather is an option of the torchao backend, not "
                          f"fp8_backend: {t.fp8_backend}", hint="set fp8_backend: torchao, or drop the all-gather option")


# Commands that load a model for inference: with use_unsloth and one adapter, Unsloth loads it (as in LLaMA-Factory).
UNSLOTH_INFERENCE = ("chat", "api", "predict", "eval", "train")


def unsloth_loads(cfg: Any, command: str) -> bool:
    """Unsloth loads a model: training (LoRA, QLoRA, full), or an inference command given an adapter."""
    if not cfg.model.use_unsloth:
        return False
    return _trains(cfg, command) or (command in UNSLOTH_INFERENCE and bool(cfg.model.adapters))


@rule("unsloth_gc_needs_checkpointing")
def _unsloth_gc_needs_checkpointing(cfg: Any, command: str) -> None:
    if _trains(cfg, command) and cfg.model.use_unsloth_gc and cfg.model.disable_gradient_checkpointing:
        raise ConfigError("use_unsloth_gc chooses how gradient checkpointing keeps activations, but "
                          "disable_gradient_checkpointing is true", hint="drop one of the two")


@rule("unsloth_trains_lora_or_full")
def _unsloth_trains_lora_or_full(cfg: Any, command: str) -> None:
    """Unsloth builds LoRA (get_peft_model) or trains every weight (full_finetuning); it has no freeze or OFT mode."""
    kind = cfg.finetuning.finetuning_type
    if _trains(cfg, command) and cfg.model.use_unsloth and kind not in ("lora", "full"):
        why = ("Unsloth has no OFT builder (LLaMA-Factory refuses it too)" if kind == "oft"
               else "Unsloth loads a model for LoRA or for full fine-tuning, not for training chosen layers")
        raise ConfigError(f"use_unsloth cannot train finetuning_type: {kind}: {why}",
                          hint="set finetuning_type: lora (or full), or drop use_unsloth")


@rule("unsloth_loads_one_adapter")
def _unsloth_loads_one_adapter(cfg: Any, command: str) -> None:
    """Unsloth loads an adapter folder with its base (adapter_config.json names it): one adapter, continued."""
    adapters = cfg.model.adapters
    if not cfg.model.use_unsloth or not adapters:
        return
    if len(adapters) > 1:
        raise ConfigError(f"use_unsloth loads one adapter (Unsloth reads the base from its folder), not "
                          f"{len(adapters)} in adapter_name_or_path", hint="merge them first with tunery export")
    if _trains(cfg, command) and cfg.finetuning.create_new_adapter:
        raise ConfigError("use_unsloth continues the adapter it loads; create_new_adapter would need it merged first",
                          hint="merge the adapter with tunery export and train a new one on the merged model")


@rule("unsloth_not_for_export")
def _unsloth_not_for_export(cfg: Any, command: str) -> None:
    if command == "export" and cfg.model.use_unsloth:
        raise ConfigError("use_unsloth does not apply to export: the adapters are merged with peft into a plain "
                          "transformers model", hint="drop use_unsloth for tunery export")


@rule("unsloth_not_with_vllm")
def _unsloth_not_with_vllm(cfg: Any, command: str) -> None:
    if cfg.model.use_unsloth and cfg.model.infer_backend == "vllm" and command in ("chat", "api", "predict", "eval"):
        raise ConfigError("use_unsloth loads the model for the huggingface engine, and infer_backend: vllm loads "
                          "it itself", hint="drop use_unsloth, or use infer_backend: huggingface")


@rule("unsloth_excludes")
def _unsloth_excludes(cfg: Any, command: str) -> None:
    """Settings Unsloth's loading or its patched model classes cannot honour, each with its reason."""
    if not (_trains(cfg, command) and cfg.model.use_unsloth):
        return
    m, ft, t = cfg.model, cfg.finetuning, cfg.training
    conflicts = [
        (ft.stage == "rm", "stage: rm", "FastLanguageModel loads causal LMs and a reward model is a sequence classifier"),
        (ft.stage == "ppo" and ft.rl.reward_model_type == "lora", "reward_model_type: lora",
         "the LoRA reward head cannot be added to Unsloth's model (LLaMA-Factory refuses it too)"),
        (m.shift_attn, "shift_attn", "Unsloth replaces the attention that shift_attn registers"),
        (m.enable_liger_kernel or bool(getattr(t, "use_liger_kernel", False)), "enable_liger_kernel",
         "both replace the model's kernels"),
        (m.train_from_scratch, "train_from_scratch", "Unsloth loads pretrained weights"),
        (m.quantization_bit is not None and m.quantization_method != "bnb",
         f"quantization_method: {m.quantization_method}", "Unsloth quantizes with bitsandbytes (bnb) only"),
        (zero_stage(cfg) == 3, "DeepSpeed ZeRO-3", "Unsloth's model is not partitioned by ZeRO-3 "
                                                   "(LLaMA-Factory refuses it too)"),
    ]
    for on, setting, why in conflicts:
        if on:
            raise ConfigError(f"use_unsloth cannot be combined with {setting}: {why}",
                              hint=f"drop use_unsloth or {setting.split(':')[0]}")


@rule("unsloth_needs_cuda")
def _unsloth_needs_cuda(cfg: Any, command: str) -> None:
    """Unsloth's kernels are Triton programs for NVIDIA GPUs, and the package refuses to import without one."""
    if unsloth_loads(cfg, command) and not _has_cuda():
        raise ConfigError("use_unsloth needs CUDA (Unsloth's kernels are Triton GPU kernels, and torch sees no CUDA "
                          "GPU here)", hint="drop use_unsloth on this machine: without it the same model trains with "
                                            "transformers and peft")


@rule("unsloth_gc_needs_cuda")
def _unsloth_gc_needs_cuda(cfg: Any, command: str) -> None:
    """use_unsloth_gc moves checkpointed activations from GPU memory to pinned CPU memory."""
    if _trains(cfg, command) and cfg.model.use_unsloth_gc and not _has_cuda():
        raise ConfigError("use_unsloth_gc needs CUDA (it moves checkpointed activations out of GPU memory into CPU "
                          "memory, and torch sees no CUDA GPU here)",
                          hint="drop use_unsloth_gc on this machine (activations already live in CPU memory)")


def _has_cuda_or_xpu() -> bool:
    import torch  # heavy: see _has_cuda

    return bool(torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()))


def _loftq(cfg: Any, command: str) -> bool:
    ft = cfg.finetuning
    return _trains(cfg, command) and ft.finetuning_type == "lora" and ft.lora.loftq_init and _new_adapter(cfg)


@rule("loftq_needs_full_precision")
def _loftq_needs_full_precision(cfg: Any, command: str) -> None:
    bits = cfg.model.quantization_bit
    if _loftq(cfg, command) and bits is not None:
        raise ConfigError(f"loftq_init quantizes the base itself, and peft's LoftQ must not be given a quantized model "
                          f"(quantization_bit: {bits})",
                          hint="drop quantization_bit for the LoftQ run; load the base with quantization_bit: "
                               f"{cfg.finetuning.lora.loftq_bits} when you use the adapter")


@rule("loftq_scale_is_one")
def _loftq_scale_is_one(cfg: Any, command: str) -> None:
    """peft puts the low-rank fit of the quantization error into A and B unscaled, so LoRA's scale must be 1."""
    lora = cfg.finetuning.lora
    if _loftq(cfg, command) and (lora.use_rslora or lora.lora_alpha != lora.lora_rank):
        got = "use_rslora: true" if lora.use_rslora else f"lora_alpha: {lora.lora_alpha} with lora_rank: {lora.lora_rank}"
        raise ConfigError(f"loftq_init starts the adapter at the fit of the quantization error with a LoRA scale of 1, "
                          f"which needs lora_alpha equal to lora_rank and no rsLoRA (got {got})",
                          hint="drop lora_alpha (with loftq_init it defaults to lora_rank) and use_rslora")


@rule("one_lora_init")
def _one_lora_init(cfg: Any, command: str) -> None:
    lora = cfg.finetuning.lora
    if _trains(cfg, command) and lora.pissa_init and lora.loftq_init:
        raise ConfigError("pissa_init and loftq_init each choose how the LoRA adapter starts; only one can",
                          hint="keep one of pissa_init, loftq_init")


@rule("loftq_needs_cuda")
def _loftq_needs_cuda(cfg: Any, command: str) -> None:
    """peft's LoftQ quantizes each weight with bitsandbytes on a CUDA (or XPU) device, whatever the model's device."""
    if _loftq(cfg, command) and not _has_cuda_or_xpu():
        raise ConfigError("loftq_init needs CUDA (peft's LoftQ quantizes the weights with bitsandbytes on a CUDA or "
                          "XPU device, and torch sees none here)", hint="drop loftq_init on this machine")


# ---------------------------------------------------------------------------------------- backends


def deepspeed_config(value: Any) -> dict[str, Any] | None:
    """The DeepSpeed config named by the ``deepspeed`` setting (a JSON file or a dict).

    None when unset; ConfigError when the file is missing or is not a JSON object. Read at parse
    time because transformers reads it while the training settings are built."""
    if value in (None, "", {}):
        return None
    if isinstance(value, dict):
        return value
    text = str(value).strip()
    if not os.path.isfile(text):
        raise ConfigError(
            f"deepspeed: {text} is not a file",
            hint="point it at a DeepSpeed JSON config, e.g. examples/deepspeed/ds_z2_config.json",
        )
    try:
        with open(text, encoding="utf-8") as f:
            loaded = json.load(f)
    except ValueError as exc:
        raise ConfigError(f"deepspeed: {text} is not valid JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"deepspeed: {text} must hold a JSON object")
    return loaded


def zero_stage(cfg: Any) -> int | None:
    """ZeRO stage of the run's DeepSpeed config (0 when it names none); None without DeepSpeed."""
    training = getattr(cfg, "training", None)
    ds = deepspeed_config(getattr(training, "deepspeed", None)) if training is not None else None
    if ds is None:
        return None
    return int((ds.get("zero_optimization") or {}).get("stage", 0) or 0)


def fsdp_requested(fsdp_setting: Any, env: typing.Mapping[str, str] | None = None) -> bool:
    """FSDP asked for: the ``fsdp`` training setting, or an accelerate FSDP config (``accelerate launch``
    with ``distributed_type: FSDP`` sets ACCELERATE_USE_FSDP=true in every process it starts)."""
    env = os.environ if env is None else env
    return bool(fsdp_setting) or env.get("ACCELERATE_USE_FSDP", "").strip().lower() in ("1", "true", "yes")


@rule("deepspeed_or_fsdp")
def _deepspeed_or_fsdp(cfg: Any, command: str) -> None:
    """One engine shards the model: DeepSpeed or FSDP, not both."""
    t = cfg.training
    if t is not None and t.deepspeed and t.fsdp:
        raise ConfigError("deepspeed and fsdp are both set: one engine shards the model",
                          hint="keep deepspeed (a ZeRO config) or fsdp, not both")


@rule("fsdp_qlora_is_4bit")
def _fsdp_qlora_is_4bit(cfg: Any, command: str) -> None:
    """FSDP shards QLoRA's base only as bitsandbytes 4-bit weights stored in a float dtype."""
    bits = cfg.model.quantization_bit
    if (_trains(cfg, command) and bits == 8 and cfg.model.quantization_method == "bnb"
            and fsdp_requested(cfg.training.fsdp)):
        raise ConfigError(
            "quantization_bit: 8 cannot train under FSDP: bitsandbytes keeps 8-bit weights as int8, and FSDP "
            "shards floating-point tensors only (4-bit weights are packed into the compute dtype for it)",
            hint="use quantization_bit: 4 for QLoRA + FSDP (examples/accelerate/fsdp_config_qlora.yaml), or "
                 "train the 8-bit base with DDP",
        )


@rule("zero3_refuses_ppo")
def _zero3_refuses_ppo(cfg: Any, command: str) -> None:
    """Tunery's PPO keeps a value head and a reference model beside the policy, outside ZeRO-3's shards."""
    if _trains(cfg, command) and cfg.finetuning.stage == "ppo" and zero_stage(cfg) == 3:
        raise ConfigError(
            "stage: ppo cannot run under DeepSpeed ZeRO-3: Tunery's PPO keeps a value head and a reference "
            "model beside the policy, and ZeRO-3 shards the policy's weights so they cannot be shared with them",
            hint="use a ZeRO-2 config (examples/deepspeed/ds_z2_config.json), or grpo, which needs no value head",
        )


@rule("zero3_refuses_quantization")
def _zero3_refuses_quantization(cfg: Any, command: str) -> None:
    """QLoRA's 4/8-bit base weights are not partitioned by ZeRO-3."""
    bits = cfg.model.quantization_bit
    if _trains(cfg, command) and bits is not None and zero_stage(cfg) == 3:
        raise ConfigError(
            f"quantization_bit: {bits} (QLoRA) cannot run under DeepSpeed ZeRO-3: ZeRO-3 partitions "
            "floating-point weights and the quantized base weights are not",
            hint="use ZeRO-2 (examples/deepspeed/ds_z2_config.json) or ZeRO-0 for QLoRA; the quantized "
                 "base is already small",
        )


@rule("zero3_refuses_pissa_init")
def _zero3_refuses_pissa(cfg: Any, command: str) -> None:
    """PiSSA decomposes each full weight when the adapter is created; under ZeRO-3 a process holds a shard."""
    if _trains(cfg, command) and cfg.finetuning.pissa_init and zero_stage(cfg) == 3:
        raise ConfigError(
            "pissa_init cannot run under DeepSpeed ZeRO-3: PiSSA starts from an SVD of each whole weight, "
            "and under ZeRO-3 a process holds only a shard of it",
            hint="use ZeRO-2 (examples/deepspeed/ds_z2_config.json), or drop pissa_init",
        )


def validate(cfg: RunConfig, command: str, groups: list[str]) -> None:
    """Check ``cfg`` for ``command`` (whose setting groups are ``groups``); ConfigError on the first problem.

    Domains first (a single bad value is the clearest message), then the rules in :data:`RULES` order.
    """
    check_domains(cfg, groups)
    for r in RULES:
        r.check(cfg, command)
