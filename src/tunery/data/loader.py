"""Load the datasets named in ``dataset:`` into canonical records, mixed and split.

Local JSON/JSONL is read with the json module rather than ``datasets``' Arrow inference: one row
with an odd type would make Arrow refuse the whole file, and a bad row must be skipped and reported
instead. Typed formats (csv, parquet, arrow, txt), hub datasets and streaming go through
``datasets.load_dataset``.
"""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Iterator
from typing import Any

from tunery.data.converters import InvalidExample, a_kind
from tunery.data.dataset_info import DatasetAttr, get_dataset_attrs
from tunery.data.readers import INVALID, check_utf8, count_lines, open_binary, read_json_rows
from tunery.data.validation import (
    Problem,
    ValidationReport,
    convert_one,
    log_report,
    raise_if_empty,
)
from tunery.errors import ConfigError, DataError, TuneryError, require
from tunery.logging import get_logger

logger = get_logger(__name__)

# file extension -> datasets builder
BUILDERS = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrow", "txt": "text"}


def record_features():
    """The Arrow schema of a canonical record, fixed so datasets from different formats concatenate."""
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features({
        "messages": List(message),
        "tools": Value("string"),
        "chosen": message,
        "rejected": message,
        "kto_tag": Value("bool"),
        "images": List(Value("string")),
        "videos": List(Value("string")),
        "audios": List(Value("string")),
        "_source": {"file": Value("string"), "row": Value("int64")},
    })


# ---------------------------------------------------------------- raw rows

def data_files(attr: DatasetAttr) -> list[str]:
    """The files of a local dataset: the file itself, or every supported file of the folder."""
    path = attr.path
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if os.path.isfile(f) and _ext(f) in BUILDERS)
        if not files:
            raise DataError(f"folder of dataset '{attr.name}' holds no json/jsonl/csv/parquet/arrow/txt file",
                            file=path)
        kinds = {BUILDERS[_ext(f)] for f in files}
        if len(kinds) > 1:
            raise DataError(f"folder of dataset '{attr.name}' mixes file types {sorted(kinds)}", file=path,
                            hint="keep one file type per dataset folder")
        return files
    if os.path.isfile(path):
        if _ext(path) not in BUILDERS:
            raise DataError(f"unsupported file type '.{_ext(path)}' for dataset '{attr.name}'", file=path,
                            hint="use json, jsonl, csv, parquet, arrow or txt")
        return [path]
    raise DataError(f"file of dataset '{attr.name}' not found", file=path,
                    hint=f"file_name is read relative to dataset_dir ({attr.dataset_dir})")


def _ext(path: str) -> str:
    return path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(path) else ""


def load_hub(attr: DatasetAttr, streaming: bool, cache_dir: str | None = None, token: str | None = None):
    """A dataset from the Hugging Face Hub or ModelScope, with an error that says what to do offline."""
    if attr.load_from == "ms_hub":
        msdataset = require("modelscope.msdatasets", "loading datasets from ModelScope", "modelscope",
                            package="modelscope")
        try:
            ds = msdataset.MsDataset.load(attr.dataset_name, subset_name=attr.subset or "default",
                                          data_dir=attr.folder, split=attr.split, cache_dir=cache_dir,
                                          use_streaming=streaming)
        except Exception as exc:  # modelscope raises bare exceptions for network errors
            raise DataError(f"could not load '{attr.dataset_name}' from ModelScope: {exc}", field=attr.name,
                            hint="download it and point file_name at the local copy in dataset_info.json") from exc
        return ds.to_hf_dataset() if hasattr(ds, "to_hf_dataset") else ds
    from datasets import load_dataset

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return load_dataset(attr.dataset_name, name=attr.subset, data_dir=attr.folder, split=attr.split,
                            cache_dir=cache_dir, token=token, streaming=streaming)
    except Exception as exc:  # network, auth and offline errors come as many exception types
        why = "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and it is not cached" if offline else str(exc)
        raise DataError(
            f"could not load dataset '{attr.name}' ({attr.dataset_name}) from the Hugging Face Hub: {why}",
            field=attr.name,
            hint="download it where the Hub is reachable (or set HF_ENDPOINT to a mirror), or save it locally "
                 "and use file_name in dataset_info.json",
        ) from exc


def raw_rows(attr: DatasetAttr, model_args: Any = None,
             streaming: bool = False) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file, row index, raw row) for every row of one dataset, read lazily.

    Local JSON/JSONL files are read in constant memory (readers.py). ``streaming`` streams hub
    datasets and typed files (csv, parquet, ...) too instead of downloading/converting them whole.
    """
    if attr.load_from in ("hf_hub", "ms_hub"):
        ds = load_hub(attr, streaming, getattr(model_args, "cache_dir", None),
                      getattr(model_args, "hf_hub_token", None))
        for i, row in enumerate(ds):
            yield attr.dataset_name, i, row
        return
    if attr.load_from == "script":
        raise DataError(f"dataset '{attr.name}' uses script_url, which datasets 5 no longer runs",
                        field="script_url", hint="convert it to a json/parquet file and use file_name")
    for path in data_files(attr):
        if _ext(path) in ("json", "jsonl"):
            for i, row in enumerate(read_json_rows(path)):
                yield path, i, row
        else:
            for i, row in enumerate(typed_rows(attr, path, streaming)):
                yield path, i, row


def typed_rows(attr: DatasetAttr, path: str, streaming: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of a csv/parquet/arrow/txt file through ``datasets``, with clear errors for what users cause."""
    from datasets import load_dataset

    kind = BUILDERS[_ext(path)]
    with open_binary(path) as f:
        if not f.read(1):
            raise DataError("the file is empty", file=path)
    if kind in ("csv", "text"):
        check_utf8(path)  # one error naming line and byte offset, not pandas' UnicodeDecodeError
    if kind == "csv" and count_lines(path, 2) < 2:
        raise DataError("the CSV file has a single line: it needs a header line naming the columns, then one "
                        "example per line", file=path, row=0)
    try:
        ds = load_dataset(kind, data_files=path, split="train", streaming=streaming)
        columns = list(ds.column_names or []) if not streaming else list(next(iter(ds), {}))
    except TuneryError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for a malformed file
        raise DataError(f"could not read the file as {kind}: {_first_line(exc)}", file=path) from exc
    if kind == "text" and attr.column("prompt") not in columns:
        attr.columns["prompt"] = "text"  # a text file's lines are the prompts (documents)
    if kind == "csv":
        _check_header(attr, path, columns)
    try:
        yield from ds
    except Exception as exc:  # a streamed file can fail part-way
        raise DataError(f"could not read the file as {kind}: {_first_line(exc)}", file=path) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_header(attr: DatasetAttr, path: str, columns: list[str]) -> None:
    """A CSV must start with a header naming the columns the dataset maps (instruction/output, ...)."""
    keys = ("messages",) if attr.formatting in ("sharegpt", "openai") else ("prompt", "response")
    wanted = [attr.column(k) for k in keys if attr.column(k)]
    if wanted and not any(c in columns for c in wanted):
        raise DataError(
            f"the CSV header names none of the columns {wanted}; its first line reads {columns[:6]}",
            file=path, row=0,
            hint="the first line of a CSV file must be a header naming the columns (e.g. instruction,input,output), "
                 "or map yours with `columns` in dataset_info.json")


# ---------------------------------------------------------------- records

def iter_dataset_records(attr: DatasetAttr, stage: str, report: ValidationReport, *, strict: bool = False,
                         max_samples: int | None = None, model_args: Any = None,
                         streaming: bool = False) -> Iterator[dict[str, Any]]:
    """Canonical records of one dataset, one at a time; invalid rows go into ``report``.

    Reading stops once ``max_samples`` valid records were produced, so only what is needed is read.
    """
    valid = 0
    for file, index, row in raw_rows(attr, model_args, streaming):
        if max_samples is not None and valid >= max_samples:
            break
        report.total += 1
        if not isinstance(row, dict) or INVALID in row:
            reason = row[INVALID] if isinstance(row, dict) else f"row is {a_kind(row)}, not an object"
            _reject(report, Problem(file, index, None, reason), strict)
            continue
        record, problem = convert_one(row, attr, file, index, stage)
        if problem is not None:
            _reject(report, problem, strict)
            continue
        report.valid += 1
        valid += 1
        yield record


def load_dataset_records(attr: DatasetAttr, stage: str, *, strict: bool = False, seed: int = 42,
                         max_samples: int | None = None, model_args: Any = None,
                         keep_problems: int = 5) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical records of one dataset, with invalid rows skipped and reported."""
    report = ValidationReport(keep=keep_problems)
    limit = max_samples if attr.num_samples is None else None
    records = list(iter_dataset_records(attr, stage, report, strict=strict, max_samples=limit,
                                        model_args=model_args))
    if attr.num_samples is not None:
        records = sample_records(records, attr.num_samples, seed)
    if max_samples is not None:
        records = records[:max_samples]
    log_report(report, f"dataset '{attr.name}'")
    raise_if_empty(report, f"dataset '{attr.name}'", attr=attr, stage=stage)
    return records, report


def _reject(report: ValidationReport, problem: Problem, strict: bool) -> None:
    if strict:
        raise DataError(f"invalid example: {problem.reason}", file=problem.file, row=problem.row,
                        field=problem.field, hint="fix the row, or drop strict: true to skip invalid rows")
    report.add(problem)


def sample_records(records: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``num_samples``: a seeded random subset, repeating rows when more are asked than exist."""
    if not records:
        return records
    rng = random.Random(seed)
    if n <= len(records):
        return rng.sample(records, n)
    return records * (n // len(records)) + rng.sample(records, n % len(records))


def records_dataset(records: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(records, features=record_features())


def streaming_records(attr: DatasetAttr, stage: str, *, strict: bool, max_samples: int | None,
                      model_args: Any = None):
    """An IterableDataset of canonical records, read lazily (local JSON arrays too, in constant memory).

    Invalid rows are skipped and logged as they come (the first few with file/row/field, then a count
    at the end of each pass), since a stream has no end known in advance.
    A local file that is not UTF-8 is a DataError here, before anything is read lazily (one pass
    over the file's bytes, in chunks).
    """
    from datasets import IterableDataset

    if attr.load_from == "file":
        # Encoding is checked now, before the model loads, as without streaming: read lazily inside a
        # DataLoader worker, the DataError came back as torch's "Caught DataError in worker" traceback.
        for path in data_files(attr):
            if BUILDERS[_ext(path)] in ("json", "csv", "text"):
                check_utf8(path)

    def generate():
        report = ValidationReport()
        shown = 0
        for record in iter_dataset_records(attr, stage, report, strict=strict, max_samples=max_samples,
                                           model_args=model_args, streaming=True):
            for problem in report.problems[shown:]:
                logger.warning("dataset '%s' (streaming): skipped %s", attr.name, problem)
            shown = len(report.problems)
            yield record
        if report.skipped:
            logger.warning("dataset '%s' (streaming): %s", attr.name, report.summary())

    return IterableDataset.from_generator(generate, features=record_features())


def mix(datasets: list, data_args: Any, seed: int):
    """Combine several datasets with ``mix_strategy`` (concat / interleave_under / interleave_over)."""
    from datasets import concatenate_datasets, interleave_datasets

    if len(datasets) == 1:
        return datasets[0]
    strategy = getattr(data_args, "mix_strategy", "concat")
    if strategy == "concat":
        return concatenate_datasets(datasets)
    if strategy not in ("interleave_under", "interleave_over"):
        raise ConfigError(f"unknown mix_strategy '{strategy}'", hint="use concat, interleave_under or interleave_over")
    probs = parse_probs(getattr(data_args, "interleave_probs", None), len(datasets))
    return interleave_datasets(
        datasets, probabilities=probs, seed=seed,
        stopping_strategy="first_exhausted" if strategy == "interleave_under" else "all_exhausted",
    )


def parse_probs(text: str | list | None, n: int) -> list[float] | None:
    if text is None or text == "":
        return None
    values = text if isinstance(text, list) else [v for v in str(text).split(",") if v.strip()]
    try:
        probs = [float(v) for v in values]
    except ValueError as exc:
        raise ConfigError(f"interleave_probs '{text}' is not a comma-separated list of numbers") from exc
    if len(probs) != n:
        raise ConfigError(f"interleave_probs has {len(probs)} values for {n} datasets",
                          hint="give one probability per dataset")
    if abs(sum(probs) - 1.0) > 1e-6 or any(p < 0 for p in probs):
        raise ConfigError(f"interleave_probs {probs} must be non-negative and sum to 1")
    return probs


def load_mixed(names: str | None, data_args: Any, stage: str, seed: int = 42, model_args: Any = None):
    """All datasets of ``names`` as one (Iterable)Dataset of records, plus the merged report."""
    attrs = get_dataset_attrs(names, data_args.dataset_dir, getattr(data_args, "media_dir", None))
    if not attrs:
        return None, ValidationReport()
    report = ValidationReport()
    parts = []
    for attr in attrs:
        if data_args.streaming:
            parts.append(streaming_records(attr, stage, strict=data_args.strict, max_samples=data_args.max_samples,
                                           model_args=model_args))
            continue
        records, sub = load_dataset_records(attr, stage, strict=data_args.strict, seed=seed,
                                            max_samples=data_args.max_samples, model_args=model_args)
        report.merge(sub)
        parts.append(records_dataset(records))
    return mix(parts, data_args, seed), report


def split_eval(dataset, val_size: float, seed: int, streaming: bool = False, buffer_size: int = 16384):
    """Split off ``val_size`` (a fraction < 1 or a count >= 1) as the evaluation set."""
    if not val_size:
        return dataset, None
    if streaming:  # val_size >= 0, and a count when streaming: checked by parse_config
        n = int(val_size)
        dataset = dataset.shuffle(buffer_size=buffer_size, seed=seed)
        return dataset.skip(n), dataset.take(n)
    size = int(val_size) if val_size >= 1 else val_size
    if isinstance(size, int) and size >= len(dataset):
        raise DataError(f"val_size {size} leaves no training examples (only {len(dataset)})", field="val_size")
    try:
        parts = dataset.train_test_split(test_size=size, seed=seed)
    except ValueError as exc:
        raise DataError(f"cannot split val_size={val_size} from {len(dataset)} examples: {exc}",
                        field="val_size") from exc
    return parts["train"], parts["test"]


__all__ = ["InvalidExample", "load_mixed", "load_dataset_records", "records_dataset", "split_eval", "mix",
           "record_features"]
