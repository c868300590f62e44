"""Start ``tunery train`` on several processes through torchrun, the way LLaMA-Factory's CLI does.

Tunery writes no launcher, process group or sharding code: ``python -m torch.distributed.run``
(torchrun) starts the processes and sets RANK/LOCAL_RANK/WORLD_SIZE, transformers' Trainer (through
accelerate) joins the process group and wraps the model in DDP, DeepSpeed or FSDP. This module only
decides *whether* to relaunch and builds the command:

- already under a launcher (torchrun, ``accelerate launch``, ``deepspeed``: LOCAL_RANK or WORLD_SIZE
  set): run as is (the ``--local_rank=N`` argument ``deepspeed`` adds is dropped: :func:`without_local_rank`);
- Ray Train (``use_ray``) starts its own workers: never relaunch;
- ``FORCE_TORCHRUN=1``, more than one accelerator visible, or a ``deepspeed`` config (DeepSpeed
  needs the process-group variables a launcher sets, as in LLaMA-Factory): relaunch with
  ``--nnodes NNODES --node_rank NODE_RANK --nproc_per_node NPROC_PER_NODE --master_addr MASTER_ADDR
  --master_port MASTER_PORT`` (defaults: 1 node, rank 0, one process per accelerator (1 on a CPU),
  127.0.0.1, a free port).

A failing process writes its user error to ``$TUNERY_LAUNCH_DIR/error-rank<RANK>.json``; the
relaunching process reads it after torchrun ends, prints it once and exits with its code (2).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunery.config.validation import fsdp_requested
from tunery.errors import ConfigError

LAUNCHER_VARS = ("LOCAL_RANK", "WORLD_SIZE")  # set by torchrun, accelerate launch and deepspeed
FAILURE_DIR_VAR = "TUNERY_LAUNCH_DIR"
TRUE = ("1", "true", "yes", "y", "on")
# torchrun waits this long (s) for the workers after forwarding SIGTERM/SIGINT, then kills them: long
# enough for the checkpoint every process saves when it is stopped (its default is 30 s).
SHUTDOWN_TIMEOUT = "600"


@dataclass(frozen=True)
class LaunchPlan:
    """torchrun's rendezvous settings for this node."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def under_launcher(env: dict[str, str] | None = None) -> bool:
    """True when a launcher (torchrun, accelerate launch, deepspeed) started this process."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in LAUNCHER_VARS)


def without_local_rank(argv: list[str]) -> list[str]:
    """``argv`` without the ``--local_rank=N`` the ``deepspeed`` launcher (and torch's legacy
    ``torch.distributed.launch``: ``--local-rank=N``) adds to each process's command line.

    ``deepspeed --module tunery train cfg.yaml`` starts ``python -m tunery --local_rank=N train cfg.yaml``
    (the flag right after the module, before the command). The same launcher also sets LOCAL_RANK in the
    environment, which is what transformers and Tunery read, so the flag is only the launcher's protocol:
    taken out wherever it stands, in both spellings, as ``--local_rank=N`` or ``--local_rank N`` (N a whole
    number; anything else is left for the command to judge).
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if name in ("--local_rank", "--local-rank"):
            if eq and value.strip().isdigit():
                i += 1
                continue
            if not eq and i + 1 < len(argv) and argv[i + 1].strip().isdigit():
                i += 2
                continue
        out.append(token)
        i += 1
    return out


def accelerator_count() -> int:
    """Accelerators torch sees (CUDA/ROCm GPUs, XPUs, NPUs...); 0 on a CPU-only machine."""
    import torch  # seconds to import; only `tunery train` pays it, when it is about to train anyway

    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "device_count"):
        return int(accel.device_count())
    return torch.cuda.device_count()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _int_var(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number", hint=f"set {name} to a number, or unset it") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}", hint=f"set {name} to at least {minimum}")
    return value


def plan_launch(env: dict[str, str] | None = None, devices: int | None = None, *, deepspeed: bool = False,
                ray: bool = False) -> LaunchPlan | None:
    """The torchrun plan for ``tunery train``, or None to train in this process.

    None when a launcher already started this process, when Ray Train will start the workers
    (``ray``), or when FORCE_TORCHRUN is off, no DeepSpeed config is set (``deepspeed``) and at most
    one accelerator is visible (``devices``: default :func:`accelerator_count`). A DeepSpeed run
    outside a launcher gets torchrun with one process per accelerator (1 on a CPU) unless
    NPROC_PER_NODE says otherwise, as with FORCE_TORCHRUN. Raises ConfigError
    for unusable variables, and when NNODES > 1 lacks MASTER_ADDR or MASTER_PORT (every node must
    name the same address and port).
    """
    env = os.environ if env is None else env
    if under_launcher(env) or ray:
        return None
    forced = deepspeed or env.get("FORCE_TORCHRUN", "").strip().lower() in TRUE
    if not forced:
        devices = accelerator_count() if devices is None else devices
        if devices <= 1:
            return None
    elif devices is None and not env.get("NPROC_PER_NODE"):
        devices = accelerator_count()
    nnodes = _int_var(env, "NNODES", 1, 1)
    # LLaMA-Factory's docs also name the node rank RANK; NODE_RANK wins when both are set.
    node_rank = _int_var(env, "NODE_RANK", _int_var(env, "RANK", 0, 0), 0)
    if node_rank >= nnodes:
        raise ConfigError(f"NODE_RANK={node_rank} but NNODES={nnodes}", hint="node ranks run from 0 to NNODES-1")
    if nnodes > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise ConfigError(
            f"NNODES={nnodes} needs MASTER_ADDR and MASTER_PORT",
            hint="set both to the first node's address and a free port, the same on every node",
        )
    nproc = _int_var(env, "NPROC_PER_NODE", max(1, devices or 0), 1)
    port = _int_var(env, "MASTER_PORT", 0, 1) or free_port()
    return LaunchPlan(nproc_per_node=nproc, nnodes=nnodes, node_rank=node_rank,
                      master_addr=env.get("MASTER_ADDR", "").strip() or "127.0.0.1", master_port=port)


def check_fsdp_here(fsdp_setting: object, quantization_bit: int | None = None, env: dict[str, str] | None = None,
                    devices: int | None = None) -> None:
    """Refuse FSDP on a machine where accelerate would not shard (called when the config is read).

    accelerate (1.15) selects FSDP only for GPU/XPU/NPU/... process groups; with no accelerator
    (``devices``: default :func:`accelerator_count`) or ``use_cpu`` (ACCELERATE_USE_CPU) it runs its
    multi-CPU mode and ignores the FSDP plugin, so the run would train whole copies with DDP (with a
    bf16 config it fails first: "no available devices found"). torch's own FSDP/FSDP2 does run on
    gloo, but neither accelerate nor transformers' Trainer wires it there. Raises ConfigError.
    """
    env = os.environ if env is None else env
    if not fsdp_requested(fsdp_setting, env):
        return
    if env.get("ACCELERATE_USE_CPU", "").strip().lower() in TRUE:
        where = "use_cpu is set"
    elif (accelerator_count() if devices is None else devices) == 0:
        where = "no GPU or other accelerator is visible"
    else:
        return
    qlora = (f" QLoRA + FSDP (quantization_bit: {quantization_bit}) likewise needs GPUs: FSDP must shard "
             "the 4-bit weights, stored in the compute dtype.") if quantization_bit else ""
    raise ConfigError(
        f"FSDP needs CUDA here: {where}, and accelerate shards with FSDP only on GPUs and other "
        "accelerators; on a CPU it picks its multi-CPU mode, ignores the FSDP config and would train whole "
        "copies with DDP (with a bf16 config it stops at 'no available devices found'). torch's FSDP runs "
        f"on gloo, but accelerate and transformers' Trainer do not use it there.{qlora}",
        hint="run it on GPUs, or train with DDP on this machine: FORCE_TORCHRUN=1 NPROC_PER_NODE=N "
             "tunery train cfg.yaml (docs/distributed.md)",
    )


def torchrun_command(plan: LaunchPlan, tokens: list[str], python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run <rendezvous flags> -m tunery train <tokens>``."""
    return [
        python or sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(plan.nnodes), "--node_rank", str(plan.node_rank),
        "--nproc_per_node", str(plan.nproc_per_node),
        "--master_addr", plan.master_addr, "--master_port", str(plan.master_port),
        "-m", "tunery", "train", *tokens,
    ]


def worker_env(env: dict[str, str], failure_dir: str, plan: LaunchPlan) -> dict[str, str]:
    """The environment torchrun and its workers get: the failure folder, torchrun's grace period for
    a stopped run's checkpoint, and one OpenMP thread per process unless the user chose a number (torchrun
    sets 1 itself only when more than one process shares the node)."""
    out = dict(env)
    out[FAILURE_DIR_VAR] = failure_dir
    out.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT)
    if plan.nproc_per_node > 1:
        out.setdefault("OMP_NUM_THREADS", "1")
    return out


def run_torchrun(command: list[str], env: dict[str, str]) -> int:
    """Run torchrun and return its exit code.

    torchrun runs in its own session, so a Ctrl-C in the terminal reaches the run once, through this
    process: SIGINT and SIGTERM received here go straight to the workers (torchrun's children), each
    of which finishes its step, saves its part of the checkpoint and exits 0 (train/signals.py), so
    torchrun ends normally. Before the workers exist the signal goes to torchrun itself.
    """
    import psutil  # a dependency; only a relaunching `tunery train` needs it

    proc = subprocess.Popen(command, env=env, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is not None:
            return
        try:
            workers = psutil.Process(proc.pid).children()
        except psutil.Error:
            workers = []
        for target in workers or [psutil.Process(proc.pid)]:
            try:
                target.send_signal(signum)
            except psutil.Error:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def record_failure(message: str, exit_code: int, env: dict[str, str] | None = None) -> bool:
    """In a worker of a relaunched run, keep ``message`` for the relaunching process; True when kept
    (the worker then need not print it: the relauncher prints it once)."""
    env = os.environ if env is None else env
    folder = env.get(FAILURE_DIR_VAR)
    if not folder or not under_launcher(env):
        return False
    rank = env.get("RANK", "0")
    try:
        path = Path(folder) / f"error-rank{rank}.json"
        path.write_text(json.dumps({"rank": int(rank), "message": message, "exit_code": exit_code}))
    except (OSError, ValueError):
        return False
    return True


def record_stop(signal_name: str, checkpoint: str | None, env: dict[str, str] | None = None) -> None:
    """In a worker of a relaunched run: a signal stopped training cleanly and ``checkpoint`` was saved."""
    env = os.environ if env is None else env
    folder = env.get(FAILURE_DIR_VAR)
    if folder and under_launcher(env):
        rank = env.get("RANK", "0")
        try:
            (Path(folder) / f"stopped-rank{rank}.json").write_text(
                json.dumps({"rank": int(rank), "signal": signal_name, "checkpoint": checkpoint}))
        except (OSError, ValueError):
            pass


def read_stops(folder: str | Path) -> list[dict]:
    """What :func:`record_stop` kept, lowest rank first."""
    return _read_records(folder, "stopped-rank*.json")


def read_failures(folder: str | Path) -> list[dict]:
    """The user errors the workers kept, lowest rank first."""
    return _read_records(folder, "error-rank*.json")


def _read_records(folder: str | Path, pattern: str) -> list[dict]:
    found = []
    for path in sorted(Path(folder).glob(pattern)):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda f: f.get("rank", 0))
