"""The data pipeline: dataset_info.json -> canonical records -> token ids + labels -> batches.

Public API (docs/ARCHITECTURE.md, "Data pipeline"), re-exported by ``tunery.data``:
``get_dataset(cfg, tokenizer, template, stage) -> DatasetModule``,
``get_collator(stage, tokenizer, cfg)``, ``load_records(cfg) -> list[dict]``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from tunery.data import cache
from tunery.data import collator as c
from tunery.data.dataset_info import get_dataset_attrs
from tunery.data.loader import load_mixed, split_eval
from tunery.data.media import MediaEncoder
from tunery.data.packing import pack_dataset
from tunery.data.processors import (
    FAILED,
    REPLY_CUT,
    TRUNCATED,
    ProcessSettings,
    process_batch,
    stage_kind,
)
from tunery.data.validation import MAX_LISTED, MAX_REPORTED, Problem, problem_from_error, write_problems
from tunery.errors import ConfigError, DataError
from tunery.logging import get_logger

logger = get_logger(__name__)

SKIPPED_FILE = "skipped_rows.jsonl"


@dataclass
class DataStats:
    """What happened to the examples: read, skipped as invalid, truncated, dropped because the reply was cut."""

    total: int = 0
    skipped_invalid: int = 0
    truncated: int = 0
    reply_cut: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    packed_rows: int | None = None
    problems: list[str] = field(default_factory=list)
    from_cache: bool = False
    eval_names: list[str] | None = None  # set when eval_on_each_dataset gives one eval set per name
    skipped_file: str | None = None  # skipped_rows.jsonl: every skipped row (file, row, field, reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetModule:
    """Tokenized ``train_dataset`` / ``eval_dataset`` (datasets.Dataset, or IterableDataset when streaming).

    With ``eval_on_each_dataset`` and several eval datasets, ``eval_dataset`` is a dict name -> Dataset
    (transformers' Trainer evaluates each and prefixes the metrics with the name).
    """

    train_dataset: Any = None
    eval_dataset: Any = None
    stats: DataStats = field(default_factory=DataStats)


def resolve_packing(data_args: Any, stage: str) -> bool:
    """``packing: null`` means on for pt, off otherwise (``neat_packing: true`` turns it on, as in
    LLaMA-Factory; Tunery's packing never attends across examples anyway). Only pt and sft pack."""
    packing = getattr(data_args, "packing", None)
    if packing is None:
        packing = stage == "pt" or bool(getattr(data_args, "neat_packing", False))
    return bool(packing) and stage_kind(stage) in ("pt", "sft")


def _main_process() -> bool:
    """True unless a launcher started this process as a replica (RANK > 0: torchrun, accelerate, Ray)."""
    return os.environ.get("RANK", "0") in ("", "0")


def _seed(cfg: Any) -> int:
    return int(getattr(getattr(cfg, "training", None), "seed", 42) or 42)


def settings_for(data_args: Any, stage: str) -> ProcessSettings:
    return ProcessSettings(
        cutoff_len=int(data_args.cutoff_len),
        train_on_prompt=bool(data_args.train_on_prompt),
        mask_history=bool(data_args.mask_history),
        packing=resolve_packing(data_args, stage),
    )


def load_records(cfg: Any, stage: str = "unsupervised", which: str = "dataset") -> list[dict[str, Any]]:
    """Canonical records of ``cfg.data.dataset`` (or ``eval_dataset``) for workflows that need text."""
    names = getattr(cfg.data, which)
    data_args = replace(cfg.data, streaming=False)  # workflows that need text load it whole
    dataset, _ = load_mixed(names, data_args, stage, _seed(cfg), getattr(cfg, "model", None))
    return [] if dataset is None else dataset.to_list()


def process_records(records, tokenizer, template, stage: str, settings: ProcessSettings, *,
                    num_workers: int | None = None, batch_size: int = 1000, streaming: bool = False,
                    media: MediaEncoder | None = None):
    """Tokenize a Dataset of canonical records; returns (tokenized dataset, Counter of statuses, first errors).

    ``media``: the model's processor (vision/audio models), which expands media placeholders."""
    fn = partial(process_batch, stage=stage, tokenizer=tokenizer, template=template, settings=settings, media=media)
    def keep(status: int) -> bool:
        return status not in (REPLY_CUT, FAILED)

    if streaming:
        tokenized = records.map(fn, batched=True, batch_size=batch_size, remove_columns=list(records.column_names or []))
        tokenized = tokenized.filter(keep, input_columns="_status").remove_columns(["_status", "_error"])
        return tokenized, Counter(), []
    workers = num_workers if num_workers and num_workers > 1 and len(records) >= 2 * batch_size else None
    tokenized = records.map(fn, batched=True, batch_size=batch_size, num_proc=workers,
                            remove_columns=records.column_names, desc=f"Tokenizing ({stage})",
                            load_from_cache_file=False)
    statuses = Counter(tokenized["_status"])
    errors: list[str] = []
    if statuses[FAILED] or statuses[REPLY_CUT]:
        reasons = [(st, e) for st, e in zip(tokenized["_status"], tokenized["_error"]) if e]
        errors = [e for st, e in reasons if st == FAILED][:MAX_LISTED]
        if statuses[REPLY_CUT]:
            logger.warning("%d examples dropped by the truncation policy; first: %s", statuses[REPLY_CUT],
                           "; ".join([e for st, e in reasons if st == REPLY_CUT][:3]))
    if statuses[REPLY_CUT] or statuses[FAILED]:
        tokenized = tokenized.filter(keep, input_columns="_status", num_proc=workers)
    return tokenized.remove_columns(["_status", "_error"]), statuses, errors


def _tokenize_split(records, tokenizer, template, stage, settings, data_args, stats: DataStats,
                    skipped: list[Problem], media: MediaEncoder | None = None):
    if records is None:
        return None
    streaming = bool(data_args.streaming)
    tokenized, statuses, errors = process_records(
        records, tokenizer, template, stage, settings, num_workers=data_args.preprocessing_num_workers,
        batch_size=data_args.preprocessing_batch_size or 1000, streaming=streaming, media=media)
    stats.truncated += statuses[TRUNCATED]
    stats.reply_cut += statuses[REPLY_CUT]
    if statuses[FAILED]:
        if data_args.strict:
            raise DataError(f"the template rejected an example: {errors[0]}",
                            hint="fix the example, or drop strict: true to skip such examples")
        stats.skipped_invalid += statuses[FAILED]
        stats.problems += errors[: max(0, MAX_REPORTED - len(stats.problems))]
        skipped += [problem_from_error(e) for e in errors[: max(0, MAX_LISTED - len(skipped))]]
        logger.warning("skipped %d examples the template could not render; first: %s", statuses[FAILED],
                       "; ".join(errors[:MAX_REPORTED]))
    if settings.packing and not streaming:
        tokenized = pack_dataset(tokenized, settings.cutoff_len)
    return tokenized


def get_dataset(cfg: Any, tokenizer, template, stage: str, media: MediaEncoder | None = None) -> DatasetModule:
    """Load, validate, tokenize, (pack) and split the datasets of ``cfg.data`` for ``stage``.

    ``stage`` is a training stage (pt, sft, rm, dpo, orpo, simpo, kto, ppo, grpo) or
    ``unsupervised``/``predict`` for prompt-only data. Results are cached on disk (see cache.py).
    ``media`` (a vision/audio model's processor, see data/media.py) encodes the media columns: the
    rows then also keep their media paths, and packing is off (see :func:`media_packing_notice`).
    """
    data_args = cfg.data
    if not data_args.dataset and not data_args.eval_dataset:
        raise ConfigError("no dataset given", hint="set `dataset:` to names from dataset_info.json")
    kind = stage_kind(stage)
    settings = settings_for(data_args, stage)
    if media is not None and settings.packing:
        logger.warning(media_packing_notice("packing"))
        settings = replace(settings, packing=False)
    seed = _seed(cfg)
    if data_args.tokenized_path:
        loaded = _load_tokenized_path(data_args.tokenized_path)
        if loaded is not None:
            return loaded
    key = None
    if not data_args.streaming:
        key = cache.cache_key({
            "train": cache.files_fingerprint(get_dataset_attrs(data_args.dataset, data_args.dataset_dir)),
            "eval": cache.files_fingerprint(get_dataset_attrs(data_args.eval_dataset, data_args.dataset_dir)),
            "tokenizer": cache.tokenizer_fingerprint(tokenizer), "template": cache.template_fingerprint(template),
            "stage": kind, "settings": asdict(settings), "seed": seed,
            "data": {k: getattr(data_args, k, None) for k in (
                "max_samples", "val_size", "mix_strategy", "interleave_probs", "strict", "default_system",
                "enable_thinking", "preserve_thinking", "tool_format", "media_dir")},
            "media": media.fingerprint() if media is not None else None,
        })
        # In a multi-process run only the main process rebuilds the cache; the others read what it wrote.
        if not data_args.overwrite_cache or not _main_process():
            hit = cache.load_cached(key)
            if hit is not None:
                data, stats_dict = hit
                logger.info("loaded tokenized data from cache %s", cache.cache_dir() / key)
                return _module_from_saved(data, DataStats(**{**stats_dict, "from_cache": True}))

    stats = DataStats()
    train_records, report = load_mixed(data_args.dataset, data_args, kind, seed, getattr(cfg, "model", None))
    eval_names = [n.strip() for n in (data_args.eval_dataset or "").split(",") if n.strip()]
    if getattr(data_args, "eval_on_each_dataset", False) and len(eval_names) > 1:
        stats.eval_names = eval_names
        eval_records = {}
        for name in eval_names:
            eval_records[name], eval_report = load_mixed(name, data_args, kind, seed, getattr(cfg, "model", None))
            report.merge(eval_report)
    else:
        eval_records, eval_report = load_mixed(data_args.eval_dataset, data_args, kind, seed,
                                               getattr(cfg, "model", None))
        report.merge(eval_report)
    stats.total, stats.skipped_invalid = report.total, report.skipped
    stats.problems = [str(p) for p in report.problems]
    skipped = list(report.listed)
    if train_records is not None and eval_records is None and data_args.val_size:
        train_records, eval_records = split_eval(train_records, data_args.val_size, seed, bool(data_args.streaming),
                                                 data_args.buffer_size)
    if data_args.streaming and settings.packing:
        logger.warning("packing is not available with streaming; documents are concatenated instead")
        settings = ProcessSettings(settings.cutoff_len, settings.train_on_prompt, settings.mask_history, False)
    train = _tokenize_split(train_records, tokenizer, template, stage, settings, data_args, stats, skipped, media)
    if isinstance(eval_records, dict):
        evaluation = {name: _tokenize_split(records, tokenizer, template, stage, settings, data_args, stats, skipped,
                                            media) for name, records in eval_records.items()}
    else:
        evaluation = _tokenize_split(eval_records, tokenizer, template, stage, settings, data_args, stats, skipped,
                                     media)
    if key is not None and skipped:  # written next to the cached data, so a cache hit still has it
        stats.skipped_file = str(cache.cache_dir() / key / SKIPPED_FILE)
    _report(stats, train, evaluation, settings, data_args)
    module = DatasetModule(train, evaluation, stats)
    if key is not None and _main_process():  # one writer per cache entry in a multi-process run
        from datasets import DatasetDict

        parts = {"train": train} if train is not None else {}
        if isinstance(evaluation, dict):
            parts.update({f"validation_{i}": evaluation[name] for i, name in enumerate(stats.eval_names)})
        elif evaluation is not None:
            parts["validation"] = evaluation
        entry = cache.save_cached(key, DatasetDict(parts), stats.to_dict())
        if skipped:
            write_problems(str(entry / SKIPPED_FILE), skipped)
        if data_args.tokenized_path:
            DatasetDict(parts).save_to_disk(data_args.tokenized_path)
            _write_stats(data_args.tokenized_path, stats)
    return module


def _report(stats: DataStats, train, evaluation, settings: ProcessSettings, data_args: Any) -> None:
    stats.train_examples = len(train) if hasattr(train, "__len__") else 0
    parts = evaluation.values() if isinstance(evaluation, dict) else [evaluation]
    stats.eval_examples = sum(len(e) for e in parts if e is not None and hasattr(e, "__len__"))
    if settings.packing:
        stats.packed_rows = stats.train_examples
    if stats.truncated:
        logger.warning("%d examples were longer than cutoff_len=%d and were truncated", stats.truncated,
                       settings.cutoff_len)
    if stats.reply_cut:
        logger.warning("%d examples were dropped: cutoff_len=%d leaves no room for their reply (raise cutoff_len)",
                       stats.reply_cut, settings.cutoff_len)
    if train is not None and stats.train_examples == 0 and not data_args.streaming:
        first = f" First problem: {stats.problems[0]}" if stats.problems else ""
        raise DataError(
            f"no training example left: {stats.reply_cut} had no room for a reply in cutoff_len={settings.cutoff_len}, "
            f"{stats.skipped_invalid} examples were invalid.{first}",
            hint="raise cutoff_len, or run `tunery data check` / `tunery data preview` to see what is wrong")


def skipped_lines(stats: DataStats, full_list: str | None = None) -> list[str]:
    """What to tell a user about skipped rows: the count, the first few (file, row, field, reason) and
    where the full list is (``full_list``, else ``stats.skipped_file``). Empty when nothing was skipped."""
    if not stats.skipped_invalid:
        return []
    lines = [f"{stats.skipped_invalid} of {stats.total} rows skipped as invalid; first:"]
    lines += [f"  - {p}" for p in stats.problems[:MAX_REPORTED]]
    path = full_list or stats.skipped_file
    lines.append(f"  every skipped row: {path}" if path else
                 "  (streaming: skipped rows are logged as they are read; run `tunery data check` for the list)")
    return lines


def copy_skipped(stats: DataStats, folder: str) -> str | None:
    """Copy the skipped-rows list into ``folder`` (a run's output_dir); returns its new path, or None."""
    if not stats.skipped_file or not os.path.isfile(stats.skipped_file):
        return None
    target = os.path.join(folder, SKIPPED_FILE)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(stats.skipped_file, target)
    return target


def _write_stats(path: str, stats: DataStats) -> None:
    with open(os.path.join(path, "tunery_stats.json"), "w") as f:
        json.dump(stats.to_dict(), f, indent=2)


def _load_tokenized_path(path: str) -> DatasetModule | None:
    if not os.path.isdir(path):
        return None
    from datasets import load_from_disk

    data = load_from_disk(path)
    stats_file = os.path.join(path, "tunery_stats.json")
    stats = DataStats(**json.load(open(stats_file))) if os.path.isfile(stats_file) else DataStats()
    stats.from_cache = True
    logger.info("loaded tokenized data from tokenized_path=%s", path)
    if hasattr(data, "keys"):
        return _module_from_saved(data, stats)
    return DatasetModule(data, None, stats)


def _module_from_saved(data, stats: DataStats) -> DatasetModule:
    """A DatasetModule from a saved DatasetDict (train, validation or validation_<i> per eval name)."""
    train = data["train"] if "train" in data else None
    if stats.eval_names:
        evaluation = {name: data[f"validation_{i}"] for i, name in enumerate(stats.eval_names)}
    else:
        evaluation = data["validation"] if "validation" in data else None
    return DatasetModule(train, evaluation, stats)


def media_packing_notice(what: str) -> str:
    return (f"{what} is off for this vision/audio model: media tokens must stay with their own example, and "
            "Qwen-VL's 3-D rope positions cannot restart inside a row; batches are padded instead")


def get_collator(stage: str, tokenizer, cfg: Any, padding_free: bool = False, media: MediaEncoder | None = None):
    """The batch collator for ``stage`` (see collator.py); matches the columns get_dataset produces.

    The one place a collator is chosen: packed rows, else padding-free batches when ``padding_free``
    (the training fast path asks) or the data setting ``padding_free`` is on, else padded. With
    ``media`` (a vision/audio model's processor) batches are padded and carry the processor's media
    tensors (packing and padding-free are off, with a notice)."""
    kind = stage_kind(stage)
    pad_id = c.pad_token_id(tokenizer)
    data_args = cfg.data if hasattr(cfg, "data") else cfg
    if media is not None:
        if kind in ("pt", "sft") and (padding_free or getattr(data_args, "padding_free", False)):
            logger.warning(media_packing_notice("padding-free batching"))
        base = c.GenerationCollator(pad_id) if kind == "unsupervised" else c.PaddedCollator(pad_id)
        return c.MediaCollator(base, media)
    if kind == "pairwise":
        return c.PairwiseCollator(pad_id)
    if kind == "kto":
        return c.KTOCollator(pad_id)
    if kind == "unsupervised":
        return c.GenerationCollator(pad_id)
    if resolve_packing(data_args, stage):
        return c.PackedCollator(pad_id)
    if padding_free or getattr(data_args, "padding_free", False):
        return c.padding_free_collator()
    return c.PaddedCollator(pad_id)
