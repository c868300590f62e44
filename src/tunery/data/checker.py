"""What ``tunery data check|preview|render`` compute, kept apart from printing (``cli/data.py`` prints).

check: every dataset loads, every row converts (invalid rows with file/row/field/reason), and with
a tokenizer the token-length distribution against ``cutoff_len`` (with a vision/audio model's
processor, media rows count the media tokens it expands each placeholder into, as training does). preview: the exact rendered text
of a few examples with the trained tokens marked, from the same processors training uses.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

from tunery.data.converters import InvalidExample, convert_openai
from tunery.data.dataset_info import (
    OPENAI_TAG_DEFAULTS,
    DatasetAttr,
    get_dataset_attrs,
    parse_dataset_attr,
    read_dataset_info,
)
from tunery.data.loader import iter_dataset_records, load_dataset_records, record_features
from tunery.data.media import MediaEncoder, readable_problem
from tunery.data.pipeline import settings_for
from tunery.data.processors import (
    FAILED,
    IGNORE_INDEX,
    REPLY_CUT,
    TRUNCATED,
    ProcessSettings,
    document_ids,
    document_text,
    encode_record,
    has_media,
    process_batch,
    stage_kind,
)
from tunery.data.validation import Problem, ValidationReport, raise_if_empty
from tunery.errors import ConfigError, DataError, TuneryError

TRAIN_OPEN, TRAIN_CLOSE = "[[", "]]"


@dataclass
class DatasetCheck:
    name: str
    source: str
    status: str = "ok"  # ok | invalid_rows | error | skipped
    total: int = 0
    valid: int = 0
    invalid: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    lengths: dict[str, Any] | None = None
    truncated: int = 0   # valid rows training will cut to cutoff_len (reply kept, prompt's end kept)
    dropped: int = 0     # valid rows training will drop because cutoff_len leaves no room for a reply


def length_stats(lengths: list[int], cutoff_len: int) -> dict[str, Any]:
    """p50/p95/max of token lengths and the share of examples longer than ``cutoff_len``."""
    if not lengths:
        return {"count": 0, "p50": 0, "p95": 0, "max": 0, "cut": 0, "share_cut": 0.0, "cutoff_len": cutoff_len}
    ordered = sorted(lengths)

    def pct(p: float) -> int:  # nearest-rank percentile
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    cut = sum(1 for n in lengths if n > cutoff_len)
    return {"count": len(lengths), "p50": pct(50), "p95": pct(95), "max": ordered[-1], "cut": cut,
            "share_cut": round(cut / len(lengths), 4), "cutoff_len": cutoff_len}


def full_length(record: dict[str, Any], tokenizer, template, stage: str, media: MediaEncoder | None = None) -> int:
    """Tokens of the example before any truncation (pairwise: prompt + the longer reply).

    ``media`` (a vision/audio model's processor): a media row counts each placeholder as the media
    tokens the processor expands it into (loading the files); without it, the text tokens only."""
    kind = stage_kind(stage)
    if kind == "pt":
        return len(document_ids(document_text(record), tokenizer))
    if media is None or not has_media(record):
        media = None
    if kind == "pairwise":
        return max(len(encode_record(record, tokenizer, template, media, [*record["messages"], record[side]])[0])
                   for side in ("chosen", "rejected"))
    return len(encode_record(record, tokenizer, template, media)[0])


def check_datasets(cfg: Any, tokenizer=None, template=None, stage: str = "sft", max_problems: int = 20,
                   media: MediaEncoder | None = None) -> list[DatasetCheck]:
    """Check the datasets named in ``cfg.data`` (all local entries of dataset_info.json when none is named).

    ``media``: the model's processor (a vision/audio model), so media rows are encoded and counted
    the way training does (each image's tokens as the processor expands them)."""
    data_args = cfg.data
    names = ",".join(n for n in (data_args.dataset, data_args.eval_dataset) if n)
    kind = stage_kind(stage)
    if names:
        attrs = get_dataset_attrs(names, data_args.dataset_dir, data_args.media_dir)
        explicit = True
    else:
        info = read_dataset_info(data_args.dataset_dir)
        if not info:
            raise DataError(f"no dataset_info.json in '{data_args.dataset_dir}' and no dataset named",
                            hint="pass --dataset_dir DIR (the folder holding dataset_info.json) or --dataset NAME")
        attrs = [parse_dataset_attr(name, entry, data_args.dataset_dir) for name, entry in info.items()]
        for attr in attrs:
            attr.media_dir = data_args.media_dir
        explicit = False
    results = []
    for attr in attrs:
        check = DatasetCheck(attr.name, f"{attr.load_from}:{attr.dataset_name}")
        results.append(check)
        if not explicit and (attr.load_from != "file" or not os.path.exists(attr.path)):
            check.status = "skipped"
            check.message = "hub dataset (not downloaded by check)" if attr.load_from != "file" else "file not present"
            continue
        own_stage = kind if explicit else _natural_stage(attr)
        report = ValidationReport(keep=max_problems)
        policy = _Policy(check, tokenizer, template, own_stage, data_args, max_problems, media) \
            if tokenizer is not None and template is not None else None
        try:
            # one record at a time: memory stays flat however large the file (max_samples stops reading)
            for record in iter_dataset_records(attr, own_stage, report, max_samples=data_args.max_samples,
                                               streaming=bool(data_args.streaming)):
                unreadable = readable_problem(record)  # a media file that exists but does not decode
                if unreadable is not None:
                    kind, reason = unreadable
                    report.valid -= 1
                    report.add(Problem(record["_source"]["file"], record["_source"]["row"],
                                       attr.column(kind) or kind, reason))
                    continue
                if policy is not None:
                    policy.add(record)
            raise_if_empty(report, f"dataset '{attr.name}'", attr=attr, stage=own_stage)
        except TuneryError as exc:
            check.status, check.message = "error", str(exc)
            continue
        failed = policy.failed if policy is not None else 0  # rows the template cannot render
        check.total, check.valid, check.invalid = report.total, report.valid - failed, report.skipped + failed
        check.problems = ([asdict(p) for p in report.problems] + check.problems)[:max_problems]
        if policy is not None:
            policy.finish()
        if check.invalid:
            check.status = "invalid_rows"
    return results


class _Policy:
    """The processors training uses (``process_batch``, same settings), run on each record as it comes.

    Rows the template cannot render become invalid (valid + invalid == total stays true); rows the
    truncation policy cuts or drops at ``cutoff_len`` are counted; the token lengths before any cut
    give the distribution (kept as a compact int array: 4 bytes per row).
    """

    def __init__(self, check: DatasetCheck, tokenizer, template, stage: str, data_args: Any, max_problems: int,
                 media: MediaEncoder | None = None):
        settings = settings_for(data_args, stage)
        self.settings = ProcessSettings(settings.cutoff_len, settings.train_on_prompt, settings.mask_history, False)
        self.check, self.tokenizer, self.template, self.stage = check, tokenizer, template, stage
        self.data_args, self.max_problems = data_args, max_problems
        self.media = media
        self.lengths = array("l")
        self.failed = 0

    def add(self, record: dict[str, Any]) -> None:
        check = self.check
        # pt documents are split into blocks, never cut or dropped; media rows need the model's processor
        # (a text-only model fails them here, with the reason training gives)
        media = self.media if has_media(record) else None
        if stage_kind(self.stage) != "pt":
            batch = {key: [record.get(key)] for key in record_features()}
            row = process_batch(batch, stage=self.stage, tokenizer=self.tokenizer, template=self.template,
                                settings=self.settings, media=media)
            status = row["_status"][0]
            if status == FAILED:
                field_name, reason = _field_of(row["_error"][0].split(": ", 1)[-1])
                if len(check.problems) < self.max_problems:
                    check.problems.append({**record["_source"], "field": field_name, "reason": reason})
                self.failed += 1
                return
            check.truncated += status == TRUNCATED
            check.dropped += status == REPLY_CUT
        self.lengths.append(full_length(record, self.tokenizer, self.template, self.stage, media))

    def finish(self) -> None:
        check, cutoff = self.check, self.data_args.cutoff_len
        check.lengths = length_stats(list(self.lengths), cutoff)
        check.lengths.update(truncated=check.truncated, dropped=check.dropped)
        if check.truncated or check.dropped:
            note = (f"at cutoff_len={cutoff} training truncates {check.truncated} rows (reply kept, "
                    f"prompt's end kept) and drops {check.dropped} (no room for a reply)")
            check.message = f"{check.message}; {note}" if check.message else note


def _field_of(reason: str) -> tuple[str, str]:
    """(field, reason without it) from a DataError text ending "(field 'tools')"; field messages otherwise."""
    marker = " (field '"
    if reason.endswith("')") and marker in reason:
        text, tail = reason.rsplit(marker, 1)
        return tail[:-2], text
    return "messages", reason


def _natural_stage(attr) -> str:
    """The stage a dataset is shaped for, when check runs over all of dataset_info.json."""
    if attr.ranking:
        return "pairwise"
    if attr.column("kto_tag"):
        return "kto"
    if attr.formatting == "alpaca" and attr.column("prompt") == "text":
        return "pt"
    return "sft"


def trained_spans(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The decoded text as runs of ``(text, trained)``: consecutive tokens with the same trained flag."""
    out: list[tuple[str, bool]] = []
    run: list[int] = []
    trained = None
    for token, label in zip(input_ids, labels):
        is_trained = label != IGNORE_INDEX
        if trained is not None and is_trained != trained:
            out.append((tokenizer.decode(run, skip_special_tokens=False), trained))
            run = []
        run.append(token)
        trained = is_trained
    if run:
        out.append((tokenizer.decode(run, skip_special_tokens=False), bool(trained)))
    return out


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """The decoded text with each run of trained tokens wrapped in [[ ]]."""
    return "".join(_wrap(text, trained) for text, trained in trained_spans(tokenizer, input_ids, labels))


def _wrap(text: str, trained: bool) -> str:
    return f"{TRAIN_OPEN}{text}{TRAIN_CLOSE}" if trained else text


def preview_records(records: list[dict[str, Any]], tokenizer, template, stage: str,
                    settings: ProcessSettings, media: MediaEncoder | None = None) -> list[dict[str, Any]]:
    """Per example: the rendered text, the marked text, ids, labels and counts, as training sees them
    (``media``: a vision/audio model's processor expands each media placeholder, as in training)."""
    kind = stage_kind(stage)
    out = []
    for record in records:
        batch = {key: [record.get(key)] for key in record_features()}
        row = {k: v[0] for k, v in process_batch(batch, stage=stage, tokenizer=tokenizer, template=template,
                                                 settings=settings, media=media).items()}
        views = ([("chosen", row["chosen_input_ids"], row["chosen_labels"]),
                  ("rejected", row["rejected_input_ids"], row["rejected_labels"])]
                 if kind == "pairwise" else [("example", row["input_ids"], row["labels"])])
        for label, ids, labels in views:
            if kind == "unsupervised":  # labels are the reference reply, not aligned with the prompt
                labels = [IGNORE_INDEX] * len(ids)
            entry = {
                "source": record["_source"], "part": label,
                "text": tokenizer.decode(ids, skip_special_tokens=False),
                "marked_text": marked_text(tokenizer, ids, labels),
                "num_tokens": len(ids), "num_trained": sum(1 for x in labels if x != IGNORE_INDEX),
                "status": ["ok", "truncated", "reply_cut", "failed"][row["_status"]],
                "input_ids": ids, "labels": labels,
            }
            if row.get("_error"):
                entry["error"] = row["_error"]
            if kind == "unsupervised":
                entry["reference_ids"] = row["labels"]
            out.append(entry)
    return out


def preview_dataset(cfg: Any, tokenizer, template, num: int = 3, stage: str | None = None,
                    media: MediaEncoder | None = None) -> list[dict[str, Any]]:
    """The first ``num`` examples of ``cfg.data.dataset`` as training sees them (``preview_records`` entries).

    One preview for ``tunery data preview`` and the web UI. ``stage`` defaults to ``cfg.finetuning.stage``;
    pairwise stages give two entries per example (chosen, rejected). Raises ConfigError when no
    dataset is named, DataError when a dataset cannot be read.
    """
    if not cfg.data.dataset:
        raise ConfigError("preview needs a dataset", hint="set dataset (--dataset NAME) to a name in dataset_info.json")
    stage = stage or cfg.finetuning.stage
    records: list[dict[str, Any]] = []
    for attr in get_dataset_attrs(cfg.data.dataset, cfg.data.dataset_dir, cfg.data.media_dir):
        if len(records) >= num:
            break
        recs, _ = load_dataset_records(attr, stage_kind(stage), max_samples=num - len(records))
        records += recs
    return preview_records(records[:num], tokenizer, template, stage, settings_for(cfg.data, stage), media)


def render_conversation(template, messages: Any, tools: Any = None, *, add_generation_prompt: bool = False,
                        source: str | None = None) -> str:
    """The exact text ``template`` renders for OpenAI-style ``messages`` (and ``tools``).

    Messages are checked as a dataset row would be; a bad one is a DataError naming ``source``.
    """
    attr = DatasetAttr(name="render", formatting="openai", tags=dict(OPENAI_TAG_DEFAULTS))
    attr.columns["messages"], attr.columns["tools"] = "messages", "tools"
    try:
        record = convert_openai({"messages": messages, "tools": tools}, attr)
    except InvalidExample as exc:
        raise DataError(f"invalid messages: {exc.reason}", file=source, field=exc.field) from exc
    return template.render_text(record["messages"], record["tools"], add_generation_prompt=add_generation_prompt)
