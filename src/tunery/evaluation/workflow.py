"""``tunery eval``: load the task and the model (base + adapters), score every question, report.

The order matters for the user: the task is read before the model, so a wrong task name or a
malformed CSV fails in a second rather than after loading the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tunery import runlog
from tunery.errors import ConfigError, ResourceError
from tunery.evaluation.encoding import PromptEncoder, make_encoder
from tunery.evaluation.harness import check_harness_installed, run_harness
from tunery.evaluation.prompts import build_prompt, get_style, select_shots
from tunery.evaluation.results import aggregate, format_table, write_results
from tunery.evaluation.scorer import score_prompts
from tunery.evaluation.tasks import LETTERS, Task, load_task
from tunery.logging import get_logger
from tunery.model.loader import load_model, load_tokenizer

logger = get_logger(__name__)


def _check_save_dir(save_dir: str | None) -> None:
    if save_dir and (Path(save_dir) / "results.json").exists():
        raise ResourceError(
            f"{save_dir} already holds results.json from an earlier evaluation",
            hint="choose another save_dir, or delete that folder to evaluate again",
        )


def build_requests(task: Task, encoder: PromptEncoder, lang: str, n_shot: int, cutoff_len: int | None) -> list[dict]:
    """One record per question: the prompt text and ids (shots dropped from the front until the prompt
    fits ``cutoff_len``, as the MMLU reference code does) and what the report needs about it."""
    requests = []
    shortened = 0
    for subject in task.subjects:
        for question in subject.questions:
            shots = select_shots(subject.shots, question, n_shot)
            while True:
                raw = build_prompt(subject.name, shots, question, lang)
                text, ids = encoder.encode(raw)
                if not shots or cutoff_len is None or len(ids) <= cutoff_len:
                    break
                shots = shots[1:]
            shortened += len(shots) < min(n_shot, len(subject.shots))
            requests.append(
                {
                    "subject": subject.key,
                    "subject_name": subject.name,
                    "category": subject.category,
                    "question": question,
                    "n_shot": len(shots),
                    "raw": raw,
                    "prompt": text,
                    "ids": ids,
                }
            )
    if shortened:
        logger.warning("%d prompts were longer than cutoff_len (%s): they use fewer shots", shortened, cutoff_len)
    return requests


def run_mc_eval(cfg: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Score the task of ``cfg.evaluation`` with a loaded model; returns the results (see ``results.aggregate``,
    plus ``settings``) and writes them to ``save_dir`` when set. ``results.format_table`` shows them."""
    ev = cfg.evaluation
    task = load_task(
        ev.task, ev.task_dir, ev.split, n_shot=ev.n_shot, max_samples=getattr(cfg.data, "max_samples", None)
    )
    if task.num_questions == 0:
        raise ConfigError(f"task '{task.name}' ({task.split}) has no questions", hint=f"check the CSV files in {task.folder}")
    style = get_style(ev.lang)
    encoder = make_encoder(cfg.data.template, tokenizer, cfg.data, style)
    requests = build_requests(task, encoder, ev.lang, ev.n_shot, getattr(cfg.data, "cutoff_len", None))
    width = max(len(r["question"].choices) for r in requests)
    letters = LETTERS[:width]
    letter_ids = encoder.letter_ids(letters, requests[0]["raw"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logger.info(
        "scoring %d questions of %s (%s split, %d subjects), %d-shot, template %s",
        len(requests), task.name, task.split, len(task.subjects), ev.n_shot, encoder.name,
    )
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r["subject"], []).append(i)
    on_progress = None
    if ev.save_dir:  # questions scored so far, as run-log rows the web UI and scripts can follow
        runlog.remove(ev.save_dir)
        on_progress = runlog.ProgressWriter(ev.save_dir, len(requests), "eval")
    scores = score_prompts(
        model,
        [r["ids"] for r in requests],
        letter_ids,
        batch_size=ev.batch_size,
        pad_id=pad_id,
        groups=list(groups.values()),
        progress=True,
        on_progress=on_progress,
    )
    records = [_record(r, s, letters) for r, s in zip(requests, scores)]
    results = aggregate(records)
    results["settings"] = {
        "task": task.name,
        "split": task.split,
        "task_folder": str(task.folder),
        "n_shot": ev.n_shot,
        "lang": ev.lang,
        "template": encoder.name,
        "model": cfg.model.model_name_or_path,
        "adapters": cfg.model.adapters,
        "batch_size": ev.batch_size,
        "seed": ev.seed,
        "letter_token_ids": list(letter_ids),
    }
    if ev.save_dir:
        folder = write_results(ev.save_dir, results, format_table(results), records)
        logger.info("wrote results.json, results.log and predictions.jsonl to %s", folder)
    return results


def _record(request: dict, score: Any, letters: str) -> dict[str, Any]:
    """The predictions.jsonl line of one question; a question with fewer choices than the widest one
    is decided among its own letters only."""
    question = request["question"]
    used = letters[: len(question.choices)]
    token_probs = score.token_probs[: len(used)]
    total = sum(token_probs) or 1.0
    predicted = used[max(range(len(used)), key=lambda k: token_probs[k])]
    return {
        "subject": request["subject"],
        "subject_name": request["subject_name"],
        "category": request["category"],
        "file": question.file,
        "row": question.row,
        "n_shot": request["n_shot"],
        "prompt": request["prompt"],
        "question": question.question,
        "choices": dict(zip(used, question.choices)),
        "gold": question.answer,
        "predicted": predicted,
        "correct": predicted == question.answer,
        "probabilities": {k: round(p / total, 6) for k, p in zip(used, token_probs)},
        "token_probabilities": dict(zip(used, token_probs)),
    }


def run_eval(cfg: Any) -> dict[str, Any]:
    """Everything ``tunery eval`` does: our task (``task``) and/or lm-eval tasks (``harness_tasks``).

    Returns our task's results (empty without ``task``), with lm-eval's under ``harness`` (its text
    table under ``harness["table"]``); prints nothing."""
    ev = cfg.evaluation  # task or harness_tasks, n_shot and batch_size: checked by parse_config
    _check_save_dir(ev.save_dir)
    if ev.task:  # read the task before the model: a typo fails in a second
        load_task(ev.task, ev.task_dir, ev.split, n_shot=ev.n_shot, max_samples=1)
    if ev.harness_tasks:
        check_harness_installed()
    from transformers import set_seed

    set_seed(ev.seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=False)
    results: dict[str, Any] = {}
    if ev.task:
        results = run_mc_eval(cfg, model, tokenizer)
    if ev.harness_tasks:
        results["harness"] = run_harness(cfg, model, tokenizer)
    return results
