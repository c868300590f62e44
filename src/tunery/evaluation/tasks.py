"""Find a multiple-choice task and read its questions from the public MMLU / C-Eval / CMMLU CSV layout.

A task is a folder (documented in docs/eval.md)::

    <task_dir>/<task>/mapping.json             optional: {subject: {"name": ..., "category": ...}}
    <task_dir>/<task>/dev/<subject>_dev.csv    few-shot examples (or dev/<subject>.csv)
    <task_dir>/<task>/val/<subject>_val.csv    the "validation" split (val/ or validation/)
    <task_dir>/<task>/test/<subject>_test.csv

or flat, the CSV files side by side as MMLU's archive holds them once unpacked into one folder:
``<task_dir>/<task>/<subject>_dev.csv``, ``<subject>_val.csv``, ``<subject>_test.csv``.

The CSV files are read exactly as the benchmarks publish them: MMLU's have no header (question,
choices..., answer); C-Eval's (``id,question,A,B,C,D,answer,explanation``) and CMMLU's
(``,Question,A,B,C,D,Answer``) have one. The stdlib ``csv`` module reads them: ``datasets``' CSV
loader would take MMLU's first question for a header.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunery.errors import ConfigError, DataError
from tunery.evaluation.hub_tasks import HUB_TASKS, download_task
from tunery.evaluation.layout import (
    LETTERS,
    SPLIT_FOLDERS,
    SPLITS,
    has_split,
    packaged_tasks_dir,
    read_mapping,
    split_files,
)
from tunery.logging import get_logger

logger = get_logger(__name__)

CATEGORIES = ("STEM", "Social Sciences", "Humanities", "Other")
_CATEGORY_ALIASES = {
    "stem": "STEM",
    "social science": "Social Sciences",
    "social sciences": "Social Sciences",
    "humanities": "Humanities",
    "other": "Other",
    "others": "Other",
}


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: str | None  # gold letter; None where the benchmark keeps it secret (C-Eval test)
    file: str = ""
    row: int = 0


@dataclass
class Subject:
    key: str  # file name stem, e.g. abstract_algebra
    name: str  # shown in the prompt, e.g. "abstract algebra"
    category: str
    questions: list[Question] = field(default_factory=list)
    shots: list[Question] = field(default_factory=list)


@dataclass
class Task:
    name: str
    split: str
    folder: Path
    subjects: list[Subject]

    @property
    def num_questions(self) -> int:
        return sum(len(s.questions) for s in self.subjects)


def parse_task_name(task: str, split: str | None = None) -> tuple[str, str]:
    """``mmlu_test`` -> (``mmlu``, ``test``); an explicit ``split`` wins over the suffix."""
    name, _, suffix = task.rpartition("_")
    if name and suffix.lower() in SPLITS:
        task, implied = name, SPLITS[suffix.lower()]
    else:
        implied = "test"
    if split is not None:
        if split.lower() not in SPLITS:
            raise ConfigError(f"unknown split '{split}'", hint="use test, validation (val) or dev")
        implied = SPLITS[split.lower()]
    return task, implied


def find_task_folder(task: str, task_dir: str) -> Path | None:
    """A local folder (the task itself, or ``task_dir/task``), else Tunery's packaged one."""
    direct = Path(os.path.expanduser(task))
    if direct.is_dir():
        return direct
    for root in (Path(os.path.expanduser(task_dir)), packaged_tasks_dir()):
        if (root / task).is_dir():
            return root / task
    return None


def available_tasks(task_dir: str) -> list[str]:
    names: set[str] = set()
    for root in (Path(os.path.expanduser(task_dir)), packaged_tasks_dir()):
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir())
    return sorted(names)


def normalize_category(category: str | None) -> str:
    if not category:
        return "Other"
    return _CATEGORY_ALIASES.get(category.strip().lower(), category.strip())


def _layout(header: list[str]) -> tuple[int, list[int], int | None, bool]:
    """(question column, choice columns, answer column, has header) for a CSV's first row."""
    cells = [c.strip() for c in header]
    lowered = [c.lower() for c in cells]
    if "question" in lowered:
        choice_cols = [i for i, c in enumerate(cells) if len(c) == 1 and c.upper() in LETTERS]
        answer = lowered.index("answer") if "answer" in lowered else None
        return lowered.index("question"), choice_cols, answer, True
    # MMLU: no header, question, then the choices, then the answer letter.
    return 0, list(range(1, len(cells) - 1)), len(cells) - 1, False


def read_questions(path: Path, subject: str) -> list[Question]:
    """Every question of one subject CSV, checked: enough choices, answer among the letters."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return []
    q_col, choice_cols, a_col, has_header = _layout(rows[0])
    if len(choice_cols) < 2:
        raise DataError(
            "cannot find the choice columns",
            file=str(path),
            row=1,
            hint="use MMLU's layout (question, A, B, C, D, answer; no header) or a header with question,A,B,C,D,answer",
        )
    letters = LETTERS[: len(choice_cols)]
    questions = []
    for line, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) <= max(choice_cols + [q_col] + ([a_col] if a_col is not None else [])):
            raise DataError(f"expected at least {max(choice_cols) + 1} columns, got {len(row)}", file=str(path), row=line)
        answer = row[a_col].strip().upper() if a_col is not None else ""
        if answer and answer not in letters:
            raise DataError(
                f"answer '{row[a_col]}' is not one of {', '.join(letters)}", file=str(path), row=line, field="answer"
            )
        questions.append(
            Question(
                subject=subject,
                question=row[q_col].strip(),
                choices=tuple(row[i].strip() for i in choice_cols),
                answer=answer or None,
                file=str(path),
                row=line,
            )
        )
    return questions


def load_task(
    task: str,
    task_dir: str = "evaluation",
    split: str | None = None,
    *,
    n_shot: int = 0,
    max_samples: int | None = None,
) -> Task:
    """Read ``task`` (``mmlu_test``, ``ceval_validation``, a folder...) with ``n_shot`` dev examples."""
    name, split = parse_task_name(task, split)
    folder = find_task_folder(name, task_dir)
    if folder is None or not has_split(folder, split):
        if name in HUB_TASKS:
            folder = download_task(name, split, need_dev=n_shot > 0)
        elif folder is None:
            raise DataError(
                f"evaluation task '{name}' not found in task_dir '{task_dir}' nor among Tunery's tasks",
                hint=f"available: {', '.join(available_tasks(task_dir)) or 'none'}; or give a task folder "
                "laid out as docs/eval.md describes (mapping.json, dev/, val/, test/ with one CSV per subject)",
            )
    test_files = split_files(folder, split)
    if not test_files:
        sub = SPLIT_FOLDERS[split][0]
        raise DataError(
            f"task '{name}' has no '{split}' split",
            file=str(folder),
            hint=f"expected CSV files in {folder}/{sub}/ or named {folder}/<subject>_{sub}.csv; "
            "set split (test, validation, dev)",
        )
    dev_files = split_files(folder, "dev") if n_shot > 0 else {}
    if n_shot > 0 and not dev_files:
        raise DataError(
            f"n_shot is {n_shot} but task '{name}' has no dev split to take examples from",
            file=str(folder),
            hint="add dev/<subject>_dev.csv (or <subject>_dev.csv) files, or set n_shot: 0",
        )
    # a local copy of a known benchmark (e.g. MMLU's data.tar unpacked) gets Tunery's subject mapping
    mapping = read_mapping(folder) or read_mapping(packaged_tasks_dir() / name)
    subjects = []
    unmapped = []
    for key, path in test_files.items():
        info = mapping.get(key, {})
        if mapping and not info:
            unmapped.append(key)
        questions = read_questions(path, key)
        if max_samples is not None:
            questions = questions[:max_samples]
        shots: list[Question] = []
        if n_shot > 0:
            if key not in dev_files:
                raise DataError(
                    f"subject '{key}' has no dev file for its {n_shot} examples",
                    file=str(folder),
                    hint=f"add {key}_dev.csv beside the other dev files, or set n_shot: 0",
                )
            shots = read_questions(dev_files[key], key)
        subjects.append(
            Subject(
                key=key,
                name=info.get("name") or key.replace("_", " "),
                category=normalize_category(info.get("category")),
                questions=questions,
                shots=shots,
            )
        )
    if unmapped:
        logger.warning("subjects missing from %s/mapping.json count as 'Other': %s", folder, ", ".join(unmapped))
    unanswered = [q for s in subjects for q in s.questions if q.answer is None]
    if unanswered:
        raise DataError(
            f"{len(unanswered)} questions of the '{split}' split have no answer to score against",
            file=unanswered[0].file,
            row=unanswered[0].row,
            field="answer",
            hint="C-Eval keeps its test answers secret: evaluate ceval_validation instead",
        )
    return Task(name=name, split=split, folder=folder, subjects=subjects)
