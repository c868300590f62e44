"""Multi-process training on this CPU (gloo): `tunery train` under torchrun, two loopback "nodes",
DeepSpeed ZeRO-2 and FSDP2 through their own launchers, signals, resume and failures.

Each process gets OMP_NUM_THREADS=1 (several torch processes with more threads on a small machine
slow each other down many times over). Runs are short: tiny model, 16 examples, at most 4 steps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunery.cli import launch
from tunery.cli.main import main as tunery_main

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
# Loss of a 2-process step vs the 1-process step on the same global batch. Both average over the
# same tokens (transformers counts them across processes); only float summation order differs.
LOSS_RTOL = 1e-4


def _config(path: Path, model: Path, reference_dir: Path, out: Path, **extra) -> Path:
    config = {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_target": "all", "lora_rank": 4, "dataset": "alpaca_en_demo",
        "dataset_dir": str(reference_dir / "lf" / "data"), "template": "auto", "cutoff_len": 128,
        "max_samples": 16, "output_dir": str(out), "logging_steps": 1, "save_steps": 1000,
        "per_device_train_batch_size": 2, "learning_rate": 1e-3, "num_train_epochs": 1, "report_to": "none",
        "seed": 7, "lr_scheduler_type": "constant",
    }
    config.update(extra)
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "NNODES", "MASTER_ADDR", "MASTER_PORT",
                        "NPROC_PER_NODE", "FORCE_TORCHRUN", "TUNERY_LAUNCH_DIR")}
    env.update({"PYTHONPATH": os.pathsep.join([str(SRC), str(REPO), env.get("PYTHONPATH", "")]),
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


def _tunery(args: list[str], timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunery", *args], env=_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def _assert_close(a: list[float], b: list[float], rtol: float = LOSS_RTOL) -> None:
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b):
        assert abs(x - y) <= rtol * abs(y), (a, b)


@pytest.fixture(scope="module")
def one_process_run(tiny_chatml_model, reference_dir, tmp_path_factory):
    """The reference: one process, per-device batch 4 (the global batch of 2 processes x 2). `tunery train` runs
    in this test process: a one-process run needs no process of its own (the multi-process runs below do)."""
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "out"
    cfg = _config(tmp / "cfg.yaml", tiny_chatml_model, reference_dir, out, per_device_train_batch_size=4)
    assert tunery_main(["train", str(cfg)]) == 0
    return _log(out)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_on_the_same_global_batch(
        one_process_run, tiny_chatml_model, reference_dir, tmp_path):
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out)
    result = _tunery(["train", str(cfg)], FORCE_TORCHRUN="1", NPROC_PER_NODE="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "python -m torch.distributed.run" in result.stderr.replace(sys.executable, "python")
    assert "training on 2 processes with DDP" in result.stderr
    log = _log(out)
    # 16 examples, 2 per process: 4 steps, half the 8 one process with the same per-device batch takes
    assert [r["current_steps"] for r in log] == [1, 2, 3, 4] and log[-1]["total_steps"] == 4
    _assert_close([r["loss"] for r in log], [r["loss"] for r in one_process_run])
    assert log[-1]["epoch"] == pytest.approx(1.0)
    # outputs written once, by the main process
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert result.stderr.count("training finished: outputs in") == 1


# SmolLM2 (real weights, 135M): the losses of 2 processes vs 1 on the same global batch after LoRA
# updates. Float summation order differs (all-reduce vs one batch) and Adam's update divides by the
# gradient's square root, which can enlarge the smallest differences; measured: 8e-6 relative at most
# (losses 1.60, 1.66, 2.02, 1.79 over 4 steps).
SMOLLM2_LOSS_RTOL = 1e-3


@pytest.mark.slow
def test_ddp_lora_sft_on_smollm2_halves_the_steps_and_matches_one_process(smollm2_path, reference_dir, tmp_path,
                                                                         capsys):
    settings = {"max_samples": 16, "cutoff_len": 96, "learning_rate": 1e-4, "template": "auto"}
    # one process, per-device batch 2: the plan says 8 steps (16 examples); 2 processes take half.
    # The one-process commands run in this test process (no process start), the 2-process one is launched.
    assert tunery_main(["train", str(_config(tmp_path / "plan.yaml", smollm2_path, reference_dir, tmp_path / "plan",
                                              dry_run=True, **settings))]) == 0
    assert "optimizer steps: 8" in capsys.readouterr().out
    # the reference: one process with the 2-process global batch (4)
    one = tmp_path / "one"
    assert tunery_main(["train", str(_config(tmp_path / "one.yaml", smollm2_path, reference_dir, one,
                                              per_device_train_batch_size=4, **settings))]) == 0
    two = tmp_path / "two"
    result = _tunery(["train", str(_config(tmp_path / "two.yaml", smollm2_path, reference_dir, two, **settings))],
                     FORCE_TORCHRUN="1", NPROC_PER_NODE="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training on 2 processes with DDP" in result.stderr
    log_one, log_two = _log(one), _log(two)
    assert [r["current_steps"] for r in log_two] == [1, 2, 3, 4] and log_two[-1]["total_steps"] == 4
    assert [r["current_steps"] for r in log_one] == [1, 2, 3, 4]
    _assert_close([r["loss"] for r in log_two], [r["loss"] for r in log_one], rtol=SMOLLM2_LOSS_RTOL)
    assert all(1.0 < r["loss"] < 5.0 for r in log_two)  # a trained model's loss, not a random one's
    assert (two / "adapter_model.safetensors").is_file() and (two / "train_results.json").is_file()
    assert result.stderr.count("training finished: outputs in") == 1  # written once, by rank 0


@pytest.mark.slow
def test_two_nodes_on_loopback(one_process_run, tiny_chatml_model, reference_dir, tmp_path):
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out)
    common = {"FORCE_TORCHRUN": "1", "NNODES": "2", "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": str(launch.free_port())}
    nodes = [subprocess.Popen([sys.executable, "-m", "tunery", "train", str(cfg)],
                              env=_env(**common, NODE_RANK=str(rank)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=900) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert "node 1 of 2" in outputs[1][1]
    log = _log(out)
    assert [r["current_steps"] for r in log] == [1, 2, 3, 4]
    _assert_close([r["loss"] for r in log], [r["loss"] for r in one_process_run])


GRPO_REWARD = "def first_token_low(prompts, completions, completion_ids, **kwargs):\n" \
              "    return [float(ids[0] < 275) if ids else 0.0 for ids in completion_ids]\n"


def _stage_settings(stage: str, model: Path, tmp_path: Path) -> dict:
    """The smallest run of ``stage`` on LLaMA-Factory's demo data (sft has its own tests above)."""
    if stage == "pt":
        return {"dataset": "c4_demo"}
    if stage in ("rm", "dpo"):
        return {"dataset": "dpo_en_demo"}
    if stage == "kto":
        return {"dataset": "kto_en_demo"}
    generate = {"max_new_tokens": 3, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    if stage == "ppo":  # the tiny model with a fresh one-output head scores the replies
        return {**generate, "reward_model": str(model), "reward_model_type": "full", "ppo_epochs": 1,
                "ppo_buffer_size": 1}
    reward = tmp_path / "rewards.py"
    reward.write_text(GRPO_REWARD)
    return {**generate, "reward_funcs": f"{reward}:first_token_low", "num_generations": 2}


STAGES_UNDER_DDP = ("pt", "rm", "dpo", "kto", "ppo", "grpo")
# One torchrun job trains every stage above in turn: each process runs `tunery train <config>` once per stage
# (tunery's own main(), as `torchrun -m tunery train` does), with that stage's output in its own file per rank.
# Starting a 2-process job costs more than a 2-step run of the tiny model (interpreters, imports of torch,
# transformers, trl), so one job instead of six; the FORCE_TORCHRUN relaunch is tested with sft and resume.
STAGES_WORKER = """
import os, sys
from tunery.cli.main import main

rank = os.environ["RANK"]
for stage, config in zip(sys.argv[1::2], sys.argv[2::2]):
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(f"{stage}.rank{rank}.log", "w") as log:
        os.dup2(log.fileno(), 1); os.dup2(log.fileno(), 2)
        try:
            code = main(["train", config])
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    with open(f"{stage}.rank{rank}.code", "w") as file:
        file.write(str(code))
"""


@pytest.fixture(scope="module")
def ddp_stage_runs(tiny_chatml_model, reference_dir, tmp_path_factory):
    """Two processes, two steps per stage, every stage of STAGES_UNDER_DDP in one torchrun job; the folder
    holds <stage>/out, <stage>.rank<R>.log and <stage>.rank<R>.code (the exit code of that `tunery train`)."""
    tmp = tmp_path_factory.mktemp("stages")
    (tmp / "worker.py").write_text(STAGES_WORKER)
    args = []
    for stage in STAGES_UNDER_DDP:
        folder = tmp / stage
        folder.mkdir()
        args += [stage, str(_config(folder / "cfg.yaml", tiny_chatml_model, reference_dir, folder / "out",
                                    stage=stage, max_samples=8, num_train_epochs=None, max_steps=2, cutoff_len=96,
                                    **_stage_settings(stage, tiny_chatml_model, folder)))]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(launch.free_port()),
                             str(tmp / "worker.py"), *args],
                            cwd=tmp, env=_env(), capture_output=True, text=True, timeout=1800)
    return tmp, result


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES_UNDER_DDP)
def test_every_stage_trains_under_ddp(stage, ddp_stage_runs):
    """Two processes, two steps: every stage runs under DDP, logs finite numbers, writes its outputs once."""
    tmp, job = ddp_stage_runs
    text = "".join((tmp / f"{stage}.rank{rank}.log").read_text() for rank in (0, 1)
                   if (tmp / f"{stage}.rank{rank}.log").is_file())
    codes = [(tmp / f"{stage}.rank{rank}.code").read_text() if (tmp / f"{stage}.rank{rank}.code").is_file()
             else None for rank in (0, 1)]
    assert codes == ["0", "0"], (codes, text[-4000:], job.stderr[-2000:])
    assert "training on 2 processes with DDP" in text
    out = tmp / stage / "out"
    log = _log(out)
    assert [r["current_steps"] for r in log] == [1, 2]  # one line per step: only rank 0 writes the run log
    numbers = [v for r in log for k, v in r.items() if isinstance(v, float) and k not in ("epoch", "percentage")]
    assert numbers and all(math.isfinite(v) for v in numbers), log
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file()
    assert text.count("training finished: outputs in") == 1


@pytest.mark.slow
def test_dpo_under_ddp(ddp_stage_runs):
    tmp, _ = ddp_stage_runs
    out = tmp / "dpo" / "out"
    log = _log(out)
    assert [r["current_steps"] for r in log] == [1, 2]
    assert all(r["loss"] == r["loss"] and "rewards/chosen" in r for r in log)  # finite, preference metrics
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_sigterm_stops_every_process_at_one_step_and_the_run_resumes(tiny_chatml_model, reference_dir, tmp_path):
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out, num_train_epochs=None,
                  max_steps=400, max_samples=64, per_device_train_batch_size=1)
    proc = subprocess.Popen([sys.executable, "-m", "tunery", "train", str(cfg)],
                            env=_env(FORCE_TORCHRUN="1", NPROC_PER_NODE="2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (out / "trainer_log.jsonl").is_file() and (out / "trainer_log.jsonl").read_text().strip():
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert not (out / "train_results.json").exists()
    steps = [r["current_steps"] for r in _log(out)]
    stopped_at = steps[-1]
    assert stopped_at < 400 and steps == list(range(1, stopped_at + 1))  # one line per step, not one per process
    assert (out / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()

    # the same command (asking for two more steps) resumes on 2 processes from that checkpoint
    result = _tunery(["train", str(cfg), "--max_steps", str(stopped_at + 2)], FORCE_TORCHRUN="1",
                     NPROC_PER_NODE="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint-{stopped_at}" in result.stderr
    assert [r["current_steps"] for r in _log(out)] == list(range(1, stopped_at + 3))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == stopped_at + 2


WORKER = """
import os, sys, time
from tunery.cli.main import main
if os.environ["RANK"] == "1":
    sys.exit(main(["train", sys.argv[1]]))
time.sleep(300)  # rank 0 would wait in a collective; torchrun must end it
"""


@pytest.mark.slow
def test_an_error_on_one_process_ends_the_job_with_one_message(tmp_path, monkeypatch, capsys):
    from tunery.cli import train as train_cli
    from tunery.errors import TuneryError

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    plan = launch.LaunchPlan(nproc_per_node=2, master_port=launch.free_port())

    def command(plan, tokens, python=None):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(plan.master_port), str(script), *tokens]

    monkeypatch.setattr(launch, "torchrun_command", command)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    start = time.time()
    with pytest.raises(TuneryError) as err:
        train_cli.relaunch(plan, [str(tmp_path / "missing.yaml")])
    assert time.time() - start < 280  # rank 0 was ended, not waited for
    assert err.value.exit_code == 2
    assert str(err.value).startswith("[rank 1] ") and "missing.yaml" in str(err.value)
    # the worker kept its message for the relauncher rather than printing it
    assert "tunery: error" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("config, flags", [
    ("fsdp_config.yaml", []),  # FSDP1 as shipped (bf16): accelerate itself would stop at "no available devices"
    ("fsdp2_config.yaml", ["--mixed_precision", "no"]),  # FSDP2: accelerate would quietly train with DDP
])
def test_fsdp_through_accelerate_launch_is_refused_on_a_cpu(config, flags, tiny_chatml_model, reference_dir,
                                                            tmp_path):
    """accelerate shards with FSDP only on accelerators; Tunery says so when the config is read, in every
    process, before the model or the data loads (torch's FSDP runs on gloo, accelerate does not use it there)."""
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out, max_samples=4)
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "examples" / "accelerate" / config), "--num_processes", "2", *flags,
         "-m", "tunery", "train", str(cfg)],
        env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    for rank in (0, 1):
        assert f"tunery: error: [rank {rank}] FSDP needs CUDA here: no GPU or other accelerator" in result.stderr
    assert "would train whole copies with DDP" in result.stderr and "internal error" not in result.stderr
    assert not out.exists()  # refused before the output folder, the model or the data


@pytest.mark.slow
def test_ray_train_two_cpu_workers_match_one_process(one_process_run, tiny_chatml_model, reference_dir, tmp_path):
    pytest.importorskip("ray.train")
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out, use_ray=True, ray_num_workers=2,
                  resources_per_worker={"CPU": 1}, ray_storage_path=str(tmp_path / "ray"), ray_run_name="tiny",
                  ray_init_kwargs={"num_cpus": 2, "include_dashboard": False})
    result = _tunery(["train", str(cfg)], timeout=1200, RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING="0",
                     RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING="0")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    assert "torch.distributed.run" not in text  # Ray started the processes, not torchrun
    assert "training on 2 Ray workers" in text and "training on 2 processes with DDP" in text
    log = _log(out)
    # 16 examples, 2 per worker: 4 steps (8 for one process with the same per-device batch)
    assert [r["current_steps"] for r in log] == [1, 2, 3, 4] and log[-1]["total_steps"] == 4
    _assert_close([r["loss"] for r in log], [r["loss"] for r in one_process_run])
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file()
    assert text.count("training finished: outputs in") == 1  # written once, by the main worker
    assert (tmp_path / "ray" / "tiny").is_dir()  # Ray Train's own run state under ray_storage_path


@pytest.mark.slow
def test_deepspeed_zero2_without_a_launcher_relaunches_itself_under_torchrun(tiny_chatml_model, reference_dir,
                                                                             tmp_path):
    """No FORCE_TORCHRUN, no torchrun: a deepspeed config alone makes `tunery train` start torchrun, with
    NPROC_PER_NODE processes (2 here: ZeRO-2 over gloo on this CPU)."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out, num_train_epochs=None, max_steps=2,
                  deepspeed=str(REPO / "examples" / "deepspeed" / "ds_z2_config.json"))
    # the first run on a machine compiles DeepSpeed's CPU communication op (minutes), later runs reuse it
    result = _tunery(["train", str(cfg)], timeout=1800, NPROC_PER_NODE="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting 2 training process(es)" in result.stderr and "Traceback" not in result.stderr
    assert "training on 2 processes with DeepSpeed ZeRO-2" in result.stderr
    log = _log(out)
    assert [r["current_steps"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_started_by_the_users_launcher_it_trains_unchanged(launcher, tiny_chatml_model, reference_dir, tmp_path):
    """`torchrun ... -m tunery train` and `accelerate launch ... -m tunery train`: no relaunch, DDP on 2 processes,
    the run log written once per step by rank 0."""
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out, max_samples=8,
                  num_train_epochs=None, max_steps=2)
    port = str(launch.free_port())
    start = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", port] if launcher == "torchrun" else
             # accelerate's multi-process launcher is named --multi_gpu; without a GPU its processes use gloo
             # (its --cpu flag starts ONE process whatever --num_processes says)
             [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", port])
    result = subprocess.run([*start, "-m", "tunery", "train", str(cfg)], env=_env(), capture_output=True, text=True,
                            timeout=900)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    assert "training on 2 processes with DDP" in text
    assert "relaunching" not in text.lower()
    assert [r["current_steps"] for r in _log(out)] == [1, 2]
    assert (out / "adapter_model.safetensors").is_file()
    assert text.count("training finished: outputs in") == 1


@pytest.mark.slow
def test_started_by_the_deepspeed_launcher_it_trains_unchanged(tiny_chatml_model, reference_dir, tmp_path):
    """`deepspeed --num_gpus 2 --module tunery train cfg.yaml` with a ZeRO-2 config: DeepSpeed's own launcher
    starts 2 processes (on a CPU it takes --num_gpus as the process count) and passes each `--local_rank=N`
    before `train`; Tunery drops that flag, does not relaunch, trains on both and writes the outputs once."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", tiny_chatml_model, reference_dir, out, max_samples=8,
                  num_train_epochs=None, max_steps=2,
                  deepspeed=str(REPO / "examples" / "deepspeed" / "ds_z2_config.json"))
    script = Path(sys.executable).parent / "deepspeed"  # the console script DeepSpeed installs
    runner = [str(script)] if script.is_file() else [sys.executable, "-m", "deepspeed.launcher.runner"]
    # the first run on a machine compiles DeepSpeed's CPU communication op (minutes), later runs reuse it
    result = subprocess.run([*runner, "--num_gpus", "2", "--master_port", str(launch.free_port()),
                             "--module", "tunery", "train", str(cfg)],
                            env=_env(), capture_output=True, text=True, timeout=1800)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    assert "--local_rank=1" in text  # DeepSpeed's launcher logs each process's command line
    assert "training on 2 processes with DeepSpeed ZeRO-2" in text
    assert "starting 1 training process" not in text and "torch.distributed.run" not in text  # no relaunch
    assert "unknown command" not in text and "Traceback" not in text
    log = _log(out)
    assert [r["current_steps"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)  # one row per step
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file()
    assert text.count("training finished: outputs in") == 1  # written once, by rank 0
