"""Invalid examples: skipped, counted and reported with file, row and field — never silently lost.

A bad row must not crash a long run, but a user must learn about it: the first reasons are kept
and logged; ``strict: true`` turns the first one into a DataError; no valid example left is always
an error that says why (the most frequent reasons).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tunery.data.converters import ASSISTANT, FUNCTION_CALL, SYSTEM, TOOL, USER, InvalidExample, convert_row
from tunery.data.dataset_info import DatasetAttr
from tunery.errors import DataError
from tunery.logging import get_logger

logger = get_logger(__name__)

PAIRWISE_STAGES = ("rm", "dpo", "orpo", "simpo", "pairwise")
MAX_REPORTED = 5
MAX_LISTED = 100_000  # skipped rows kept for skipped_rows.jsonl (about 200 bytes each)


@dataclass
class Problem:
    file: str
    row: int
    field: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "row": self.row, "field": self.field, "reason": self.reason}

    def __str__(self) -> str:
        where = f"{self.file} row {self.row}" + (f" field '{self.field}'" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass
class ValidationReport:
    """Counts per dataset plus the first few problems, enough to find and fix the rows."""

    total: int = 0
    valid: int = 0
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    keep: int = MAX_REPORTED
    listed: list[Problem] = field(default_factory=list)  # every skipped row, up to MAX_LISTED

    def add(self, problem: Problem) -> None:
        self.skipped += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(problem)
        self.reasons[re.sub(r"\d+", "N", problem.reason)] += 1  # "message N is ..." counts as one reason
        if len(self.problems) < self.keep:
            self.problems.append(problem)

    def merge(self, other: ValidationReport) -> None:
        self.total += other.total
        self.valid += other.valid
        self.skipped += other.skipped
        self.reasons.update(other.reasons)
        self.problems.extend(other.problems[: max(0, self.keep - len(self.problems))])
        self.listed.extend(other.listed[: max(0, MAX_LISTED - len(self.listed))])

    def summary(self) -> str:
        lines = [f"skipped {self.skipped} of {self.total} examples as invalid; first problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def check_record(record: dict[str, Any], stage: str) -> tuple[str, str] | None:
    """What the stage needs from a canonical record: (reason, field) when it is not there."""
    messages = record["messages"]
    turns = [m for m in messages if m["role"] != SYSTEM]
    if stage == "pt":
        if not any(m["content"].strip() for m in turns):
            return "the text is empty", "messages"
        return None
    if not turns:
        return "there is no user message", "messages"
    if turns[0]["role"] not in (USER, TOOL):
        return "the conversation must start with a user message", "messages"
    if stage in PAIRWISE_STAGES:
        if record.get("chosen") is None or record.get("rejected") is None:
            return "a preference example needs chosen and rejected replies (set ranking: true)", "chosen"
        if turns[-1]["role"] not in (USER, TOOL):
            return "the conversation before chosen/rejected must end with a user turn", "messages"
        if not record["chosen"]["content"].strip():
            return "the chosen reply is empty", "chosen"
        if not record["rejected"]["content"].strip():
            return "the rejected reply is empty", "rejected"
        return None
    if stage == "kto" and record.get("kto_tag") is None:
        return "a KTO example needs a kto_tag (true/false)", "kto_tag"
    if stage == "unsupervised":  # prediction: a prompt, and optionally the reference reply last
        return None
    if turns[-1]["role"] not in (ASSISTANT, FUNCTION_CALL):
        return "the conversation must end with an assistant reply", "messages"
    if not turns[-1]["content"].strip():
        return "the last assistant reply is empty", "messages"
    return None


def convert_rows(rows: Iterable[dict[str, Any]], attr: DatasetAttr, file: str, stage: str, *,
                 strict: bool = False, report: ValidationReport | None = None,
                 start: int = 0) -> list[dict[str, Any]]:
    """Convert and validate raw rows; invalid ones go into ``report`` (or raise when ``strict``)."""
    report = report if report is not None else ValidationReport()
    records = []
    for index, row in enumerate(rows, start=start):
        report.total += 1
        record, problem = convert_one(row, attr, file, index, stage)
        if problem is not None:
            if strict:
                raise DataError(f"invalid example: {problem.reason}", file=problem.file, row=problem.row,
                                field=problem.field, hint="fix the row, or drop strict: true to skip invalid rows")
            report.add(problem)
            continue
        report.valid += 1
        records.append(record)
    return records


def convert_one(row: dict[str, Any], attr: DatasetAttr, file: str, index: int,
                stage: str) -> tuple[dict[str, Any] | None, Problem | None]:
    try:
        record = convert_row(row, attr, file, index)
    except InvalidExample as exc:
        return None, Problem(file, index, exc.field, exc.reason)
    failure = check_record(record, stage)
    if failure is not None:
        return None, Problem(file, index, column_of(failure[1], failure[0], attr), failure[0])
    return record, None


def column_of(name: str, reason: str, attr: DatasetAttr) -> str:
    """The dataset's own column for a canonical field, so the report names what the user can fix
    (alpaca: ``output`` for a missing reply, ``instruction`` for a missing prompt)."""
    if name in ("chosen", "rejected", "kto_tag"):
        return attr.column(name) or name
    if name != "messages":
        return name
    if attr.formatting == "alpaca":
        key = "response" if ("reply" in reason or "assistant" in reason) else "prompt"
        return attr.column(key) or name
    return attr.column("messages") or name


def problem_from_error(text: str) -> Problem:
    """A Problem from a processor's ``_error`` text ("FILE row N: reason (field 'f')")."""
    match = re.match(r"^(?P<file>.*) row (?P<row>-?\d+|\?): (?P<reason>.*)$", text, re.S)
    if not match:
        return Problem("?", -1, None, text)
    reason, name = match["reason"], None
    tail = re.search(r" \(field '([^']*)'\)$", reason)
    if tail:
        reason, name = reason[: tail.start()], tail[1]
    row = int(match["row"]) if match["row"] != "?" else -1
    return Problem(match["file"], row, name, reason)


def write_problems(path: str, problems: Iterable[Problem]) -> int:
    """Write one JSON object per skipped row (file, row, field, reason); returns how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for problem in problems:
            f.write(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


_PAIRWISE = ("rm", "dpo", "orpo", "simpo", "pairwise")


def stage_hint(attr: DatasetAttr | None, stage: str | None) -> str:
    """What to change when no row of ``attr`` is valid for ``stage``: the stage, when the dataset is
    shaped for another one (preference pairs, plain text), else its dataset_info.json entry."""
    default = "check the dataset's formatting/columns/tags in dataset_info.json and the stage you train"
    if attr is None or stage is None:
        return default
    if attr.ranking and stage not in _PAIRWISE:
        return (f"'{attr.name}' is a preference dataset (ranking: true in dataset_info.json): train it with "
                f"stage rm, dpo, orpo or simpo (tunery data check: --stage dpo), not {stage}")
    if not attr.ranking and stage in _PAIRWISE:
        return (f"stage {stage} trains on preference pairs: the dataset_info.json entry of '{attr.name}' needs "
                "ranking: true and its chosen/rejected columns")
    if attr.formatting == "alpaca" and attr.column("prompt") == "text" and stage != "pt":
        return f"'{attr.name}' is plain text (columns prompt: text): train it with stage pt, not {stage}"
    return default


def raise_if_empty(report: ValidationReport, what: str, *, attr: DatasetAttr | None = None,
                   stage: str | None = None) -> None:
    """No valid example left is an error that says why, with the most frequent reasons; with ``attr``
    and ``stage`` its hint names the stage the dataset is shaped for (:func:`stage_hint`)."""
    if report.valid:
        return
    if report.total == 0:
        raise DataError(f"{what} has no examples", hint="check file_name and that the file is not empty")
    common = "; ".join(f"{reason} ({n}x)" for reason, n in report.reasons.most_common(3))
    first = f" First: {report.problems[0]}." if report.problems else ""
    raise DataError(f"{what}: none of the {report.total} examples is valid: {common}.{first}",
                    hint=stage_hint(attr, stage))


def log_report(report: ValidationReport, what: str) -> None:
    if report.skipped:
        logger.warning("%s: %s", what, report.summary())
