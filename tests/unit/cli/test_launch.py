"""`tunery train` relaunching itself under torchrun: when, with which flags, and how failures come back."""

from __future__ import annotations

import json
import sys

import pytest

from tunery.cli import launch
from tunery.errors import ConfigError


def test_no_relaunch_on_one_device_or_under_a_launcher():
    assert launch.plan_launch({}, devices=0) is None
    assert launch.plan_launch({}, devices=1) is None
    # torchrun / accelerate launch / deepspeed already started this process: never relaunch
    for env in ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "4"}, {"LOCAL_RANK": "1"}):
        assert launch.plan_launch({**env, "FORCE_TORCHRUN": "1"}, devices=8) is None
        assert launch.under_launcher(env)
    assert not launch.under_launcher({"RANK": "0"})  # LLaMA-Factory's node-rank spelling is not a launcher


def test_several_devices_or_force_torchrun_relaunch_with_lf_variables():
    plan = launch.plan_launch({"MASTER_PORT": "29123"}, devices=4)
    assert plan == launch.LaunchPlan(nproc_per_node=4, nnodes=1, node_rank=0, master_addr="127.0.0.1",
                                     master_port=29123)
    # FORCE_TORCHRUN on a CPU: one process unless NPROC_PER_NODE says more
    assert launch.plan_launch({"FORCE_TORCHRUN": "1", "MASTER_PORT": "29124"}, devices=0).nproc_per_node == 1
    env = {"FORCE_TORCHRUN": "true", "NPROC_PER_NODE": "2", "NNODES": "2", "NODE_RANK": "1",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    plan = launch.plan_launch(env, devices=0)
    assert (plan.nproc_per_node, plan.nnodes, plan.node_rank, plan.master_addr, plan.master_port) == (
        2, 2, 1, "10.0.0.1", 29500)
    assert plan.world_size == 4
    # LLaMA-Factory's docs name the node rank RANK
    env_rank = {k: v for k, v in env.items() if k != "NODE_RANK"} | {"RANK": "1"}
    assert launch.plan_launch(env_rank, devices=0).node_rank == 1
    # without MASTER_PORT a free port is picked (single node)
    port = launch.plan_launch({"FORCE_TORCHRUN": "1"}, devices=0).master_port
    assert 0 < port < 65536


@pytest.mark.parametrize("env, message", [
    ({"NNODES": "2"}, "needs MASTER_ADDR and MASTER_PORT"),
    ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "NODE_RANK=2 but NNODES=2"),
    ({"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE='two' is not a whole number"),
    ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE=0 is below 1"),
])
def test_unusable_variables_are_config_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        launch.plan_launch({"FORCE_TORCHRUN": "1", **env}, devices=0)


def test_torchrun_command_and_worker_env():
    plan = launch.LaunchPlan(nproc_per_node=2, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29500)
    cmd = launch.torchrun_command(plan, ["cfg.yaml", "--lora_rank", "4"], python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1",
                   "--nproc_per_node", "2", "--master_addr", "10.0.0.1", "--master_port", "29500",
                   "-m", "tunery", "train", "cfg.yaml", "--lora_rank", "4"]
    env = launch.worker_env({"PATH": "x"}, "/tmp/f", plan)
    assert env["TUNERY_LAUNCH_DIR"] == "/tmp/f" and env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "x"
    assert int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) >= 60
    assert launch.worker_env({"OMP_NUM_THREADS": "8"}, "/f", plan)["OMP_NUM_THREADS"] == "8"


def test_failures_and_stops_are_kept_only_in_relaunched_workers(tmp_path):
    worker = {"TUNERY_LAUNCH_DIR": str(tmp_path), "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    assert launch.record_failure("bad data", 2, {**worker, "RANK": "3"})
    assert launch.record_failure("bad data too", 2, {**worker, "RANK": "1"})
    assert not launch.record_failure("x", 2, {"LOCAL_RANK": "0", "WORLD_SIZE": "2"})  # user's own torchrun
    assert not launch.record_failure("x", 2, {"TUNERY_LAUNCH_DIR": str(tmp_path)})  # not a worker
    assert [f["rank"] for f in launch.read_failures(tmp_path)] == [1, 3]
    assert launch.read_failures(tmp_path)[0] == {"rank": 1, "message": "bad data too", "exit_code": 2}
    launch.record_stop("SIGTERM", "out/checkpoint-2", {**worker, "RANK": "0"})
    assert launch.read_stops(tmp_path) == [{"rank": 0, "signal": "SIGTERM", "checkpoint": "out/checkpoint-2"}]


def test_run_torchrun_returns_the_exit_code():
    assert launch.run_torchrun([sys.executable, "-c", "raise SystemExit(3)"], env={}) == 3


def test_worker_error_is_printed_with_its_rank(monkeypatch, capsys, tmp_path):
    from tunery.cli.main import main

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("TUNERY_LAUNCH_DIR", raising=False)
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith("tunery: error: [rank 1] ")
    # under Tunery's own relaunch the worker keeps the error for the relauncher instead of printing it
    monkeypatch.setenv("TUNERY_LAUNCH_DIR", str(tmp_path))
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err == ""
    assert "missing.yaml" in json.loads((tmp_path / "error-rank1.json").read_text())["message"]


def test_a_deepspeed_run_outside_a_launcher_relaunches_under_torchrun():
    """DeepSpeed needs the process-group variables a launcher sets (LLaMA-Factory relaunches too)."""
    plan = launch.plan_launch({"MASTER_PORT": "29125"}, devices=0, deepspeed=True)
    assert plan == launch.LaunchPlan(nproc_per_node=1, master_port=29125)  # one process on a CPU
    assert launch.plan_launch({"NPROC_PER_NODE": "2"}, devices=1, deepspeed=True).nproc_per_node == 2
    assert launch.plan_launch({}, devices=1, deepspeed=True).nproc_per_node == 1  # one GPU: one process
    # started by a launcher (torchrun, deepspeed, accelerate launch): used as it is
    assert launch.plan_launch({"LOCAL_RANK": "0", "WORLD_SIZE": "1"}, devices=0, deepspeed=True) is None


def test_ray_starts_its_own_workers_so_there_is_no_torchrun():
    assert launch.plan_launch({}, devices=4, ray=True) is None
    assert launch.plan_launch({"FORCE_TORCHRUN": "1"}, devices=0, ray=True, deepspeed=True) is None


@pytest.mark.parametrize("key, value", [("master_addr", "10.0.0.1"), ("master_port", 29500)])
def test_lf_ray_rendezvous_keys_are_refused_as_ray_train_picks_them(key, value):
    from tunery.config import parse_config

    raw = {"model_name_or_path": "/nonexistent/model", "dataset": "d", "output_dir": "o", key: value}
    with pytest.raises(ConfigError, match="Ray Train chooses the process group's address and port itself"):
        parse_config("train", raw)


def test_fsdp_is_refused_where_accelerate_would_quietly_run_ddp():
    """accelerate shards with FSDP only on accelerators: on a CPU (or with use_cpu) it would train with DDP."""
    accelerate_fsdp = {"ACCELERATE_USE_FSDP": "true"}  # what `accelerate launch` with an FSDP config sets
    with pytest.raises(ConfigError, match="FSDP needs CUDA here: no GPU or other accelerator is visible") as err:
        launch.check_fsdp_here(None, env=accelerate_fsdp, devices=0)
    assert "would train whole copies with DDP" in str(err.value) and "FORCE_TORCHRUN=1" in err.value.hint
    with pytest.raises(ConfigError, match="FSDP needs CUDA here"):
        launch.check_fsdp_here(["full_shard"], env={}, devices=0)  # the fsdp training setting
    with pytest.raises(ConfigError, match="use_cpu is set"):
        launch.check_fsdp_here(None, env={**accelerate_fsdp, "ACCELERATE_USE_CPU": "True"}, devices=2)
    with pytest.raises(ConfigError, match=r"QLoRA \+ FSDP \(quantization_bit: 4\) likewise needs GPUs"):
        launch.check_fsdp_here(None, 4, env=accelerate_fsdp, devices=0)
    # GPUs visible, or no FSDP asked for: nothing to refuse
    launch.check_fsdp_here(None, env=accelerate_fsdp, devices=2)
    launch.check_fsdp_here(["full_shard"], 4, env={}, devices=1)
    launch.check_fsdp_here(None, env={"ACCELERATE_USE_FSDP": "false"}, devices=0)
    launch.check_fsdp_here([], env={}, devices=0)


def test_tunery_train_refuses_fsdp_on_a_cpu_before_anything_loads(monkeypatch, capsys, tmp_path):
    """The refusal comes when the config is read: no torchrun starts, no model or data loads."""
    from tunery.cli import train as train_cli
    from tunery.cli.main import main

    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TUNERY_LAUNCH_DIR", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setattr(launch, "accelerator_count", lambda: 0)
    monkeypatch.setattr(train_cli, "relaunch", lambda *a: pytest.fail("torchrun must not start"))
    monkeypatch.setattr(train_cli, "run", lambda *a: pytest.fail("nothing may load"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model_name_or_path: /nonexistent/model\nstage: sft\ndo_train: true\ndataset: d\n"
                   f"output_dir: {tmp_path / 'out'}\nfinetuning_type: lora\n")
    assert main(["train", str(cfg)]) == 2
    assert capsys.readouterr().err.startswith("tunery: error: FSDP needs CUDA here")


def test_fsdp_requested_reads_the_setting_and_accelerate_launch(monkeypatch):
    from types import SimpleNamespace

    from tunery.train.distributed import fsdp_requested

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not fsdp_requested(SimpleNamespace(fsdp=[])) and fsdp_requested(SimpleNamespace(fsdp=["full_shard"]))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert fsdp_requested(SimpleNamespace(fsdp=[]))


def test_the_deepspeed_launchers_local_rank_argument_is_dropped(capsys):
    """`deepspeed --module tunery train cfg.yaml` runs `python -m tunery --local_rank=N train cfg.yaml` in each
    process (LOCAL_RANK is in the environment too); torch's legacy launcher spells it --local-rank."""
    from tunery.cli.main import main

    assert launch.without_local_rank(["--local_rank=1", "train", "cfg.yaml", "--lora_rank", "4"]) == [
        "train", "cfg.yaml", "--lora_rank", "4"]
    assert launch.without_local_rank(["--local-rank=0", "train", "cfg.yaml"]) == ["train", "cfg.yaml"]
    assert launch.without_local_rank(["train", "cfg.yaml", "--local_rank", "3"]) == ["train", "cfg.yaml"]
    # not the launcher's form: left for the command to judge
    assert launch.without_local_rank(["train", "--local_rank=x"]) == ["train", "--local_rank=x"]
    assert launch.without_local_rank(["train", "--local_rank", "cfg.yaml"]) == ["train", "--local_rank", "cfg.yaml"]
    assert main(["--local_rank=0", "train", "--help"]) == 0
    assert "tunery train" in capsys.readouterr().out
