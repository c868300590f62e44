"""How far ``tunery estimate`` is from real runs: seconds/step and peak RSS, estimated vs measured.

Each case runs ``tunery estimate`` and then ``tunery train`` (a few steps) with the same settings,
each in its own process (peak RSS is per process). Measured s/step is ``train_runtime / steps``
from the run's train_results.json (the first step's warm-up included), scaled by the share of a
core the process got (CPU time / wall time), since the estimate is for an idle machine; run it with
OMP_NUM_THREADS=1.
Usage: python bench/estimate_accuracy.py [--steps 5] [--cases tiny-sft,smollm2-sft]
       -> bench/results/estimate_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print('PEAK_RSS_KB', usage.ru_maxrss)\n"
    "print('CPU_S', usage.ru_utime + usage.ru_stime)\n"
    "sys.exit(rc)\n"
)
COMMON = ["--template", "auto", "--learning_rate", "1e-4", "--logging_steps", "1", "--save_steps", "1000",
          "--disable_gradient_checkpointing", "true", "--report_to", "none", "--finetuning_type", "lora"]
CASES = {
    "tiny-sft": ["--stage", "sft", "--dataset", "alpaca_en_demo", "--max_samples", "64", "--cutoff_len", "128",
                 "--per_device_train_batch_size", "4"],
    "smollm2-sft": ["--stage", "sft", "--dataset", "identity", "--max_samples", "32", "--cutoff_len", "256",
                    "--per_device_train_batch_size", "2"],
    "smollm2-sft-long": ["--stage", "sft", "--dataset", "alpaca_en_demo", "--max_samples", "32", "--cutoff_len",
                         "512", "--per_device_train_batch_size", "4"],
    "smollm2-dpo": ["--stage", "dpo", "--dataset", "dpo_en_demo", "--max_samples", "16", "--cutoff_len", "256",
                    "--per_device_train_batch_size", "2"],
}


def child(args: list[str]) -> tuple[str, float, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"tunery {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KB")))
    cpu = float(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("CPU_S")))
    return proc.stdout, peak_kb / 1024**2, cpu


def tiny_model() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.tiny_models import build_tiny_model

    path = Path(tempfile.mkdtemp(prefix="tiny-model-"))
    build_tiny_model(path)
    return str(path)


def run_case(name: str, steps: int) -> dict:
    model = tiny_model() if name.startswith("tiny") else "smollm2-135m-instruct"
    out = Path(tempfile.mkdtemp(prefix=f"estimate-{name}-"))
    args = ["--model_name_or_path", model, "--dataset_dir", str(DATA), *COMMON, *CASES[name],
            "--max_steps", str(steps), "--output_dir", str(out / "run")]
    estimate, _, _ = child(["estimate", *args])
    seconds = float(re.search(r"estimated time: ([\d.]+) s/step", estimate).group(1))
    memory = float(re.search(r"estimated peak memory: ([\d.]+) GiB", estimate).group(1))
    start = time.perf_counter()
    _, peak, cpu = child(["train", *args])
    wall = time.perf_counter() - start
    results = json.loads((out / "run" / "train_results.json").read_text())
    # The estimate is for an idle machine; this one is shared. The process got cpu/wall of a core
    # (one torch thread), so its steps on an idle machine would take that fraction of their wall time.
    share = min(cpu / wall, 1.0)
    measured = results["train_runtime"] / steps * share
    return {"case": name, "steps": steps, "estimated_s_per_step": seconds, "measured_s_per_step": round(measured, 3),
            "measured_wall_s_per_step": round(results["train_runtime"] / steps, 3), "cpu_share": round(share, 2),
            "time_ratio": round(seconds / measured, 2), "estimated_peak_gib": memory,
            "measured_peak_rss_gib": round(peak, 3), "memory_ratio": round(memory / peak, 2), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    opts = parser.parse_args()
    load = os.getloadavg()
    rows = [run_case(name, opts.steps) for name in opts.cases.split(",")]
    result = {"machine": f"{os.cpu_count()} CPU cores, fp32; load average at start "
                         f"{load[0]:.2f}, at end {os.getloadavg()[0]:.2f}",
              "threads": os.environ.get("OMP_NUM_THREADS", "default"), "rows": rows}
    path = ROOT / "bench" / "results" / "estimate_accuracy.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
