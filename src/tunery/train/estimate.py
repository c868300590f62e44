"""Peak memory and time of a training run, estimated before it starts (``tunery estimate``, dry_run).

One function, :func:`estimate_run`, gives the figures both ``tunery estimate`` and ``tunery train
--dry_run true`` print (through ``tunery.train.dry_run.build_plan``). Parameter counts are exact: the
model is built on the meta device (no weights read) and given the same adapter setup as the real
run. Memory and time are formulas, stated here so a user can check them:

- weights: parameters x bytes of the load dtype; with quantization the linear layers take 0.5625
  (4-bit with scales) or 1 (8-bit) byte per weight, embeddings and norms keep the load dtype, and
  loading briefly holds those layers in full precision too;
- gradients + AdamW states: trainable x (4 + 8) bytes (fp32 master copies);
- other models held in memory: a frozen reference (dpo/kto/ppo/grpo with full/freeze training, or
  ``ref_model``; LoRA uses the base with the adapter off, no copy) and a reward model
  (ppo/grpo ``reward_model`` of type full), each taken as the size of the base;
- activations per token and layer (fp32): about (22 x hidden + 5 x intermediate) values without
  gradient checkpointing (see ACTIVATION_HIDDEN); a checkpointed layer keeps one hidden state, and
  with every layer checkpointed one full layer is recomputed at a time (:func:`layer_activation_values`; pt/sft's fast path
  checkpoints only as many layers as :func:`plan_checkpointing` finds the memory budget needs);
- the output head: logits, their softmax and its gradient, 3 x vocab x 4 bytes per token (rm has a
  scalar head: none; pt/sft's fast path computes them in chunks of 1,024 labelled tokens, so at most
  one chunk); generation (ppo/grpo) adds the KV cache of the sampled batch;
- time: FLOPs per step over a measured matmul rate (:func:`machine_rates`; on a CPU the rate of
  the idle machine) at an assumed efficiency. Trained tokens
  cost 6 x parameters (full) or 4 x (LoRA/freeze: frozen weights need no weight gradient), + 2 x
  the share of checkpointed layers (their forward runs again); forward-only passes (reference, reward model, rollout log-probs) cost
  2 x parameters per token; each generated token costs the larger of its FLOPs and one read of the
  weights at the measured memory bandwidth.

What one example sends through which model depends on the stage (:func:`stage_passes`): pt/sft
one sequence; rm both sequences (chosen + rejected) through a scalar-head model; dpo both sequences
through the policy and the reference; orpo/simpo both, no reference; kto the sequence plus a
mismatched KL sequence, both also through the reference; ppo a generated reply per prompt, then
policy + value, reference and reward-model forward passes and ``ppo_epochs`` trained passes; grpo
one completion per example (``num_generations`` per prompt) through the policy, and the reference
when ``pref_beta`` > 0.

Several devices (:func:`parallelism`) divide the optimizer steps of an epoch by the data-parallel
size and, with DeepSpeed ZeRO or FSDP, the model states of each device (:func:`sharded_states`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

from tunery.errors import ConfigError
from tunery.logging import get_logger, quieted
from tunery.model.adapter import prepare_for_training
from tunery.model.loader import count_parameters, model_class_for, pick_dtype, resolve
from tunery.train.distributed import ray_worker_resources
from tunery.train.fast_path import fast_path_enabled
from tunery.train.losses import DEFAULT_CHUNK_TOKENS

logger = get_logger(__name__)

GIB = 1024**3
# torch, transformers, datasets, tokenizer: the peak RSS of a LoRA run of a 0.2M-parameter model
# (0.57 GiB, bench/estimate_accuracy.py case tiny-sft), rounded up.
RUNTIME_OVERHEAD = int(0.6 * GIB)
EFFICIENCY = 0.35
ADAPTER_LOGGER = prepare_for_training.__module__  # where the adapter setup is logged
# Values autograd keeps per token and layer in an eager transformers decoder (fp32): the two RMSNorms
# (input, upcast, normalised: 3 x hidden each), rotary q/k and their rotated halves (4 x hidden),
# q, k, v, the attention output and o_proj's input (~5 x hidden), residuals and the MLP's input
# (~7 x hidden), gate, up, act(gate), their product and down_proj's input (5 x intermediate). The
# textbook count (Korthikanti et al. 2022) is lower; this one matches the measured growth of peak
# RSS with tokens on SmolLM2-135M (about 2.6 MB per token, bench/estimate_accuracy.py).
ACTIVATION_HIDDEN, ACTIVATION_INTER = 22, 5
PAIRWISE = ("rm", "dpo", "orpo", "simpo")
REFERENCE_FREE_LOSSES = ("orpo", "simpo")


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class DataShape:
    """Mean token counts of one training example, from the tokenized data or assumed from cutoff_len.

    ``sequence_tokens``: tokens of the example's trained sequences together (pt/sft/kto: the row;
    rm/dpo/orpo/simpo: chosen + rejected, each with the prompt); ``prompt_tokens``: the prompt (ppo
    and grpo train on replies they generate, up to ``max_new_tokens`` each); ``longest``: the
    longest row; ``examples``: rows of the training set (None: unknown).
    """

    sequence_tokens: float
    prompt_tokens: float = 0.0
    longest: int = 0
    examples: int | None = None
    assumed: bool = False
    trained_tokens: float | None = None  # mean label tokens per example (None: all of them)


def assumed_shape(cfg: Any) -> DataShape:
    """Every row taken as ``cutoff_len`` tokens (no dataset given): pairwise rows count two sequences."""
    cutoff = cfg.data.cutoff_len
    sequences = 2 if cfg.finetuning.stage in PAIRWISE else 1
    return DataShape(sequence_tokens=float(sequences * cutoff), prompt_tokens=float(cutoff), longest=cutoff,
                     assumed=True)


@dataclass(frozen=True)
class Parallelism:
    """Devices and how model states are split across them.

    ``devices``: data-parallel size; ``zero_stage``: 0 (each device holds everything), 1
    (optimizer states sharded), 2 (+ gradients), 3 (+ weights); ``offload_optimizer`` /
    ``offload_params``: those states live in host memory instead.
    """

    devices: int = 1
    source: str = "one device"
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    scheme: str = ""

    def describe(self) -> str:
        text = f"{self.devices} device{'s' if self.devices != 1 else ''} ({self.source})"
        if self.scheme:
            text += f", {self.scheme}"
        offloaded = [name for name, on in (("optimizer", self.offload_optimizer), ("weights", self.offload_params)) if on]
        if offloaded:
            text += f", {' and '.join(offloaded)} offloaded to host memory"
        return text


def _positive_int(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"environment variable {key}={value!r} is not a whole number",
                          hint=f"set {key} to the count of devices/nodes, e.g. {key}=2") from None
    if number < 1:
        raise ConfigError(f"environment variable {key}={value} must be at least 1")
    return number


def device_count(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(data-parallel size, where it came from), read like LLaMA-Factory's launcher does.

    ``WORLD_SIZE`` (set by torchrun) wins; else ``NPROC_PER_NODE`` x ``NNODES`` (LLaMA-Factory's
    launch settings, each defaulting to 1 when only the other is set); else the visible GPUs.
    """
    environ = os.environ if environ is None else environ
    world = _positive_int(environ, "WORLD_SIZE")
    if world:
        return world, f"WORLD_SIZE={world}"
    per_node, nodes = _positive_int(environ, "NPROC_PER_NODE"), _positive_int(environ, "NNODES")
    if per_node or nodes:
        return (per_node or 1) * (nodes or 1), f"NPROC_PER_NODE={per_node or 1} x NNODES={nodes or 1}"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1:
        return gpus, f"{gpus} visible GPUs"
    return 1, "one device"


def _offloaded(section: Any) -> bool:
    return isinstance(section, dict) and str(section.get("device", "none")).lower() in ("cpu", "nvme")


def deepspeed_settings(source: Any) -> tuple[int, bool, bool, str]:
    """(ZeRO stage, optimizer offloaded, weights offloaded, label) of a ``deepspeed:`` JSON file or dict."""
    if isinstance(source, dict):
        ds, name = source, ""
    else:
        path = Path(str(source))
        try:
            ds = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"deepspeed config not found: {path}", hint="set deepspeed: to a JSON file") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read deepspeed config {path}: {exc}") from None
        name = f" ({path.name})"
    label = f"DeepSpeed{name}"
    zero = ds.get("zero_optimization") or {}
    try:
        stage = int(zero.get("stage", 0))
    except (TypeError, ValueError):
        stage = -1
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{label}: zero_optimization.stage must be 0, 1, 2 or 3, not {zero.get('stage')!r}")
    return stage, _offloaded(zero.get("offload_optimizer")), stage == 3 and _offloaded(zero.get("offload_param")), \
        f"DeepSpeed ZeRO-{stage}{name}"


def ray_devices(training: Any) -> tuple[int, str]:
    """(workers, description) of a ``use_ray`` run: Ray Train starts ``ray_num_workers`` training
    processes, each with ``resources_per_worker`` (:func:`ray_worker_resources`), one device each."""
    workers = int(training.ray_num_workers)
    resources = ray_worker_resources(training, torch.cuda.is_available())
    each = ", ".join(f"{k}: {v:g}" if isinstance(v, (int, float)) else f"{k}: {v}" for k, v in resources.items())
    return workers, f"Ray Train, ray_num_workers={workers} with {{{each}}} each"


def parallelism(cfg: Any, environ: Mapping[str, str] | None = None) -> Parallelism:
    """The run's devices and sharding: Ray Train's workers with ``use_ray`` (:func:`ray_devices`), else the
    environment (see :func:`device_count`); ``deepspeed:`` or ``fsdp`` for the sharding."""
    args = cfg.training
    devices, source = ray_devices(args) if getattr(args, "use_ray", False) else device_count(environ)
    ds = getattr(args, "deepspeed", None) or (cfg.raw or {}).get("deepspeed")
    if ds:
        stage, opt, params, scheme = deepspeed_settings(ds)
        return Parallelism(devices, source, stage, opt, params, scheme)
    if getattr(args, "fsdp", None):
        fsdp = getattr(args, "fsdp_config", None) or {}
        full = bool(fsdp.get("reshard_after_forward", True))
        offload = bool(fsdp.get("cpu_offload", False))
        scheme = "FSDP full_shard" if full else "FSDP shard_grad_op"
        return Parallelism(devices, source, 3 if full else 2, offload, offload and full, scheme)
    return Parallelism(devices, source)


def sharded_states(weights: int, gradients: int, optimizer: int, par: Parallelism) -> tuple[int, int, int, int]:
    """(weights, gradients, optimizer, host bytes) one device holds under ZeRO/FSDP sharding.

    ZeRO (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
    Models", sec. 5.1): with N data-parallel devices, stage 1 (P_os) keeps 1/N of the optimizer
    states per device, stage 2 (P_os+g) also 1/N of the gradients, stage 3 (P_os+g+p) also 1/N of
    the weights; for a model of psi parameters and K optimizer bytes per parameter this is
    2psi + 2psi + K psi/N, 2psi + (2 + K) psi/N and (2 + 2 + K) psi/N bytes. FSDP full_shard is
    stage 3, shard_grad_op stage 2. Offloaded states move whole to host memory (the last value).
    Layers gathered for a forward/backward pass under stage 3 are transient and not counted.
    """
    n = max(par.devices, 1)
    stage = par.zero_stage
    if stage >= 1:
        optimizer = math.ceil(optimizer / n)
    if stage >= 2:
        gradients = math.ceil(gradients / n)
    if stage >= 3:
        weights = math.ceil(weights / n)
    host = 0
    if par.offload_optimizer:
        host, optimizer = host + optimizer, 0
    if par.offload_params:
        host, weights = host + weights, 0
    return weights, gradients, optimizer, host


# ------------------------------------------------------------------------------------ stage passes
@dataclass(frozen=True)
class Passes:
    """Tokens one example sends through each model per optimizer step (means).

    ``trained``: forward + backward through the policy; ``policy_forward``: forward only through
    the policy (kto's KL sequence, ppo's rollout log-probs and values); ``reference``: forward
    through the reference model; ``reward``: forward through a reward model; ``generated``: tokens
    sampled; ``micro_tokens``: tokens of one example in a micro-batch (activation memory);
    ``vocab_head``: False for rm's scalar head; ``models``: what the figures cover, in words.
    """

    trained: float
    micro_tokens: float
    policy_forward: float = 0.0
    reference: float = 0.0
    reward: float = 0.0
    generated: float = 0.0
    vocab_head: bool = True
    models: tuple[str, ...] = ()


def _max_new_tokens(cfg: Any) -> int:
    generation = getattr(cfg, "generation", None)
    value = getattr(generation, "max_new_tokens", None) if generation is not None else None
    return int(value) if value and value > 0 else 1024


def reference_in_memory(cfg: Any) -> bool:
    """A separate frozen reference is loaded: ``ref_model`` set, or full/freeze training (LoRA/OFT: base, adapter off)."""
    ft = cfg.finetuning
    return bool(ft.ref_model) or not ft.uses_adapter


def stage_passes(cfg: Any, shape: DataShape) -> Passes:
    """What one example of ``shape`` costs in stage ``cfg.finetuning.stage`` (see the module docstring)."""
    ft = cfg.finetuning
    stage = ft.stage
    seq = shape.sequence_tokens
    if stage in ("pt", "sft"):
        return Passes(trained=seq, micro_tokens=seq, models=("policy",))
    if stage == "rm":
        return Passes(trained=seq, micro_tokens=seq, vocab_head=False, models=("scalar-head model: chosen + rejected",))
    if stage in ("dpo", "orpo", "simpo"):
        if ft.pref_loss in REFERENCE_FREE_LOSSES:
            return Passes(trained=seq, micro_tokens=seq, models=("policy: chosen + rejected (no reference)",))
        return Passes(trained=seq, micro_tokens=seq, reference=seq,
                      models=("policy: chosen + rejected", "reference forward: chosen + rejected"))
    if stage == "kto":
        return Passes(trained=seq, micro_tokens=seq, policy_forward=seq, reference=2 * seq,
                      models=("policy + KL sequence", "reference forward: both"))
    reply = _max_new_tokens(cfg)
    full = shape.prompt_tokens + reply
    if stage == "ppo":
        epochs = max(getattr(ft, "ppo_epochs", 1), 1)
        scored = 0.0 if _reward_is_api(cfg) else full
        return Passes(trained=epochs * full, micro_tokens=full, policy_forward=full, reference=full, reward=scored,
                      generated=reply, models=(f"generation (up to {reply} tokens)", "policy + value head",
                                               "reference", "reward model", f"{epochs} ppo_epochs"))
    if stage == "grpo":
        reference = full if ft.pref_beta > 0 else 0.0
        scored = full if getattr(ft, "reward_model", None) and not _reward_is_api(cfg) else 0.0
        models = [f"{ft.num_generations} completions per prompt (up to {reply} tokens)", "policy"]
        if reference:
            models.append("reference (pref_beta > 0)")
        if scored:
            models.append("reward model")
        return Passes(trained=full, micro_tokens=full, reference=reference, reward=scored, generated=reply,
                      models=tuple(models))
    raise ConfigError(f"no estimate for stage '{stage}'")


def _reward_is_api(cfg: Any) -> bool:
    ft = cfg.finetuning
    model = getattr(ft, "reward_model", None) or ""
    return ft.reward_model_type == "api" or model.startswith(("http://", "https://"))


def extra_model_weights(cfg: Any, base_weights: int) -> tuple[int, list[str]]:
    """Bytes of the frozen models held beside the policy (reference, reward model), each as big as the base."""
    ft, stage = cfg.finetuning, cfg.finetuning.stage
    extra, names = 0, []
    needs_reference = (stage == "dpo" and ft.pref_loss not in REFERENCE_FREE_LOSSES) or stage in ("kto", "ppo") or (
        stage == "grpo" and ft.pref_beta > 0)
    if needs_reference and reference_in_memory(cfg):
        extra += base_weights
        names.append("reference")
    if stage in ("ppo", "grpo") and ft.reward_model and not _reward_is_api(cfg):
        if ft.reward_model_type == "full":
            extra += base_weights
            names.append("reward model")
    return extra, names


# ------------------------------------------------------------------------------------ the figures
@dataclass
class Estimate:
    """Memory of one device (bytes) and time of one optimizer step (seconds) of a training run."""

    trainable: int
    total: int
    dtype: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    tokens_per_step: int
    flops_per_step: float
    seconds_per_step: float | None = None
    load_weights: int = 0  # a quantized base is read in full precision before it is quantized
    other_models: int = 0  # frozen reference / reward model weights
    host_bytes: int = 0  # states offloaded to host memory (ZeRO/FSDP offload)
    parallel: Parallelism = field(default_factory=Parallelism)
    covers: tuple[str, ...] = ()
    layers: int = 0  # decoder layers
    checkpointed_layers: int = 0  # of those, recomputed in backward (gradient checkpointing)
    layer_activations: int = 0  # bytes one layer adds when it is not checkpointed

    @property
    def flops_per_token(self) -> float:
        return self.flops_per_step / max(self.tokens_per_step, 1)

    @property
    def peak_bytes(self) -> int:
        """Peak memory of one device: training states, or loading a quantized base, plus the runtime."""
        training = (self.weights + self.other_models + self.gradients + self.optimizer + self.activations
                    + self.logits)
        return max(training, self.weights + self.other_models + self.load_weights) + RUNTIME_OVERHEAD

    def lines(self, steps: int | None = None) -> list[str]:
        per_device = " per device" if self.parallel.devices > 1 or self.parallel.zero_stage else ""
        out = [
            f"parameters: {self.trainable:,} trainable of {self.total:,} ({100 * self.trainable / max(self.total, 1):.3f}%)",
            f"precision: {self.dtype}",
            f"devices: {self.parallel.describe()}",
        ]
        if self.covers:
            out.append(f"each step runs: {', '.join(self.covers)}")
        parts = f"weights {self.weights / GIB:.2f}"
        if self.other_models:
            parts += f", frozen reference/reward models {self.other_models / GIB:.2f}"
        out.append(
            f"estimated peak memory{per_device}: {self.peak_bytes / GIB:.2f} GiB ({parts}, "
            f"gradients+optimizer {(self.gradients + self.optimizer) / GIB:.2f}, activations "
            f"{self.activations / GIB:.2f}, output head {self.logits / GIB:.2f}, runtime {RUNTIME_OVERHEAD / GIB:.2f})")
        if self.host_bytes:
            out.append(f"host memory for offloaded states{per_device}: {self.host_bytes / GIB:.2f} GiB")
        if self.seconds_per_step is not None:
            line = f"estimated time: {self.seconds_per_step:.2f} s/step"
            if steps:
                line += f", {self.seconds_per_step * steps / 60:.1f} min for {steps} steps"
            out.append(line + f" (at {int(EFFICIENCY * 100)}% of this machine's measured matmul rate; "
                       + ("a GPU's" if torch.cuda.is_available() else "an idle CPU's: other jobs slow it down")
                       + ("; communication between devices not counted)" if self.parallel.devices > 1 else ")"))
        return out


def quantizable_parameters(model: torch.nn.Module) -> int:
    """Weights of the linear layers bitsandbytes quantizes (all but the output head)."""
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


@contextlib.contextmanager
def _without_zero3_init(cfg: Any) -> Iterator[None]:
    """A weightless model for counting, even when the run's settings turn on DeepSpeed ZeRO-3.

    Building the training settings with a ZeRO-3 config makes transformers create every model inside
    ``deepspeed.zero.Init``, which starts a process group (and, outside a launcher, looks for MPI).
    The plan only counts parameters on the meta device, so the setting is held back meanwhile."""
    ds_config = getattr(cfg.training, "hf_deepspeed_config", None)
    if ds_config is None:
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(ds_config)


def _text_config(config: Any) -> Any:
    """The language model's config: a vision/audio-language model nests it (``text_config``)."""
    try:
        return config.get_text_config(decoder=True)
    except ValueError:  # more than one text part: keep the top-level figures
        return config


def planned_model(cfg: Any) -> tuple[Any, int, int, int]:
    """(config, trainable, total, quantizable) with the run's adapter setup applied to a weightless model."""
    path = resolve(cfg.model).path
    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    with torch.device("meta"), _without_zero3_init(cfg):
        auto_cls = model_class_for(config) or AutoModelForCausalLM  # a VLM: its multimodal class
        model = auto_cls.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    model_args, ft = copy.copy(cfg.model), copy.copy(cfg.finetuning)
    # Same trainable set without touching weights: no quantization, no SVD init, no stacked adapters.
    model_args.quantization_bit, model_args.adapter_name_or_path = None, None
    model_args.disable_gradient_checkpointing, model_args.print_param_status = True, False
    ft.pissa_init = False
    quantizable = quantizable_parameters(model)
    model = prepare_for_training(model, model_args, ft, None)
    trainable, total = count_parameters(model)
    return config, trainable, total, quantizable


@functools.lru_cache(maxsize=1)
def machine_rates(seconds: float = 0.3) -> tuple[float, float]:
    """(matmul FLOP/s, memory bandwidth in bytes/s) of this machine, measured once per process.

    On a GPU: a bf16 matmul and a copy on device 0, in wall time. On a CPU: fp32, timed in CPU time
    of this process over torch's threads, i.e. the rate of an idle machine: other jobs on the same
    cores do not change it (a shared machine trains slower than estimated, by its load). The best
    of three short trials; one figure per process.
    """
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    threads = 1 if cuda else max(torch.get_num_threads(), 1)

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time() / threads

    size = 4096 if cuda else 1024
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best_flops = 0.0
    for _ in range(3):
        count, start, wall = 0, clock(), time.perf_counter()
        while time.perf_counter() - wall < seconds / 3:
            torch.mm(a, b)
            count += 1
        best_flops = max(best_flops, 2 * size**3 * count / max(clock() - start, 1e-9))
    src = torch.empty(64 * 1024 * 1024 if cuda else 16 * 1024 * 1024, device=device)  # beyond the caches
    dst = torch.empty_like(src)
    best_bandwidth = 0.0
    for _ in range(3):
        start = clock()
        for _ in range(4):
            dst.copy_(src)
        best_bandwidth = max(best_bandwidth, 4 * 2 * src.numel() * 4 / max(clock() - start, 1e-9))
    return best_flops, best_bandwidth


def measured_matmul_flops(seconds: float = 0.3) -> float:
    """Matmul FLOP/s of this machine (see :func:`machine_rates`)."""
    return machine_rates(seconds)[0]


def weight_bytes(model_args: Any, dtype: torch.dtype, total: int, quantizable: int, bits: int | None = None) -> int:
    """Bytes of the loaded weights: quantized linear layers, the rest (embeddings, norms) in ``dtype``."""
    full = torch.tensor([], dtype=dtype).element_size()
    bits = model_args.quantization_bit if bits is None else bits
    per_quantized = {4: 0.5625, 8: 1.0}.get(bits or 0)
    if per_quantized is None:
        return total * full
    return int(quantizable * per_quantized + (total - quantizable) * full)


def _completions(cfg: Any) -> int:
    return max(cfg.finetuning.num_generations, 1) if cfg.finetuning.stage == "grpo" else 1


def examples_per_step(cfg: Any) -> int:
    """Examples one device trains on per optimizer step (ppo: x ppo_buffer_size; grpo: completions)."""
    args = cfg.training
    per_step = max(args.per_device_train_batch_size, 1) * max(args.gradient_accumulation_steps, 1)
    if cfg.finetuning.stage == "ppo":
        per_step *= max(cfg.finetuning.ppo_buffer_size, 1)
    return per_step


def estimate_run(cfg: Any, *, shape: DataShape | None = None, flops: float | None = None,
                 bandwidth: float | None = None, par: Parallelism | None = None,
                 tokens_per_step: int | None = None, longest_row: int | None = None,
                 checkpointed_layers: int | None = None) -> Estimate:
    """Memory (bytes, one device) and time (s) of one optimizer step of ``cfg``.

    ``shape``: the data (:class:`DataShape`); default every row at cutoff_len. ``tokens_per_step``
    (with ``longest_row``) is the older form: that many tokens per step per device. ``flops``: the
    machine's FLOP/s (None: no time); ``bandwidth``: bytes/s for generation (default from
    :func:`machine_rates` when ``flops`` is given). ``par``: devices and sharding (default
    :func:`parallelism` of ``cfg``). ``checkpointed_layers``: decoder layers under gradient checkpointing
    (None: every layer, or none with ``disable_gradient_checkpointing``). Raises ConfigError for an unreadable deepspeed file or
    device count.
    """
    par = parallelism(cfg) if par is None else par
    per_step = examples_per_step(cfg)
    if shape is not None and shape.examples:  # a set smaller than one step trains on what it has
        per_step = max(1, min(per_step, math.ceil(shape.examples * _completions(cfg) / max(par.devices, 1))))
    if shape is None:
        if tokens_per_step is not None:
            mean = tokens_per_step / per_step
            shape = DataShape(sequence_tokens=mean, prompt_tokens=mean, longest=longest_row or int(mean))
        else:
            shape = assumed_shape(cfg)
    config, trainable, total, quantizable = planned_model(cfg)
    config = _text_config(config)
    dtype = pick_dtype(cfg.model, cfg.training, pure_bf16=cfg.finetuning.pure_bf16)
    element = torch.tensor([], dtype=dtype).element_size()
    hidden = getattr(config, "hidden_size", 0)
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    layers = getattr(config, "num_hidden_layers", 0)
    vocab = getattr(config, "vocab_size", 0)
    stage = cfg.finetuning.stage
    passes = stage_passes(cfg, shape)
    head_params = vocab * hidden
    if stage == "rm":  # the LM head becomes a 1-output score head
        tied = getattr(config, "tie_word_embeddings", False)
        total = total - (0 if tied else head_params) + hidden
        trainable = trainable + hidden if cfg.finetuning.finetuning_type != "full" else total
    if stage == "ppo":  # the value head trains with the policy
        trainable, total = trainable + hidden + 1, total + hidden + 1

    base_weights = weight_bytes(cfg.model, dtype, total, quantizable)
    other, _ = extra_model_weights(cfg, weight_bytes(cfg.model, dtype, total, quantizable,
                                                     bits=cfg.finetuning.ref_model_quantization_bit))
    weights, gradients, optimizer, host = sharded_states(base_weights, trainable * 4, trainable * 8, par)
    if par.zero_stage >= 3:
        other = math.ceil(other / max(par.devices, 1))  # frozen models are sharded the same way

    if checkpointed_layers is None:
        checkpointed_layers = 0 if cfg.model.disable_gradient_checkpointing else layers
    checkpointed_layers = max(0, min(int(checkpointed_layers), layers))
    micro = max(cfg.training.per_device_train_batch_size, 1) * passes.micro_tokens
    activations = micro * layer_activation_values(hidden, inter, layers, checkpointed_layers) * 4
    logits = micro * vocab * 4 * 3 if passes.vocab_head else micro * 4 * 3
    if fast_path_enabled(cfg):  # pt/sft: the head and its loss run in chunks, over labelled tokens only
        labelled = max(cfg.training.per_device_train_batch_size, 1) * (
            shape.trained_tokens if shape.trained_tokens is not None else passes.micro_tokens)
        logits = min(labelled, DEFAULT_CHUNK_TOKENS) * vocab * 4 * 3
    if passes.generated:
        kv_heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", 1)
        head_dim = getattr(config, "head_dim", None) or hidden // max(getattr(config, "num_attention_heads", 1), 1)
        batch = per_step if stage == "grpo" else max(cfg.training.per_device_train_batch_size, 1)
        kv_cache = 2 * layers * kv_heads * head_dim * passes.micro_tokens * batch * element
        activations = max(activations, kv_cache + batch * vocab * 4)

    compute_params = total - (head_params if stage == "rm" else 0)
    recompute = 2.0 * checkpointed_layers / max(layers, 1)  # a checkpointed layer runs its forward twice
    per_trained = (6.0 if cfg.finetuning.finetuning_type == "full" else 4.0) + recompute
    flops_example = compute_params * (per_trained * passes.trained + 2.0 * (
        passes.policy_forward + passes.reference + passes.reward))
    flops_step = per_step * flops_example
    seconds = None
    if flops:
        seconds = flops_step / (flops * EFFICIENCY)
        if passes.generated:
            bandwidth = bandwidth or machine_rates()[1]
            batches = 1 if stage == "grpo" else per_step // max(cfg.training.per_device_train_batch_size, 1)
            batch = per_step // batches
            per_token = max(base_weights / max(bandwidth, 1.0), 2.0 * compute_params * batch / (flops * EFFICIENCY))
            seconds += batches * passes.generated * per_token
    return Estimate(
        trainable=trainable, total=total, dtype=str(dtype).replace("torch.", ""),
        weights=weights, gradients=gradients, optimizer=optimizer, activations=int(activations), logits=int(logits),
        tokens_per_step=int(per_step * passes.micro_tokens), flops_per_step=flops_step, seconds_per_step=seconds,
        load_weights=quantizable * element if cfg.model.quantization_bit else 0,
        other_models=int(other), host_bytes=int(host), parallel=par, covers=passes.models,
        layers=layers, checkpointed_layers=checkpointed_layers,
        layer_activations=int(micro * ((ACTIVATION_HIDDEN - 1) * hidden + ACTIVATION_INTER * inter) * 4),
    )


def layer_activation_values(hidden: int, inter: int, layers: int, checkpointed: int) -> int:
    """fp32 values per token autograd keeps at its peak for a decoder of ``layers`` layers, the first
    ``checkpointed`` of them checkpointed: such a layer keeps its input hidden state only; every other
    layer keeps its full set (ACTIVATION_*). Backward frees the later layers before it recomputes a
    checkpointed one, so a recomputed layer adds to the peak only when every layer is checkpointed."""
    full_layer = ACTIVATION_HIDDEN * hidden + ACTIVATION_INTER * inter
    kept = layers - checkpointed
    return checkpointed * hidden + (kept if kept else (1 if checkpointed else 0)) * full_layer


@dataclass(frozen=True)
class CheckpointingPlan:
    """How many decoder layers gradient checkpointing covers, from the memory estimate (bytes).

    ``budget``: the peak the run may reach; ``peak``: the estimated peak with ``checkpointed`` of
    ``layers`` layers checkpointed; ``source``: where the budget came from, in words.
    """

    layers: int
    checkpointed: int
    budget: int
    peak: int
    source: str

    def describe(self) -> str:
        return (f"gradient checkpointing on {self.checkpointed} of {self.layers} layers (estimated peak with "
                f"every row as long as the longest: {self.peak / GIB:.2f} GiB, within a budget of "
                f"{self.budget / GIB:.2f} GiB: {self.source})")


def checkpointing_for_run(cfg: Any, shape: DataShape | None) -> CheckpointingPlan | None:
    """The plan a pt/sft run follows, or None when it checkpoints as configured.

    None when checkpointing is off (``disable_gradient_checkpointing``), forced on every layer
    (``gradient_checkpointing: true``, or ``gradient_checkpointing_budget: 0``), or the fast path is
    off (without its chunked head the run has no memory to spare over LLaMA-Factory's default).
    """
    if cfg.model.disable_gradient_checkpointing or not fast_path_enabled(cfg):
        return None
    training = getattr(cfg, "training", None)
    if getattr(training, "gradient_checkpointing", False) or cfg.model.gradient_checkpointing_budget == 0:
        return None
    return plan_checkpointing(cfg, shape)


def worst_batch_shape(shape: DataShape) -> DataShape:
    """Every example as long as the longest one: memory is set by the largest batch, not the mean."""
    longest = float(max(shape.longest, 1))
    scale = longest / max(shape.sequence_tokens, 1.0)
    trained = None if shape.trained_tokens is None else min(longest, shape.trained_tokens * scale)
    return DataShape(sequence_tokens=longest, prompt_tokens=shape.prompt_tokens, longest=shape.longest,
                     examples=shape.examples, assumed=shape.assumed, trained_tokens=trained)


def plan_checkpointing(cfg: Any, shape: DataShape | None = None, budget_gib: float | None = None) -> CheckpointingPlan:
    """The fewest checkpointed layers whose estimated peak stays within the budget (pt/sft fast path).

    Budget: ``budget_gib`` or the ``gradient_checkpointing_budget`` setting (GiB); when neither is set,
    the estimated peak of the same run the way LLaMA-Factory runs it by default: every layer
    checkpointed and the full fp32 logits of every token held (the fast path computes them in chunks,
    which frees memory that un-checkpointed layers can use). Layers are estimated at the longest
    row (:func:`worst_batch_shape`). Raises what :func:`estimate_run` raises.
    """
    shape = worst_batch_shape(shape if shape is not None else assumed_shape(cfg))
    budget_gib = cfg.model.gradient_checkpointing_budget if budget_gib is None else budget_gib
    # The adapter setup is logged by the model load (or the plan's own estimate): once is enough.
    with quieted(ADAPTER_LOGGER):
        every = estimate_run(cfg, shape=shape, checkpointed_layers=10**6)  # clamped to the layer count
    layers = every.layers
    if budget_gib is not None:
        budget, source = int(budget_gib * GIB), "gradient_checkpointing_budget"
    else:
        baseline_cfg = copy.copy(cfg)
        baseline_cfg.finetuning = copy.copy(cfg.finetuning)
        baseline_cfg.finetuning.fast_path = False
        with quieted(ADAPTER_LOGGER):
            budget = estimate_run(baseline_cfg, shape=shape, checkpointed_layers=layers).peak_bytes
        source = "every layer checkpointed with full logits, LLaMA-Factory's default"
    room = budget - every.peak_bytes
    if room < 0 or layers == 0:
        return CheckpointingPlan(layers, layers, budget, every.peak_bytes, source)
    # With n layers kept (n >= 1) the peak is the all-checkpointed one plus (n - 1) layers' worth: the
    # first kept layer takes the place of the layer recomputed in backward.
    kept = layers if every.layer_activations == 0 else min(layers, int(room // every.layer_activations) + 1)
    checkpointed = layers - kept
    peak = every.peak_bytes + (kept - 1) * every.layer_activations
    return CheckpointingPlan(layers, checkpointed, budget, peak, source)


def steps_for(examples: int, args: Any, *, stage: str = "sft", devices: int = 1, finetuning: Any = None) -> int:
    """Optimizer steps of the run: max_steps, or epochs x optimizer steps per epoch.

    Per epoch: ceil(ceil(examples / (batch x devices)) / gradient_accumulation_steps), as
    transformers' Trainer counts; ppo takes ``ppo_buffer_size`` x that many prompts per step, grpo
    trains ``num_generations`` completions per prompt (``finetuning`` gives both).
    """
    if args.max_steps and args.max_steps > 0:
        return int(args.max_steps)
    batch = max(args.per_device_train_batch_size, 1) * max(devices, 1)
    accumulation = max(args.gradient_accumulation_steps, 1)
    if stage == "grpo":
        examples *= getattr(finetuning, "num_generations", 1) if finetuning is not None else 1
    if stage == "ppo":
        buffer = getattr(finetuning, "ppo_buffer_size", 1) if finetuning is not None else 1
        return max(1, math.ceil(examples / (batch * accumulation * buffer) * args.num_train_epochs))
    per_epoch = math.ceil(math.ceil(examples / batch) / accumulation)
    return int(math.ceil(per_epoch * args.num_train_epochs))
