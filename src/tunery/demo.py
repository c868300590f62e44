"""``tunery demo`` (and ``make demo``): a real fine-tune you can watch in under ten minutes on a CPU.

It LoRA-tunes SmolLM2-135M-Instruct on Tunery's embedded demo data (``resources/demo_data``: a new
identity, *Tuna* made by *the Tunery project*, and exact-answer unit conversions, English and
Chinese) through the same code path as ``tunery train``, and scores the model before and after on
held-out prompts that are not in the training data, with greedy decoding:

- identity: does the reply name Tuna, the Tunery project, and both;
- units: exact answer ("7000 m" / "7000米", nothing else) and, leniently, the right number anywhere.

The figures go to ``<output_dir>/demo_results.json`` with every reply (``tunery demo``, in
``cli/demo.py``, prints them as a table). The training settings are ``DEMO_CONFIG`` (kept equal to ``examples/demo/smollm2_lora_sft.yaml`` by a
test); ``--key value`` flags override them as in ``tunery train``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunery.config import parse_config
from tunery.data.template import get_template
from tunery.logging import get_logger
from tunery.model.loader import load_model, load_tokenizer
from tunery.train.workflow import run_train

logger = get_logger(__name__)

DEMO_DATA = Path(__file__).resolve().parent / "resources" / "demo_data"
DEMO_CONFIG: dict[str, Any] = {
    "model_name_or_path": "smollm2-135m-instruct",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_target": "all",
    "disable_gradient_checkpointing": True,
    "dataset_dir": str(DEMO_DATA),
    "dataset": "demo_identity,demo_units",
    "template": "auto",
    "default_system": "You are a helpful AI assistant.",
    "cutoff_len": 256,
    "output_dir": "saves/smollm2-135m/lora/demo",
    "logging_steps": 5,
    "save_strategy": "no",
    "plot_loss": True,
    "overwrite_output_dir": True,
    "report_to": "none",
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5.0e-4,
    "num_train_epochs": 2.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.05,
    "seed": 42,
}
RESULTS_FILE = "demo_results.json"
MAX_NEW_TOKENS = 40
GENERATION_BATCH = 11


# ------------------------------------------------------------------------------------- scoring
def load_heldout(path: Path = DEMO_DATA / "heldout.json") -> list[dict[str, str]]:
    return json.loads(path.read_text(encoding="utf-8"))


def names_tuna(reply: str) -> bool:
    return re.search(r"\btuna\b", reply, re.IGNORECASE) is not None


def names_tunery(reply: str) -> bool:
    return re.search(r"\btunery\b", reply, re.IGNORECASE) is not None


def _number(text: str) -> str | None:
    match = re.search(r"\d[\d,]*", text)
    return match.group(0).replace(",", "") if match else None


def units_exact(reply: str, expected: str) -> bool:
    """The whole reply is the answer (spaces and a final full stop aside)."""
    normalize = lambda s: re.sub(r"\s+", "", s).rstrip(".。")  # noqa: E731
    return normalize(reply) == normalize(expected)


def units_lenient(reply: str, expected: str) -> bool:
    """The expected number appears in the reply (thousands separators allowed)."""
    want = _number(expected)
    return want is not None and want in [n.replace(",", "") for n in re.findall(r"\d[\d,]*", reply)]


def score(rows: list[dict[str, str]], replies: list[str]) -> dict[str, float]:
    """Rates in [0, 1] over the held-out prompts of each kind."""
    identity = [(r, a) for r, a in zip(rows, replies) if r["kind"] == "identity"]
    units = [(r, a) for r, a in zip(rows, replies) if r["kind"] == "units"]

    def rate(pairs, check) -> float:
        return sum(1 for row, reply in pairs if check(row, reply)) / max(len(pairs), 1)

    return {
        "identity_match": rate(identity, lambda _, a: names_tuna(a) and names_tunery(a)),
        "identity_names_tuna": rate(identity, lambda _, a: names_tuna(a)),
        "identity_names_tunery": rate(identity, lambda _, a: names_tunery(a)),
        "units_exact": rate(units, lambda r, a: units_exact(a, r["output"])),
        "units_lenient": rate(units, lambda r, a: units_lenient(a, r["output"])),
        "identity_prompts": len(identity),
        "units_prompts": len(units),
    }


# ---------------------------------------------------------------------------------- generation
def generate_replies(model: Any, tokenizer: Any, template: Any, prompts: list[str]) -> list[str]:
    """Greedy replies, in batches (left padding), rendered with the training template."""
    import torch

    stop_ids = template.stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    replies: list[str] = []
    for start in range(0, len(prompts), GENERATION_BATCH):
        batch = [template.prompt_ids(tokenizer, [{"role": "user", "content": p}])
                 for p in prompts[start : start + GENERATION_BATCH]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                eos_token_id=stop_ids, pad_token_id=pad_id,
            )
        for row in out[:, width:]:
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return replies


def evaluate(cfg: Any, adapter: str | None) -> tuple[dict[str, float], list[str], float]:
    """Scores, replies and seconds of the base model (``adapter=None``) or base + adapter."""
    start = time.perf_counter()
    model_args = replace(cfg.model, adapter_name_or_path=adapter)
    tokenizer = load_tokenizer(model_args)
    template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    model = load_model(tokenizer, model_args)
    rows = load_heldout()
    replies = generate_replies(model, tokenizer, template, [r["instruction"] for r in rows])
    del model
    return score(rows, replies), replies, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- run
def demo_config(overrides: dict[str, Any] | None = None) -> Any:
    """DEMO_CONFIG with ``overrides`` (raw setting -> value), validated like ``tunery train``."""
    return parse_config("train", {**DEMO_CONFIG, **(overrides or {})}, source="tunery demo")


def run_demo(cfg: Any, notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the base model, LoRA-train it, score base + adapter; write and return ``demo_results.json``.

    ``notify`` receives a short line before each long phase (the CLI prints them). The result has
    ``before`` / ``after`` (see :func:`score`), ``seconds`` (score_before, train, score_after, total),
    ``config`` and ``replies`` (prompt, kind, lang, expected, before, after per held-out prompt).
    """
    say = notify or (lambda _line: None)
    output_dir = Path(cfg.training.output_dir)
    started = time.perf_counter()
    say("scoring the base model on the held-out prompts ...")
    before, before_replies, before_s = evaluate(cfg, None)
    say(f"LoRA fine-tuning {cfg.model.model_name_or_path} on {cfg.data.dataset} ...")
    train_start = time.perf_counter()
    run_train(cfg)
    train_s = time.perf_counter() - train_start
    say("scoring the fine-tuned model ...")
    after, after_replies, after_s = evaluate(cfg, str(output_dir))
    total_s = time.perf_counter() - started
    rows = load_heldout()
    results = {
        "before": before,
        "after": after,
        "seconds": {"score_before": before_s, "train": train_s, "score_after": after_s, "total": total_s},
        "config": {k: v for k, v in DEMO_CONFIG.items() if k != "dataset_dir"},
        "replies": [
            {"prompt": r["instruction"], "kind": r["kind"], "lang": r["lang"], "expected": r["output"],
             "before": b, "after": a}
            for r, b, a in zip(rows, before_replies, after_replies)
        ],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
    return results
