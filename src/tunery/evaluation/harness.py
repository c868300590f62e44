"""Run lm-evaluation-harness tasks on the model Tunery loaded (base + adapters), via lm-eval's Python API.

lm-eval is an optional extra (``pip install 'tunery[eval]'``). Its ``HFLM`` wrapper accepts an
already-loaded transformers model, so the harness scores exactly the model ``tunery eval`` built (same
dtype, quantization and merged adapters) instead of reloading it from a name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunery.errors import ConfigError, require
from tunery.logging import get_logger

logger = get_logger(__name__)

FEATURE = "harness_tasks (lm-evaluation-harness)"


def check_harness_installed() -> None:
    """Fail before the model loads when lm-eval (with its Hugging Face backend) is missing."""
    require("lm_eval", FEATURE, "eval", package="lm-eval")
    require("lm_eval.models.huggingface", FEATURE, "eval", package="lm-eval[hf]")


def parse_harness_tasks(value: str) -> list[str]:
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("harness_tasks is empty", hint="give lm-eval task names, e.g. harness_tasks: arc_easy,hellaswag")
    return tasks


def _task_manager(lm_eval: Any, task_dir: str) -> Any:
    """lm-eval's task registry, plus the YAML task files in ``task_dir`` (custom or offline tasks)."""
    folder = Path(task_dir)
    include = str(folder) if folder.is_dir() and any(folder.rglob("*.yaml")) else None
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include) if include else TaskManager()


def run_harness(cfg: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Evaluate ``harness_tasks``; write harness_results.json/.log to save_dir.

    Returns lm-eval's results, versions, n-shot... plus ``table`` (lm-eval's text table, for the caller to show)."""
    check_harness_installed()
    lm_eval = require("lm_eval", FEATURE, "eval", package="lm-eval")
    from lm_eval.models.huggingface import HFLM

    ev = cfg.evaluation
    tasks = parse_harness_tasks(ev.harness_tasks)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=ev.batch_size)
    kwargs: dict[str, Any] = {
        "model": lm,
        "tasks": tasks,
        "task_manager": _task_manager(lm_eval, ev.task_dir),
        "random_seed": ev.seed,
        "numpy_random_seed": ev.seed,
        "torch_random_seed": ev.seed,
        "fewshot_random_seed": ev.seed,
        "limit": getattr(cfg.data, "max_samples", None),
    }
    if "n_shot" in cfg.raw:  # otherwise each harness task keeps its own default number of shots
        kwargs["num_fewshot"] = ev.n_shot
    logger.info("running lm-eval tasks: %s", ", ".join(tasks))
    output = lm_eval.simple_evaluate(**kwargs)
    keep = ("results", "groups", "versions", "n-shot", "higher_is_better", "n-samples")
    results = {k: output[k] for k in keep if k in output}
    from lm_eval.utils import make_table

    table = make_table(output)
    if ev.save_dir:
        folder = Path(ev.save_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "harness_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        (folder / "harness_results.log").write_text(table + "\n", encoding="utf-8")
        logger.info("wrote harness_results.json and harness_results.log to %s", folder)
    return {**results, "table": table}
