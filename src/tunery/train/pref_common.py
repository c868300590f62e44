"""Pieces every preference/RL stage shares: trl configs from Tunery's settings, token-id columns, models.

Tunery tokenizes with its own templates (so a dpo run sees exactly the ids an sft run sees) and hands
trl datasets that are already token ids. The helpers here translate between the two conventions and
load the extra models (reference, reward) the stages need, through ``tunery.model.loader``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

from tunery.data import IGNORE_INDEX
from tunery.data.media import KINDS
from tunery.errors import DataError
from tunery.logging import get_logger
from tunery.model.loader import load_model

if TYPE_CHECKING:
    from datasets import Dataset

logger = get_logger(__name__)

MEDIA_COLUMNS = {kind: f"media_{kind}" for kind in KINDS}  # media paths of pairwise rows handed to trl

# Fields of Tunery's TrainingArguments that trl configs must not inherit blindly: on a CPU trl would
# otherwise keep its own defaults (bf16, gradient checkpointing), and the Seq2Seq generation
# fields do not exist in trl configs.
_SKIP_FIELDS = {"generation_config", "predict_with_generate", "generation_max_length", "generation_num_beams"}


def trl_config(config_cls: type, training_args: Any, **overrides: Any) -> Any:
    """A trl ``*Config`` carrying every TrainingArguments field the user set, plus stage overrides.

    trl configs subclass transformers' TrainingArguments, so the shared fields copy over one to one;
    only the stage's own knobs (beta, loss_type, ...) come from ``overrides``.
    """
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(type(training_args)):
        if not field.init or field.name not in names or field.name in _SKIP_FIELDS:
            continue
        values[field.name] = getattr(training_args, field.name)
    # TrainingArguments turns some inputs into richer objects in __post_init__; give back the inputs.
    if "report_to" in values and not values["report_to"]:
        values["report_to"] = "none"
    if values.get("warmup_steps") is not None and values["warmup_steps"] < 0:
        values.pop("warmup_steps")
    values.update(overrides)
    return config_cls(**values)


# ---------------------------------------------------------------------------- token-id columns
def _split_labelled(input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(prompt, completion) of a sequence whose prompt is masked with IGNORE_INDEX in ``labels``."""
    start = next((i for i, lab in enumerate(labels) if lab != IGNORE_INDEX), len(labels))
    return list(input_ids[:start]), list(input_ids[start:])


def to_pairwise_columns(dataset: Dataset) -> Dataset:
    """Columns ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` (trl 1.x names) from Tunery's pairwise data.

    Accepts those columns as they are, or full sequences with label masks
    (``chosen_input_ids``/``chosen_labels``/``rejected_input_ids``/``rejected_labels``).
    """
    cols = set(dataset.column_names)
    if {"prompt_ids", "chosen_ids", "rejected_ids"} <= cols:
        # a VLM's rows keep their media paths, renamed so trl does not take them for its own image column
        media = [k for k in KINDS if k in cols]
        kept = [MEDIA_COLUMNS[k] for k in KINDS if MEDIA_COLUMNS[k] in cols]
        dataset = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids", *media, *kept])
        return dataset.rename_columns({k: MEDIA_COLUMNS[k] for k in media}) if media else dataset
    needed = {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}
    if not needed <= cols:
        raise DataError(
            f"pairwise dataset has columns {sorted(cols)}; expected prompt_ids/chosen_ids/rejected_ids",
            hint="use a preference dataset (ranking: true in dataset_info.json) for stages rm/dpo/orpo/simpo",
        )

    def split(example: dict[str, Any]) -> dict[str, Any]:
        prompt, chosen = _split_labelled(example["chosen_input_ids"], example["chosen_labels"])
        prompt_r, rejected = _split_labelled(example["rejected_input_ids"], example["rejected_labels"])
        if prompt != prompt_r:
            raise DataError("chosen and rejected have different prompts", field="chosen/rejected")
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}

    return dataset.map(split, remove_columns=dataset.column_names)


def to_kto_columns(dataset: Dataset) -> Dataset:
    """Columns ``prompt_ids`` / ``completion_ids`` / ``label`` (bool: desirable) for trl's KTOTrainer.

    Accepts those columns, or ``input_ids``/``labels`` (prompt masked) with ``kto_tag``/``kto_tags``.
    """
    cols = set(dataset.column_names)
    if {"prompt_ids", "completion_ids", "label"} <= cols:
        # a VLM's rows keep their media paths, renamed so trl does not take them for its own image column
        media = [k for k in KINDS if k in cols]
        kept = [MEDIA_COLUMNS[k] for k in KINDS if MEDIA_COLUMNS[k] in cols]
        dataset = dataset.select_columns(["prompt_ids", "completion_ids", "label", *media, *kept])
        return dataset.rename_columns({k: MEDIA_COLUMNS[k] for k in media}) if media else dataset
    tag = "kto_tag" if "kto_tag" in cols else "kto_tags" if "kto_tags" in cols else None
    if tag is None or not {"input_ids", "labels"} <= cols:
        raise DataError(
            f"KTO dataset has columns {sorted(cols)}; expected prompt_ids/completion_ids/label",
            hint="use a dataset with a kto_tag column (see docs/training_preference.md)",
        )

    def split(example: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = _split_labelled(example["input_ids"], example["labels"])
        return {"prompt_ids": prompt, "completion_ids": completion, "label": bool(example[tag])}

    return dataset.map(split, remove_columns=dataset.column_names)


def to_prompt_columns(dataset: Dataset) -> Dataset:
    """Column ``prompt_ids`` (generation prompt appended) for the online stages ppo and grpo.

    Tunery's prompt-only rows (stage kind "unsupervised") hold the prompt in ``input_ids`` and the
    reference reply, if any, in ``labels``; sft-style rows (prompt masked in ``labels``) also work.
    """
    cols = set(dataset.column_names)
    if "prompt_ids" in cols:
        return dataset.select_columns(["prompt_ids"])
    if "input_ids" not in cols:
        raise DataError(f"prompt dataset has columns {sorted(cols)}; expected prompt_ids or input_ids")

    def prompt(example: dict[str, Any]) -> dict[str, Any]:
        ids, labels = example["input_ids"], example.get("labels") or []
        masked = len(labels) == len(ids) and labels and labels[0] == IGNORE_INDEX
        return {"prompt_ids": _split_labelled(ids, labels)[0] if masked else list(ids)}

    return dataset.map(prompt, remove_columns=dataset.column_names)


# ---------------------------------------------------------------------------- models
def model_args_for(model_args: Any, path: str, adapters: str | None, quantization_bit: int | None) -> Any:
    """A copy of ``model_args`` pointing at another model (reference or reward)."""
    other = copy.copy(model_args)
    other.model_name_or_path = path
    other.adapter_name_or_path = adapters
    other.quantization_bit = quantization_bit
    return other


def load_reference_model(cfg: Any, tokenizer: Any, policy: Any) -> Any:
    """The frozen reference for dpo/kto, or None when the trainer should disable the LoRA adapter instead.

    ``ref_model`` when given; otherwise None for LoRA (the base with the adapter switched off is the
    reference, no second copy in memory) and a frozen copy of the starting model for full/freeze.
    """
    ft = cfg.finetuning
    if ft.ref_model:
        args = model_args_for(cfg.model, ft.ref_model, ft.ref_model_adapters, ft.ref_model_quantization_bit)
        return load_model(tokenizer, args, ft, is_trainable=False)
    if is_peft(policy):
        return None
    return load_model(tokenizer, cfg.model, ft, is_trainable=False)


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a core dependency
        return False
    return isinstance(model, PeftModel)


def drop_reference_adapter(model: Any) -> None:
    """Remove the 'ref' adapter copy trl adds to a ready-made PeftModel, so the reference is the base.

    trl copies a pre-built adapter as 'ref'; Tunery's reference for LoRA is the base model with the
    adapter disabled (as in LLaMA-Factory), which costs no memory; trl falls back to that when no
    'ref' adapter exists.
    """
    if is_peft(model) and "ref" in model.peft_config:
        model.delete_adapter("ref")
