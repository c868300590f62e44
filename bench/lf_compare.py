"""LLaMA-Factory vs Tunery on the same user YAML, in one run: train time, eval loss, peak memory.

Both tools get the *unchanged* YAML (default ``bench/configs/lf_issue18.yaml``: LoRA rank 8 on every
linear layer of SmolLM2-135M-Instruct, 160 alpaca rows, cutoff 512, batch 4, one epoch = 40 steps,
eval on 40 rows, LLaMA-Factory's defaults otherwise); only ``model_name_or_path`` (the local
SmolLM2 folder), ``dataset_dir`` (LLaMA-Factory's demo data) and ``output_dir`` are filled in.
LLaMA-Factory runs from its own virtual environment, which this script creates when it is missing
(``pip install "torch==<this torch>" "llamafactory==<version>"``, torch pinned in the same call so
pip keeps the CPU build). Each training is its own process; the tools alternate (LF, Tunery, then
Tunery, LF, ...) for ``--repeats`` rounds, and the medians are compared.

Recorded per run: ``train_runtime`` (the Trainer's, model loading excluded), wall seconds of the
whole command, ``eval_loss``, the per-step losses, peak RSS of the process tree (``ru_maxrss`` of
the waited children), the machine's load average sampled during the run, and for Tunery the
gradient-checkpointing plan it logged. Writes ``bench/results/lf_compare.json`` and the table between
the ``lf-compare`` markers in ``bench/README.md`` and the top ``README.md``.

Usage::

    python bench/lf_compare.py                      # 3 rounds (about 6 trainings x 2-4 min on 2 idle cores)
    python bench/lf_compare.py --repeats 1
    python bench/lf_compare.py --venv /work/venv-lf --max-steps 3 --no-readme   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CONFIG = HERE / "configs" / "lf_issue18.yaml"
DEFAULT_DATA = ROOT.parent / "shared" / "reference" / "lf" / "data"
DEFAULT_VENV = HERE / ".venv-lf"
RESULTS = HERE / "results" / "lf_compare.json"
READMES = (HERE / "README.md", ROOT / "README.md")  # both carry the lf-compare markers
MARK_START, MARK_END = "<!-- lf-compare:start -->", "<!-- lf-compare:end -->"

RSS_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
    "open(sys.argv[1], 'w').write(json.dumps({'returncode': code, 'peak_rss_bytes': peak}))\n"
    "sys.exit(code)\n"
)


# ----------------------------------------------------------------------------------- environments
def ensure_lf_venv(venv: Path, version: str) -> Path:
    """The LLaMA-Factory interpreter, installing it into ``venv`` first when it is missing."""
    python = venv / "bin" / "python"
    cli = venv / "bin" / "llamafactory-cli"
    if not cli.exists():
        import torch

        torch_pin = f"torch=={torch.__version__.split('+')[0]}"
        print(f"installing LLaMA-Factory {version} into {venv} (pip, a few minutes)", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", torch_pin, f"llamafactory=={version}"], check=True)
    # PyPI's torchvision does not load beside a CPU build of torch ("operator torchvision::nms does not
    # exist") and then breaks transformers' imports; a text-only run does not need it.
    probe = "import importlib.util as u\nif u.find_spec('torchvision'):\n    import torchvision"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=False)
    return cli


def lf_shims(venv: Path) -> str | None:
    """A folder to put first on LLaMA-Factory's PYTHONPATH when its torchaudio does not load, else None.

    LLaMA-Factory imports torchaudio at the top of its multimodal plugin; PyPI's torchaudio is built
    for CUDA torch and fails beside the CPU build ("libc10_cuda.so: cannot open shared object file").
    A text-only run never calls it, so an empty module stands in (nothing else changes)."""
    python = venv / "bin" / "python"
    if subprocess.run([str(python), "-c", "import torchaudio"], capture_output=True).returncode == 0:
        return None
    shim = venv / "tunery-bench-shims" / "torchaudio"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('"""Stand-in: the real torchaudio does not load beside CPU torch (bench/lf_compare.py)."""\n',
                                      encoding="utf-8")
    return str(shim.parent)


def tunery_model_dir() -> str:
    """SmolLM2-135M-Instruct as a local transformers folder (converted once from the packaged GGUF)."""
    from tunery.hub import resolve_model
    from tunery.model.gguf_import import materialize_gguf

    return materialize_gguf(resolve_model("smollm2-135m-instruct")).path


# ------------------------------------------------------------------------------------------ one run
class LoadSampler(threading.Thread):
    """The 1-minute load average every ``every`` seconds while a run lasts."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self._done = every, [], threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append(os.getloadavg()[0])
            self._done.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {"mean": statistics.fmean(self.samples), "max": max(self.samples)} if self.samples else {}


def read_losses(output_dir: Path) -> list[float]:
    path = output_dir / "trainer_log.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["loss"] for r in rows if r.get("loss") is not None]


def run_one(tool: str, config: dict, work: Path, command: list[str], env: dict[str, str]) -> dict:
    out_dir = work / f"out-{tool}"
    cfg = {**config, "output_dir": str(out_dir)}
    cfg_path = work / f"{tool}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    rss_file = work / f"{tool}.rss.json"
    log_path = work / f"{tool}.log"
    sampler = LoadSampler()
    sampler.start()
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        code = subprocess.call([sys.executable, "-c", RSS_WRAPPER, str(rss_file), *command, str(cfg_path)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    wall = time.perf_counter() - start
    load = sampler.stop()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        raise SystemExit(f"{tool} failed (exit {code}); its log:\n{text[-3000:]}")
    results = json.loads((out_dir / "all_results.json").read_text(encoding="utf-8"))
    plan = re.findall(r"gradient checkpointing on \d+ of \d+ layers[^\n]*", text)
    return {
        "tool": tool, "train_runtime": float(results["train_runtime"]), "wall_seconds": wall,
        "eval_loss": results.get("eval_loss"), "train_loss": results.get("train_loss"),
        "peak_rss_gib": json.loads(rss_file.read_text())["peak_rss_bytes"] / 2**30,
        "load_during": load, "losses": read_losses(out_dir), "checkpointing": plan[-1] if plan else None,
    }


# ------------------------------------------------------------------------------------------ report
def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    by_tool = {tool: [r for r in runs if r["tool"] == tool] for tool in ("llamafactory", "tunery")}
    med = {tool: {key: median(rs, key) for key in ("train_runtime", "eval_loss", "peak_rss_gib", "wall_seconds")}
           for tool, rs in by_tool.items()}
    lf, tu = med["llamafactory"], med["tunery"]
    speedup = lf["train_runtime"] / tu["train_runtime"]
    eval_diff = None if lf["eval_loss"] is None or tu["eval_loss"] is None else (
        (tu["eval_loss"] - lf["eval_loss"]) / lf["eval_loss"])
    return {"medians": med, "speedup": speedup, "eval_loss_rel_diff": eval_diff,
            "rss_ratio": tu["peak_rss_gib"] / lf["peak_rss_gib"],
            "target_met": bool(speedup >= 2.0 and eval_diff is not None and abs(eval_diff) <= 0.02
                               and tu["peak_rss_gib"] <= lf["peak_rss_gib"])}


def table(report: dict) -> str:
    s, med = report["summary"], report["summary"]["medians"]
    loads = [r["load_during"].get("mean", 0.0) for r in report["runs"]]
    lines = [
        f"`results/lf_compare.json` ({report['finished']}, {report['repeats']} alternating round(s), "
        + (f"**only the first {report['max_steps']} steps** of the run (--max-steps), " if report["max_steps"] else "")
        + f"OMP_NUM_THREADS={report['threads']}, 1-min load average {report['machine']['load_before'][0]:.1f} before "
        f"the first run and {min(loads):.1f}-{max(loads):.1f} during the runs (their own threads included) "
        f"on {report['machine']['cpus']} CPUs; `{report['command']}`):",
        "",
        "| | train_runtime (median) | eval_loss | peak RSS |",
        "|---|---|---|---|",
    ]
    for tool, name in (("llamafactory", f"LLaMA-Factory {report['lf_version']}"), ("tunery", "Tunery")):
        m = med[tool]
        eval_text = "-" if m["eval_loss"] is None else f"{m['eval_loss']:.4f}"
        lines.append(f"| {name} | {m['train_runtime']:.1f} s | {eval_text} | {m['peak_rss_gib']:.2f} GiB |")
    diff = "-" if s["eval_loss_rel_diff"] is None else f"{100 * s['eval_loss_rel_diff']:+.2f}%"
    lines.append(f"| Tunery vs LLaMA-Factory | **{s['speedup']:.2f}x** faster | {diff} | {s['rss_ratio']:.2f}x |")
    plans = {r["checkpointing"] for r in report["runs"] if r["tool"] == "tunery" and r["checkpointing"]}
    if plans:
        lines += ["", "Tunery's plan: " + "; ".join(sorted(plans)) + "."]
    return "\n".join(lines)


def update_readme(text: str, readme_path: Path) -> None:
    """Put ``text`` between the lf-compare markers of ``readme_path`` (appended with a heading when absent)."""
    readme = readme_path.read_text(encoding="utf-8")
    block = f"{MARK_START}\n{text}\n{MARK_END}"
    if MARK_START in readme and MARK_END in readme:
        head, rest = readme.split(MARK_START, 1)
        readme = head + block + rest.split(MARK_END, 1)[1]
    else:
        readme = readme.rstrip("\n") + "\n\n## `lf_compare.py`: LLaMA-Factory vs Tunery on the same YAML\n\n" + block + "\n"
    readme_path.write_text(readme, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the LLaMA-Factory YAML both tools run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (each trains both tools)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="LLaMA-Factory's virtual environment")
    parser.add_argument("--lf-version", default="0.9.5")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="LLaMA-Factory's data folder")
    parser.add_argument("--model", help="local model folder (default: Tunery's SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--max-steps", type=int, help="cap both runs (smoke test; not the issue's workload)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README tables")
    parser.add_argument("--readme-only", action="store_true",
                        help="run nothing: rewrite the README tables from the results file (--out)")
    args = parser.parse_args()
    if args.readme_only:
        for readme in READMES:
            update_readme(table(json.loads(args.out.read_text(encoding="utf-8"))), readme)
        return 0

    lf_cli = ensure_lf_venv(args.venv, args.lf_version)
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    config["model_name_or_path"] = args.model or tunery_model_dir()
    config["dataset_dir"] = str(args.data_dir)
    if args.max_steps:
        config["max_steps"] = args.max_steps
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "DISABLE_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}
    tunery_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))}
    lf_env = dict(env)
    shims = lf_shims(args.venv)
    if shims:
        lf_env["PYTHONPATH"] = os.pathsep.join(filter(None, [shims, env.get("PYTHONPATH")]))
    commands = {"llamafactory": ([str(lf_cli), "train"], lf_env),
                "tunery": ([sys.executable, "-m", "tunery", "train"], tunery_env)}
    runs: list[dict] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lf-compare-") as tmp:
        for round_no in range(args.repeats):
            order = ("llamafactory", "tunery") if round_no % 2 == 0 else ("tunery", "llamafactory")
            for tool in order:
                work = Path(tmp) / f"round{round_no}"
                work.mkdir(exist_ok=True)
                command, tool_env = commands[tool]
                run = run_one(tool, config, work, command, tool_env)
                run["round"] = round_no
                runs.append(run)
                print(f"round {round_no + 1}/{args.repeats} {tool}: train_runtime {run['train_runtime']:.1f} s, "
                      f"eval_loss {run['eval_loss']}, peak RSS {run['peak_rss_gib']:.2f} GiB, "
                      f"load {run['load_during'].get('mean', 0):.1f}", flush=True)
    command = "python bench/lf_compare.py" + "".join(
        f" {a}" for a in sys.argv[1:] if a)  # how to reproduce this file
    report = {
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command,
        "config": config, "config_file": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT)
                                             else args.config),
        "lf_version": args.lf_version, "lf_torchaudio_stand_in": bool(shims), "repeats": args.repeats, "threads": args.threads, "max_steps": args.max_steps,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()},
        "runs": runs,
    }
    report["summary"] = summarize(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    text = table(report)
    print(text)
    if not args.no_readme:
        for readme in READMES:
            update_readme(text, readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
