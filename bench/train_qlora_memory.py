"""Peak memory of LoRA vs QLoRA (4-bit NF4 and 8-bit bitsandbytes base) on SmolLM2-135M-Instruct.

Each variant runs `tunery train` in its own process (peak RSS is per process), 5 LoRA SFT steps
on the LLaMA-Factory identity demo set, and reports peak RSS, seconds and final loss.
Usage: python bench/train_qlora_memory.py [--steps 5]   -> bench/results/train_qlora_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "reference" / "lf" / "data"
CHILD = (
    "import resource, sys\n"
    "from tunery.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(rc)\n"
)
VARIANTS = {"lora-fp32": [], "qlora-nf4": ["--quantization_bit", "4"], "qlora-int8": ["--quantization_bit", "8"]}


def run_variant(name: str, extra: list[str], steps: int, model: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"qlora-{name}-"))
    args = [
        "train", "--model_name_or_path", model, "--dataset", "identity", "--dataset_dir", str(DATA),
        "--template", "auto", "--max_samples", "32", "--cutoff_len", "256", "--per_device_train_batch_size", "2",
        "--learning_rate", "1e-3", "--max_steps", str(steps), "--logging_steps", "1", "--save_steps", "1000",
        "--disable_gradient_checkpointing", "true", "--output_dir", str(out), "--report_to", "none", *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KB")))
    records = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    return {"variant": name, "peak_rss_gib": round(peak_kb / 1024**2, 3), "seconds": round(seconds, 1),
            "first_loss": losses[0], "final_loss": losses[-1], "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    opts = parser.parse_args()
    rows = [run_variant(name, extra, opts.steps, opts.model) for name, extra in VARIANTS.items()]
    result = {"model": opts.model, "machine": "2 CPU cores, fp32 compute", "rows": rows}
    path = ROOT / "bench" / "results" / "train_qlora_memory.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['variant']:>11}: peak RSS {row['peak_rss_gib']:.2f} GiB, {row['seconds']:.0f} s, "
              f"loss {row['first_loss']:.3f} -> {row['final_loss']:.3f}")


if __name__ == "__main__":
    main()
