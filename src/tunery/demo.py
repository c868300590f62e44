"""``tunery demo`` (and ``make demo``): a real fine-tune you can watch in under ten minutes on a CPU.

It LoRA-tunes SmolLM2-135M-Instruct on Tunery's embedded demo data (``resources/demo_data``: a new
identity, *Tuna* made by *the Tunery project*, and exact-answer unit conversions, English and
Chinese) through the same code path as ``tunery train``, and scores the model before and after on
held-out prompts that are not in the training data, with greedy decoding:

- identity: does the reply name Tuna, the Tunery project, and both;
- units: exact answer ("7000 m" / "7000米", nothing else) and the right value in the right unit
  (the number the reply states in that unit must equal the expected one: 2600 mm for 26 cm is a miss).

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
from decimal import Decimal
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


def _names(word: str, reply: str) -> bool:
    """``word`` as a whole word; Chinese characters right next to it count as a boundary (我是Tuna，)."""
    return re.search(rf"(?<![A-Za-z0-9]){word}(?![A-Za-z0-9])", reply, re.IGNORECASE) is not None


def names_tuna(reply: str) -> bool:
    return _names("tuna", reply)


def names_tunery(reply: str) -> bool:
    return _names("tunery", reply)


# Every spelling of the demo's units, in English and Chinese, to one symbol.
UNIT_NAMES: dict[str, str] = {
    "km": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km", "公里": "km", "千米": "km",
    "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m", "米": "m",
    "cm": "cm", "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm", "厘米": "cm",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm", "毫米": "mm",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "千克": "kg", "公斤": "kg",
    "g": "g", "gram": "g", "grams": "g", "克": "g",
    "l": "L", "liter": "L", "liters": "L", "litre": "L", "litres": "L", "升": "L",
    "ml": "mL", "milliliter": "mL", "milliliters": "mL", "millilitre": "mL", "millilitres": "mL", "毫升": "mL",
}
_UNIT = "|".join(sorted((re.escape(u) for u in UNIT_NAMES), key=len, reverse=True))
_QUANTITY = re.compile(rf"(?<![\d.,])(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?\s*(?:({_UNIT})(?![A-Za-z]))?", re.IGNORECASE)


def quantities(text: str) -> list[tuple[Decimal, str | None]]:
    """Every number in ``text`` with the unit written right after it (or None): ``"7,000 m"`` ->
    ``[(Decimal('7000'), 'm')]``; ``"260毫米"`` -> ``[(Decimal('260'), 'mm')]``. Exact decimals, no rounding."""
    found = []
    for whole, frac, unit in _QUANTITY.findall(text):
        value = Decimal(whole.replace(",", "") + (frac or ""))
        found.append((value, UNIT_NAMES[unit.lower()] if unit else None))
    return found


def units_exact(reply: str, expected: str) -> bool:
    """The whole reply is the answer (spaces and a final full stop aside)."""
    normalize = lambda s: re.sub(r"\s+", "", s).rstrip(".。")  # noqa: E731
    return normalize(reply) == normalize(expected)


def units_value(reply: str, expected: str) -> bool:
    """The reply's answer has exactly the expected value in the expected unit.

    The answer is the last quantity in the reply written in the expected unit ("26 cm is 260 mm" ->
    260 mm); a different number is a miss (2600 mm for 26 cm), and so is a reply that never names
    the unit. Units are compared by meaning: mm, millimetres and 毫米 are one unit.
    """
    wanted = quantities(expected)
    if len(wanted) != 1 or wanted[0][1] is None:
        raise ValueError(f"expected answer {expected!r} is not one number with a unit")
    value, unit = wanted[0]
    stated = [v for v, u in quantities(reply) if u == unit]
    return bool(stated) and stated[-1] == value


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
        "units_value": rate(units, lambda r, a: units_value(a, r["output"])),
        "identity_prompts": len(identity),
        "units_prompts": len(units),
    }


# ---------------------------------------------------------------------------------- generation
def generate_replies(model: Any, tokenizer: Any, template: Any, prompts: list[str],
                     on_batch: Callable[[int, int, int, float], None] | None = None) -> list[str]:
    """Greedy replies, in batches (left padding), rendered with the training template.

    ``on_batch(done, total, tokens, seconds)`` is called after each batch: replies done so far,
    prompts in all, reply tokens generated so far (end-of-turn included), seconds since the start.
    """
    import torch

    stop_ids = template.stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    replies: list[str] = []
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(prompts), GENERATION_BATCH):
        batch = [template.prompt_ids(tokenizer, [{"role": "user", "content": p}])
                 for p in prompts[first : first + GENERATION_BATCH]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                eos_token_id=stop_ids, pad_token_id=pad_id,
            )
        for row in out[:, width:].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
            tokens += end
            replies.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
        if on_batch is not None:
            on_batch(len(replies), len(prompts), tokens, time.perf_counter() - start)
    return replies


def evaluate(cfg: Any, adapter: str | None, on_batch: Callable[[int, int, int, float], None] | None = None,
             ) -> tuple[dict[str, float], list[str], float]:
    """Scores, replies and seconds of the base model (``adapter=None``) or base + adapter."""
    start = time.perf_counter()
    model_args = replace(cfg.model, adapter_name_or_path=adapter)
    tokenizer = load_tokenizer(model_args)
    template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    model = load_model(tokenizer, model_args)
    rows = load_heldout()
    replies = generate_replies(model, tokenizer, template, [r["instruction"] for r in rows], on_batch)
    del model
    return score(rows, replies), replies, time.perf_counter() - start


# -------------------------------------------------------------------------------------- report
TABLE_FILE = "demo_table.md"
README_START = "<!-- demo-table:start (written by scripts/update_readme_demo.py from demo_table.md) -->"
README_END = "<!-- demo-table:end -->"
TABLE_ROWS = [
    ("identity: the reply names Tuna and the Tunery project", "identity_match", "identity_prompts"),
    ("units: exact answer, nothing else", "units_exact", "units_prompts"),
    ("units: the right value in the right unit", "units_value", "units_prompts"),
]


def machine_state() -> dict[str, Any]:
    """What the demo's time depends on: device, CPU cores, torch threads, load average at the start."""
    import os
    import platform

    import torch

    state: dict[str, Any] = {"device": "cpu", "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        state["device"] = torch.cuda.get_device_name(0)
    try:
        state["load_average_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on this platform
        pass
    return state


def markdown_table(results: dict[str, Any]) -> str:
    """The before/after table and one line on time and machine, as markdown (README's demo section)."""
    before, after, seconds = results["before"], results["after"], results["seconds"]
    lines = ["| held-out prompts | before | after |", "|---|---|---|"]
    for label, key, count in TABLE_ROWS:
        lines.append(f"| {label} ({before[count]}) | {before[key]:.0%} | {after[key]:.0%} |")
    machine = results.get("machine") or {}
    where = machine.get("device", "cpu")
    if where == "cpu":
        where = f"CPU ({machine.get('cpu_cores', '?')} cores, {machine.get('torch_threads', '?')} torch threads)"
    load = machine.get("load_average_1min")
    load_text = f", load average {load} at the start" if load is not None else ""
    total = int(round(seconds["total"]))
    lines += ["", f"Measured by `make demo` on {results.get('date', '?')}: {where}{load_text}; "
              f"{total // 60} min {total % 60} s in all (scoring before {seconds['score_before']:.0f} s, "
              f"training {seconds['train']:.0f} s, scoring after {seconds['score_after']:.0f} s). "
              "Scoring includes loading the model (a first run also converts the GGUF file once); "
              "on a busy machine (load near or above the core count) every phase takes longer."]
    return "\n".join(lines) + "\n"


def readme_with_table(readme: str, table: str) -> str:
    """``readme`` with the text between :data:`README_START` and :data:`README_END` replaced by ``table``.

    Raises ValueError when the markers are missing or out of order.
    """
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_START!r} ... {README_END!r} block")
    return readme[: start + len(README_START)] + "\n" + table + readme[end:]


# ---------------------------------------------------------------------------------------- run
def demo_config(overrides: dict[str, Any] | None = None) -> Any:
    """DEMO_CONFIG with ``overrides`` (raw setting -> value), validated like ``tunery train``."""
    return parse_config("train", {**DEMO_CONFIG, **(overrides or {})}, source="tunery demo")


def run_demo(cfg: Any, notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the base model, LoRA-train it, score base + adapter; write and return ``demo_results.json``.

    Also writes ``demo_table.md`` (:func:`markdown_table`; ``scripts/update_readme_demo.py`` copies
    it into README.md). ``notify`` receives a short line before each long phase and after each batch
    of replies while scoring (the CLI prints them). The result has ``date``, ``machine``
    (:func:`machine_state`),
    ``before`` / ``after`` (see :func:`score`), ``seconds`` (score_before, train, score_after, total),
    ``config`` and ``replies`` (prompt, kind, lang, expected, before, after per held-out prompt).
    """
    say = notify or (lambda _line: None)
    output_dir = Path(cfg.training.output_dir)
    machine = machine_state()
    started = time.perf_counter()

    def progress(done: int, total: int, tokens: int, seconds: float) -> None:
        rate = tokens / seconds if seconds > 0 else 0.0
        say(f"  {done}/{total} replies, {tokens} tokens, {rate:.1f} tokens/s")

    say(f"scoring the base model on the held-out prompts ({len(load_heldout())} greedy replies, "
        f"up to {MAX_NEW_TOKENS} tokens each) ...")
    before, before_replies, before_s = evaluate(cfg, None, progress)
    say(f"LoRA fine-tuning {cfg.model.model_name_or_path} on {cfg.data.dataset} ...")
    train_start = time.perf_counter()
    run_train(cfg)
    train_s = time.perf_counter() - train_start
    say("scoring the fine-tuned model ...")
    after, after_replies, after_s = evaluate(cfg, str(output_dir), progress)
    total_s = time.perf_counter() - started
    rows = load_heldout()
    results = {
        "before": before,
        "after": after,
        "seconds": {"score_before": before_s, "train": train_s, "score_after": after_s, "total": total_s},
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
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
    (output_dir / TABLE_FILE).write_text(markdown_table(results), encoding="utf-8")
    return results
