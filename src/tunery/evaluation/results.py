"""Accuracy per subject, per category and on average; the table, results.json, results.log and the
per-question predictions.jsonl.

Category and average accuracies are micro averages (correct answers / questions over every question
in the group), so a subject weighs as much as it has questions, as in MMLU's and C-Eval's reports.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunery.evaluation.tasks import CATEGORIES


def _accuracy(correct: int, total: int) -> float:
    return 100.0 * correct / total if total else 0.0


def aggregate(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold per-question records (``subject``, ``subject_name``, ``category``, ``correct``) into
    ``{"average", "num_questions", "categories": {...}, "subjects": {...}}``; accuracies in percent."""
    subjects: dict[str, dict[str, Any]] = {}
    for rec in records:
        entry = subjects.setdefault(
            rec["subject"],
            {"name": rec.get("subject_name", rec["subject"]), "category": rec["category"], "correct": 0, "total": 0},
        )
        entry["correct"] += int(bool(rec["correct"]))
        entry["total"] += 1
    categories: dict[str, dict[str, Any]] = {}
    present = {e["category"] for e in subjects.values()}
    for name in [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES)):
        members = [e for e in subjects.values() if e["category"] == name]
        correct, total = sum(e["correct"] for e in members), sum(e["total"] for e in members)
        categories[name] = {"accuracy": _accuracy(correct, total), "correct": correct, "total": total}
    for entry in subjects.values():
        entry["accuracy"] = _accuracy(entry["correct"], entry["total"])
    correct = sum(e["correct"] for e in subjects.values())
    total = sum(e["total"] for e in subjects.values())
    return {
        "average": _accuracy(correct, total),
        "correct": correct,
        "num_questions": total,
        "categories": categories,
        "subjects": dict(sorted(subjects.items())),
    }


def _width(text: str) -> int:
    """Terminal columns of ``text``: CJK characters take two (str.ljust would misalign them)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def format_table(results: Mapping[str, Any], *, with_subjects: bool = True) -> str:
    """A fixed-width text table: average, each category, then each subject."""
    rows = [("Average", results["average"], results["correct"], results["num_questions"])]
    rows += [(name, c["accuracy"], c["correct"], c["total"]) for name, c in results["categories"].items()]
    if with_subjects:
        rows += [
            (f"  {s['name']} ({s['category']})", s["accuracy"], s["correct"], s["total"])
            for s in results["subjects"].values()
        ]
    width = max(len("Group"), *(_width(r[0]) for r in rows))
    lines = [f"{_pad('Group', width)}  {'Accuracy':>8}  {'Correct':>9}", "-" * (width + 21)]
    for i, (name, acc, correct, total) in enumerate(rows):
        lines.append(f"{_pad(name, width)}  {acc:8.2f}  {f'{correct}/{total}':>9}")
        if i == len(results["categories"]):
            lines.append("-" * (width + 21))
    return "\n".join(lines)


def write_results(save_dir: str | Path, results: Mapping[str, Any], table: str, records: Iterable[Mapping[str, Any]]) -> Path:
    """results.json (numbers and settings), results.log (the table) and predictions.jsonl."""
    folder = Path(save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "results.log").write_text(table + "\n", encoding="utf-8")
    with (folder / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return folder
