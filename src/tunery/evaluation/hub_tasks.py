"""Fetch MMLU, C-Eval and CMMLU from the Hugging Face Hub into the local task layout (once, cached).

C-Eval and CMMLU publish a zip of the very CSV files our layout reads, so we download and unpack it
(``huggingface_hub``). MMLU's hub copy (``cais/mmlu``) is parquet per subject, so ``datasets`` loads
it and we write it out as CSV. Either way the result is a normal task folder under
``~/.cache/tunery/eval_tasks/<task>``, read by the same code as a local one, and reused offline.
"""

from __future__ import annotations

import csv
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunery.errors import DataError
from tunery.evaluation.layout import LETTERS, SPLIT_FOLDERS, has_split, packaged_tasks_dir, read_mapping
from tunery.hub import cache_root
from tunery.logging import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class HubTask:
    repo_id: str
    archive: str | None = None  # a zip of dev/ val/ test/ CSV folders; None: parquet per subject
    hub_splits: tuple[tuple[str, str], ...] = ()  # our split -> the hub config's split name


HUB_TASKS: dict[str, HubTask] = {
    "mmlu": HubTask("cais/mmlu", hub_splits=(("test", "test"), ("validation", "validation"), ("dev", "dev"))),
    "ceval": HubTask("ceval/ceval-exam", archive="ceval-exam.zip"),
    "cmmlu": HubTask("haonan-li/cmmlu", archive="cmmlu_v1_0_1.zip"),
}


def hub_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def cache_folder(name: str) -> Path:
    return cache_root() / "eval_tasks" / name


def download_task(name: str, split: str, *, need_dev: bool) -> Path:
    """The cached task folder of hub benchmark ``name``, downloading what ``split`` needs."""
    folder = cache_folder(name)
    if has_split(folder, split) and (not need_dev or has_split(folder, "dev")):
        return folder
    spec = HUB_TASKS[name]
    if hub_offline():
        raise DataError(
            f"task '{name}' is not on this machine and the hub is offline (HF_HUB_OFFLINE is set)",
            hint=f"download {spec.repo_id} where there is internet and put its CSV files in "
            f"<task_dir>/{name}/ (dev/, val/, test/; see docs/eval.md), or unset HF_HUB_OFFLINE",
        )
    folder.mkdir(parents=True, exist_ok=True)
    mapping = packaged_tasks_dir() / name / "mapping.json"
    if mapping.is_file():
        shutil.copyfile(mapping, folder / "mapping.json")
    try:
        if spec.archive:
            _fetch_archive(spec, folder)
        else:
            subjects = sorted(read_mapping(folder))
            for ours, theirs in spec.hub_splits:
                if ours == split or (need_dev and ours == "dev"):
                    _fetch_parquet_split(spec, subjects, ours, theirs, folder)
    except DataError:
        raise
    except Exception as exc:  # network, auth and hub errors come in many types; all mean "could not fetch"
        raise DataError(
            f"could not download task '{name}' from {spec.repo_id}: {type(exc).__name__}: {exc}",
            hint="check the network (or HF_ENDPOINT for a mirror), or put the CSV files in "
            f"<task_dir>/{name}/ as docs/eval.md describes",
        ) from exc
    return folder


def _fetch_archive(spec: HubTask, folder: Path) -> None:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(spec.repo_id, spec.archive, repo_type="dataset")
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            parts = Path(member.filename).parts
            # keep only <split>/<subject>.csv, wherever the zip nests them
            if member.is_dir() or len(parts) < 2 or not parts[-1].endswith(".csv"):
                continue
            target = folder / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    logger.info("unpacked %s from %s into %s", spec.archive, spec.repo_id, folder)


def _fetch_parquet_split(spec: HubTask, subjects: list[str], ours: str, theirs: str, folder: Path) -> None:
    from datasets import load_dataset

    sub = SPLIT_FOLDERS[ours][0]
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        dataset = load_dataset(spec.repo_id, name=subject, split=theirs)
        write_csv(folder / sub / f"{subject}_{sub}.csv", normalize_rows(dataset))
    logger.info("downloaded %d subjects of %s (%s) into %s", len(subjects), spec.repo_id, theirs, folder)


def normalize_rows(rows: Any) -> list[tuple[str, list[str], str]]:
    """(question, choices, answer letter) from either hub shape: ``choices`` list + int answer
    (cais/mmlu) or ``A``..``D`` columns + letter answer (C-Eval, CMMLU)."""
    out = []
    for row in rows:
        lower = {str(k).lower(): v for k, v in row.items()}
        if "choices" in lower:
            choices = [str(c) for c in lower["choices"]]
            answer = lower["answer"]
            letter = LETTERS[answer] if isinstance(answer, int) else str(answer).strip().upper()
        else:
            choices = [str(row[k]) for k in LETTERS if k in row]
            letter = str(lower.get("answer", "")).strip().upper()
        out.append((str(lower["question"]), choices, letter))
    return out


def write_csv(path: Path, rows: list[tuple[str, list[str], str]]) -> None:
    """Write rows with a ``question,A,B,...,answer`` header (the C-Eval style our reader accepts)."""
    width = max((len(c) for _, c, _ in rows), default=4)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", *LETTERS[:width], "answer"])
        for question, choices, answer in rows:
            writer.writerow([question, *choices, answer])
