#!/usr/bin/env bash
# GPU smoke check of the paths a CPU cannot test: one GPU, under 8 minutes, one JSON of what passed
# and how fast.
#
#   bash bench/gpu_check.sh                    # writes ${OUT:-bench/results}/gpu_check.json
#   MODEL=/path/to/model bash bench/gpu_check.sh
#
# Checks (each a real `tunery` command with its own time limit; a missing optional package is
# "skipped", not "failed"):
#   sft_bf16_sdpa     bf16 LoRA SFT, fast path, sdpa attention
#   sft_bf16_fa2      the same with flash-attention 2           (needs flash_attn)
#   deepspeed_zero2   LoRA SFT under DeepSpeed ZeRO-2 via torchrun (needs deepspeed)
#   deepspeed_zero3   LoRA SFT under DeepSpeed ZeRO-3           (needs deepspeed)
#   fsdp2             LoRA SFT under FSDP2 via accelerate launch
#   qlora_4bit        QLoRA, 4-bit base                          (needs bitsandbytes)
#   qlora_fsdp        QLoRA under FSDP (4-bit storage in bf16)    (needs bitsandbytes)
#   vllm_predict      batch generation with vLLM                (needs vllm)
# Each training check runs 20 steps and reports train_runtime (s) and throughput (tokens/s of the
# last logged step) from the run's own files.
set -u

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
MODEL="${MODEL:-smollm2-135m-instruct}"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/reference/lf/data}"
[ -f "$DATA_DIR/dataset_info.json" ] || DATA_DIR="$ROOT/src/tunery/resources/demo_data"
DATASET="${DATASET:-alpaca_en_demo}"
[ -f "$DATA_DIR/alpaca_en_demo.json" ] || DATASET="$(ls "$DATA_DIR" | grep -m1 -v dataset_info | sed 's/\.[^.]*$//')"
OUT="${OUT:-$ROOT/bench/results}"
WORK="$(mktemp -d /tmp/tunery-gpu-check.XXXXXX)"
mkdir -p "$OUT"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

has() { "$PY" -c "import $1" >/dev/null 2>&1; }

record() {  # name status seconds output_dir note
  "$PY" - "$1" "$2" "$3" "$4" "$5" >> "$RESULTS" <<'EOF'
import json, os, sys
name, status, seconds, out, note = sys.argv[1:6]
row = {"check": name, "status": status, "wall_s": round(float(seconds), 1)}
if note:
    row["note"] = note[-600:]
results = os.path.join(out, "train_results.json")
if os.path.isfile(results):
    r = json.load(open(results))
    row["train_runtime_s"] = r.get("train_runtime")
    row["train_loss"] = r.get("train_loss")
log = os.path.join(out, "trainer_log.jsonl")
if os.path.isfile(log):
    lines = [json.loads(l) for l in open(log) if l.strip()]
    steps = [l for l in lines if "loss" in l and l.get("loss") is not None]
    if steps:
        row["steps"] = steps[-1].get("current_steps")
        row["throughput_tokens_s"] = steps[-1].get("throughput")
pred = os.path.join(out, "predict_results.json")
if os.path.isfile(pred):
    row["predict"] = {k: v for k, v in json.load(open(pred)).items() if "runtime" in k or "per_second" in k}
print(json.dumps(row))
EOF
}

run_check() {  # name limit_s needs_module command...
  local name="$1" limit="$2" needs="$3"; shift 3
  local out="$WORK/$name"
  if [ -n "$needs" ] && ! has "$needs"; then
    echo "== $name: skipped ($needs not installed)"
    record "$name" skipped 0 "$out" "$needs not installed"
    return
  fi
  echo "== $name"
  local start status
  start=$SECONDS
  if timeout --kill-after=10 "$limit" "$@" --output_dir "$out" > "$WORK/$name.log" 2>&1; then
    status=passed
  else
    status="failed (exit $?)"
  fi
  echo "   $status"
  record "$name" "$status" "$((SECONDS - start))" "$out" \
    "$([ "$status" = passed ] || tail -c 600 "$WORK/$name.log")"
}

TRAIN=(--model_name_or_path "$MODEL" --stage sft --do_train true --finetuning_type lora --lora_target all
       --dataset "$DATASET" --dataset_dir "$DATA_DIR" --template auto --cutoff_len 512 --max_samples 200
       --per_device_train_batch_size 4 --max_steps 20 --logging_steps 5 --save_steps 1000 --learning_rate 1e-4
       --report_to none --overwrite_output_dir true --bf16 true)

run_check sft_bf16_sdpa 90 "" "$PY" -m tunery train "${TRAIN[@]}" --flash_attn sdpa --fast_path true
run_check sft_bf16_fa2 90 flash_attn "$PY" -m tunery train "${TRAIN[@]}" --flash_attn fa2 --fast_path true
run_check deepspeed_zero2 100 deepspeed \
  env FORCE_TORCHRUN=1 NPROC_PER_NODE=1 "$PY" -m tunery train "${TRAIN[@]}" --deepspeed examples/deepspeed/ds_z2_config.json
run_check deepspeed_zero3 100 deepspeed \
  env FORCE_TORCHRUN=1 NPROC_PER_NODE=1 "$PY" -m tunery train "${TRAIN[@]}" --deepspeed examples/deepspeed/ds_z3_config.json
run_check fsdp2 90 accelerate "$PY" -m accelerate.commands.launch --config_file examples/accelerate/fsdp2_config.yaml \
  --num_processes 1 -m tunery train "${TRAIN[@]}"
run_check qlora_4bit 90 bitsandbytes "$PY" -m tunery train "${TRAIN[@]}" --quantization_bit 4
run_check qlora_fsdp 90 bitsandbytes "$PY" -m accelerate.commands.launch --config_file \
  examples/accelerate/fsdp_config_qlora.yaml --num_processes 1 -m tunery train "${TRAIN[@]}" --quantization_bit 4
run_check vllm_predict 120 vllm "$PY" -m tunery predict --model_name_or_path "$MODEL" --eval_dataset "$DATASET" \
  --dataset_dir "$DATA_DIR" --template auto --cutoff_len 512 --max_samples 32 --infer_backend vllm \
  --max_new_tokens 64 --per_device_eval_batch_size 32

"$PY" - "$RESULTS" "$OUT/gpu_check.json" <<'EOF'
import json, platform, subprocess, sys, time
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except Exception as exc:  # noqa: BLE001
    gpu = f"unknown ({exc})"
versions = {}
for name in ("torch", "transformers", "peft", "trl", "accelerate", "deepspeed", "bitsandbytes", "vllm", "flash_attn"):
    try:
        versions[name] = __import__(name).__version__
    except Exception:  # noqa: BLE001
        versions[name] = None
report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "gpu": gpu, "python": platform.python_version(),
          "versions": versions, "passed": sum(r["status"] == "passed" for r in rows),
          "failed": sum(r["status"].startswith("failed") for r in rows),
          "skipped": sum(r["status"] == "skipped" for r in rows), "checks": rows}
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(json.dumps({k: report[k] for k in ("gpu", "passed", "failed", "skipped")}))
EOF
echo "results: $OUT/gpu_check.json (logs in $WORK)"
