"""LoRA SFT speed of Tunery's training path vs a plain TRL SFTTrainer + peft, in the same run.

Workload (issue 4, point 9): SmolLM2-135M-Instruct, LoRA rank 8 (alpha 16) on every linear layer,
cutoff 512, batch 4, 30 steps, fp32, 200 alpaca-style rows. Both sides get the *same token ids and
labels in the same order* (tokenized once here with the model's chat template, shuffled with a fixed
seed, read sequentially by both trainers), the same LoRA settings, optimizer, schedule and seed.

- ``tunery``: Tunery's own functions, as ``tunery train`` uses them: config parsing, model loader +
  ``model.adapter`` (LoRA), ``train.fast_path`` (padding-free rows, per-example attention, chunked
  loss) and ``train.trainer.build_trainer``; gradient checkpointing off
  (``disable_gradient_checkpointing: true``).
- ``trl``: ``trl.SFTTrainer`` with a peft ``LoraConfig`` and its defaults, except ``bf16=False`` (this
  CPU has no fast bf16) so both train in fp32.

Each training runs in its own process (so peak RSS is per run); the sides alternate (A B, B A, ...)
and the medians are reported, because the machine is shared and its speed drifts. Also measured
here: the CPU's fp32 matmul peak on the same threads, to state Tunery's speed as a share of it
(LoRA costs about 4 x 134.5M FLOPs per token: forward 2N, backward through frozen weights 2N).

Usage: ``python bench/train_sft.py [--repeats 3] [--steps 30]``; writes bench/results/train_sft.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALPACA = HERE.parents[1] / "shared" / "reference" / "lf" / "data" / "alpaca_en_demo.json"
ROWS, BATCH, CUTOFF, STEPS, RANK, ALPHA, LR, SEED = 200, 4, 512, 30, 8, 16, 1e-4, 42
PARAMS = 134.5e6
FLOPS_PER_TOKEN = 4 * PARAMS


# ------------------------------------------------------------------------------------------ data
def synthetic_rows(n: int) -> list[dict[str, str]]:
    """Alpaca-style rows of varied length, used when the LLaMA-Factory demo file is absent."""
    rng = random.Random(SEED)
    words = "model data train token loss batch layer weight sample answer question simple clear".split()
    rows = []
    for i in range(n):
        ask = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        out = " ".join(rng.choice(words) for _ in range(rng.randint(10, 300)))
        rows.append({"instruction": f"Task {i}: {ask}", "input": "", "output": out})
    return rows


def load_rows() -> tuple[list[dict[str, str]], str]:
    path = Path(os.environ.get("TUNERY_BENCH_DATA", ALPACA))
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))[:ROWS], str(path)
    return synthetic_rows(ROWS), "synthetic"


def tokenize(rows: list[dict[str, str]], tokenizer) -> list[dict[str, list[int]]]:
    """input_ids + labels (prompt masked with -100), cut at CUTOFF; the chat template adds its system."""
    out = []
    for row in rows:
        user = row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
        prompt_text = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert full_text.startswith(prompt_text), "chat template does not extend the prompt"
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(prompt) + full[len(prompt):]
        out.append({"input_ids": full[:CUTOFF], "labels": labels[:CUTOFF]})
    random.Random(SEED).shuffle(out)
    return out


def model_dir() -> str:
    from tunery.hub import resolve_model
    from tunery.model.gguf_import import materialize_gguf

    return materialize_gguf(resolve_model("smollm2-135m-instruct")).path


# ---------------------------------------------------------------------------------------- worker
def build_tunery(data, out_dir: str, steps: int, gc: bool):
    """The trainer ``tunery train`` builds for this config (see train.fast_path for the levers)."""
    from datasets import Dataset

    from tunery.config import parse_config
    from tunery.data.collator import PaddingFreeCollator
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.sft import trainer_parts
    from tunery.train.trainer import build_trainer

    cfg = parse_config("train", {
        "model_name_or_path": model_dir(), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": RANK, "lora_alpha": ALPHA, "lora_target": "all", "cutoff_len": CUTOFF,
        "disable_gradient_checkpointing": not gc, "output_dir": out_dir, "per_device_train_batch_size": BATCH,
        "max_steps": steps, "learning_rate": LR, "lr_scheduler_type": "cosine", "warmup_steps": 3,
        "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": SEED, "bf16": False,
        "train_sampling_strategy": "sequential", "disable_tqdm": True, "overwrite_output_dir": True,
    })
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    trainer_cls, collator = trainer_parts(cfg, model, tokenizer, "sft")
    assert isinstance(collator, PaddingFreeCollator), "fast path expected for this config"
    return build_trainer(cfg, model, tokenizer, train_dataset=Dataset.from_list(data), data_collator=collator,
                         trainer_cls=trainer_cls)


def build_trl(data, out_dir: str, steps: int, gc: bool):
    """A plain TRL SFTTrainer + peft LoRA with TRL's defaults (fp32 forced, as on this CPU)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=out_dir, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR,
        lr_scheduler_type="cosine", warmup_steps=3, logging_steps=1, save_strategy="no", report_to=[], seed=SEED,
        bf16=False, max_length=CUTOFF, train_sampling_strategy="sequential", disable_tqdm=True, use_cpu=True,
        gradient_checkpointing=gc,
    )
    lora = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer,
                      peft_config=lora)


def run_worker(kind: str, data_path: str, out_path: str, steps: int, gc: bool) -> None:
    data = [json.loads(line) for line in Path(data_path).read_text().splitlines()]
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        trainer = (build_tunery if kind == "tunery" else build_trl)(data, tmp, steps, gc)
        cpu_start = cpu_seconds()
        result = trainer.train()
        cpu = cpu_seconds() - cpu_start
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    used = data[: steps * BATCH]
    useful = sum(len(r["input_ids"]) for r in used)
    padded = sum(max(len(r["input_ids"]) for r in used[i : i + BATCH]) * len(used[i : i + BATCH])
                 for i in range(0, len(used), BATCH))
    seconds = float(result.metrics["train_runtime"])
    report = {
        "kind": kind, "gradient_checkpointing": gc, "train_seconds": seconds, "useful_tokens": useful,
        "padded_tokens": padded, "useful_tokens_per_s": useful / seconds,
        "train_cpu_seconds": cpu, "useful_tokens_per_cpu_s": useful / cpu, "threads": torch_threads(),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "final_loss": losses[-1], "mean_loss_last10": statistics.fmean(losses[-10:]), "losses": losses,
    }
    Path(out_path).write_text(json.dumps(report))


def cpu_seconds() -> float:
    """User + system CPU time of this process: on a busy shared machine, with one thread, this is
    close to the time the work takes on a core of its own (wall time is mostly waiting there)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------- driver
def matmul_peak_gflops(threads: int, n: int = 2048, reps: int = 8) -> dict[str, float]:
    """Best fp32 GEMM rate of 3 tries on ``threads`` threads (2 n^3 FLOPs per product),
    per wall second and per CPU second of one thread (the latter only meaningful for 1 thread)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best_wall = best_cpu = 0.0
    for _ in range(3):
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for _ in range(reps):
            a @ b
        flops = 2 * n**3 * reps
        best_wall = max(best_wall, flops / (time.perf_counter() - start) / 1e9)
        best_cpu = max(best_cpu, flops / max(cpu_seconds() - cpu_start, 1e-9) / 1e9 * threads)
    return {"per_wall_s": best_wall, "per_cpu_s_x_threads": best_cpu}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["tunery", "trl"])
    parser.add_argument("--data")
    parser.add_argument("--out", default=str(HERE / "results" / "train_sft.json"))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gc", action="store_true", help="worker: gradient checkpointing on")
    parser.add_argument("--arms", default="tunery,trl:gc", help="sides, name[:gc], comma separated")
    parser.add_argument("--parallel", action="store_true",
                        help="run the sides of a round at the same time (a busy machine then loads both alike)")
    opts = parser.parse_args()
    if opts.worker:
        run_worker(opts.worker, opts.data, opts.out, opts.steps, opts.gc)
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 2))
    rows, source = load_rows()
    data = tokenize(rows, AutoTokenizer.from_pretrained(model_dir()))
    load_before = os.getloadavg()
    peak_before = matmul_peak_gflops(threads)
    arms = [a.strip() for a in opts.arms.split(",") if a.strip()]
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        data_path = Path(tmp) / "data.jsonl"
        data_path.write_text("\n".join(json.dumps(r) for r in data))
        for rep in range(opts.repeats):
            order = arms if rep % 2 == 0 else list(reversed(arms))  # A B, B A, ... against drift
            jobs = []
            for arm in order:
                kind, _, flag = arm.partition(":")
                out = Path(tmp) / f"{arm.replace(':', '_')}-{rep}.json"
                cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data_path), "--out", str(out),
                       "--steps", str(opts.steps)] + (["--gc"] if flag == "gc" else [])
                jobs.append((arm, out, subprocess.Popen(cmd)))
                if not opts.parallel:
                    jobs[-1][2].wait()
            for arm, out, proc in jobs:
                if proc.wait() != 0:
                    raise SystemExit(f"{arm} worker failed")
                run = json.loads(out.read_text())
                runs[arm].append(run)
                print(f"[{rep}] {arm:10s} {run['train_seconds']:7.1f} s  {run['useful_tokens_per_s']:6.1f} tok/s  "
                      f"cpu {run['train_cpu_seconds']:7.1f} s  {run['useful_tokens_per_cpu_s']:6.1f} tok/cpu-s  "
                      f"RSS {run['peak_rss_gib']:.2f} GiB  loss {run['final_loss']:.4f}", flush=True)
    peak_after = matmul_peak_gflops(threads)
    peak = max(peak_before["per_wall_s"], peak_after["per_wall_s"])
    peak_cpu = max(peak_before["per_cpu_s_x_threads"], peak_after["per_cpu_s_x_threads"])
    summary = {
        arm: {
            "train_seconds_median": median_of(rs, "train_seconds"),
            "useful_tokens_per_s_median": median_of(rs, "useful_tokens_per_s"),
            "peak_rss_gib_median": median_of(rs, "peak_rss_gib"),
            "final_loss_median": median_of(rs, "final_loss"),
            "share_of_fp32_peak": median_of(rs, "useful_tokens_per_s") * FLOPS_PER_TOKEN / (peak * 1e9),
            "train_cpu_seconds_median": median_of(rs, "train_cpu_seconds"),
            "useful_tokens_per_cpu_s_median": median_of(rs, "useful_tokens_per_cpu_s"),
            "share_of_fp32_peak_cpu_time": median_of(rs, "useful_tokens_per_cpu_s") * FLOPS_PER_TOKEN
            / (peak_cpu / threads * 1e9),
        }
        for arm, rs in runs.items()
    }
    base, fast = arms[-1], arms[0]
    sample = runs[fast][0]
    result = {
        "workload": {"model": "SmolLM2-135M-Instruct", "rows": len(data), "data": source, "steps": opts.steps,
                     "batch": BATCH, "cutoff": CUTOFF, "lora_rank": RANK, "lora_alpha": ALPHA, "dtype": "fp32",
                     "useful_tokens": sample["useful_tokens"], "padded_tokens_baseline": sample["padded_tokens"],
                     "padding_share_baseline": 1 - sample["useful_tokens"] / sample["padded_tokens"]},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "fp32_matmul_peak_gflops": peak, "fp32_matmul_peak_gflops_per_cpu_s": peak_cpu,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "parallel_sides": opts.parallel,
                    "note": "shared, noisy machine: medians of alternating runs; with a high load, compare the "
                            "CPU-time figures (one thread each), which do not count time spent waiting"},
        "summary": summary,
        "speedup_tokens_per_s": summary[fast]["useful_tokens_per_s_median"] / summary[base]["useful_tokens_per_s_median"],
        "speedup_tokens_per_cpu_s": summary[fast]["useful_tokens_per_cpu_s_median"]
        / summary[base]["useful_tokens_per_cpu_s_median"],
        "final_loss_rel_diff": abs(summary[fast]["final_loss_median"] / summary[base]["final_loss_median"] - 1),
        "peak_rss_ratio": summary[fast]["peak_rss_gib_median"] / summary[base]["peak_rss_gib_median"],
        "runs": runs,
    }
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("summary", "speedup_tokens_per_s", "speedup_tokens_per_cpu_s",
                                             "final_loss_rel_diff", "peak_rss_ratio")}, indent=2))
    print(f"fp32 matmul peak {peak:.0f} GFLOP/s on {threads} threads; results in {opts.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
