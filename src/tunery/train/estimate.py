"""Peak memory and time of a training run, estimated before it starts (``tunery estimate``, dry_run).

Parameter counts are exact: the model is built on the meta device (no weights read) and given
the same adapter setup as the real run. Memory and time are formulas, stated here so a user can
check them:

- weights: parameters x bytes of the load dtype; with quantization the linear layers take 0.5625
  (4-bit with scales) or 1 (8-bit) byte per weight, embeddings and norms keep the load dtype, and
  loading briefly holds those layers in full precision too;
- gradients + AdamW states: trainable x (4 + 8) bytes (fp32 master copies);
- activations per token and layer (fp32): about (8 x hidden + 3 x intermediate) values without
  gradient checkpointing; with it, one hidden state per layer plus one full layer recomputed;
- the output head: logits, their softmax and its gradient, 3 x vocab x 4 bytes per token;
- time: FLOPs per token (6 x parameters for full training, 4 x for LoRA/freeze whose frozen weights
  need no weight gradient, + 2 x with checkpointing's recompute) over a measured fp32 matmul rate
  at an assumed 35 % efficiency.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tunery.logging import get_logger
from tunery.model.adapter import prepare_for_training
from tunery.model.loader import count_parameters, pick_dtype, resolve

logger = get_logger(__name__)

GIB = 1024**3
# torch, transformers, datasets, tokenizer: calibrated so LoRA SFT of SmolLM2-135M (batch 2, rows of
# ~85 tokens, no checkpointing) predicts the 1.84 GiB peak RSS measured by bench/train_qlora_memory.py.
RUNTIME_OVERHEAD = int(1.0 * GIB)
EFFICIENCY = 0.35


@dataclass
class Estimate:
    trainable: int
    total: int
    dtype: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    tokens_per_step: int
    flops_per_token: float
    seconds_per_step: float | None = None
    load_weights: int = 0  # a quantized base is read in full precision before it is quantized

    @property
    def peak_bytes(self) -> int:
        training = self.weights + self.gradients + self.optimizer + self.activations + self.logits
        return max(training, self.weights + self.load_weights) + RUNTIME_OVERHEAD

    def lines(self, steps: int | None = None) -> list[str]:
        out = [
            f"parameters: {self.trainable:,} trainable of {self.total:,} ({100 * self.trainable / max(self.total, 1):.3f}%)",
            f"precision: {self.dtype}",
            f"estimated peak memory: {self.peak_bytes / GIB:.2f} GiB (weights {self.weights / GIB:.2f}, "
            f"gradients+optimizer {(self.gradients + self.optimizer) / GIB:.2f}, activations "
            f"{self.activations / GIB:.2f}, output head {self.logits / GIB:.2f}, runtime {RUNTIME_OVERHEAD / GIB:.2f})",
        ]
        if self.seconds_per_step is not None:
            line = f"estimated time: {self.seconds_per_step:.2f} s/step"
            if steps:
                line += f", {self.seconds_per_step * steps / 60:.1f} min for {steps} steps"
            out.append(line + f" (at {int(EFFICIENCY * 100)}% of this machine's measured fp32 matmul rate)")
        return out


def quantizable_parameters(model: torch.nn.Module) -> int:
    """Weights of the linear layers bitsandbytes quantizes (all but the output head)."""
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


def planned_model(cfg: Any) -> tuple[Any, int, int, int]:
    """(config, trainable, total, quantizable) with the run's adapter setup applied to a weightless model."""
    path = resolve(cfg.model).path
    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    model_args, ft = copy.copy(cfg.model), copy.copy(cfg.finetuning)
    # Same trainable set without touching weights: no quantization, no SVD init, no stacked adapters.
    model_args.quantization_bit, model_args.adapter_name_or_path = None, None
    model_args.disable_gradient_checkpointing, model_args.print_param_status = True, False
    ft.pissa_init = False
    quantizable = quantizable_parameters(model)
    model = prepare_for_training(model, model_args, ft, None)
    trainable, total = count_parameters(model)
    return config, trainable, total, quantizable


def measured_matmul_flops(seconds: float = 0.3) -> float:
    """fp32 matmul FLOP/s of this machine, measured for a fraction of a second."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * 1024**3 * count / (time.perf_counter() - start)


def weight_bytes(model_args: Any, dtype: torch.dtype, total: int, quantizable: int) -> int:
    """Bytes of the loaded weights: quantized linear layers, the rest (embeddings, norms) in ``dtype``."""
    full = torch.tensor([], dtype=dtype).element_size()
    per_quantized = {4: 0.5625, 8: 1.0}.get(model_args.quantization_bit or 0)
    if per_quantized is None:
        return total * full
    return int(quantizable * per_quantized + (total - quantizable) * full)


def estimate_run(cfg: Any, *, tokens_per_step: int, longest_row: int, flops: float | None = None) -> Estimate:
    """Memory and time of one optimizer step of ``cfg`` with ``tokens_per_step`` tokens."""
    config, trainable, total, quantizable = planned_model(cfg)
    dtype = pick_dtype(cfg.model, cfg.training)
    hidden = getattr(config, "hidden_size", 0)
    inter = getattr(config, "intermediate_size", 4 * hidden)
    layers = getattr(config, "num_hidden_layers", 0)
    vocab = getattr(config, "vocab_size", 0)
    checkpointing = not cfg.model.disable_gradient_checkpointing
    micro_tokens = tokens_per_step / max(cfg.training.gradient_accumulation_steps, 1)
    full_layer = (8 * hidden + 3 * inter) * 4
    if checkpointing:
        activations = micro_tokens * (layers * hidden * 4 + full_layer)
    else:
        activations = micro_tokens * layers * full_layer
    per_token = 6.0 if cfg.finetuning.finetuning_type == "full" else 4.0
    if checkpointing:
        per_token += 2.0
    flops_per_token = per_token * total
    seconds = None
    if flops:
        seconds = tokens_per_step * flops_per_token / (flops * EFFICIENCY)
    return Estimate(
        trainable=trainable, total=total, dtype=str(dtype).replace("torch.", ""),
        weights=weight_bytes(cfg.model, dtype, total, quantizable), gradients=trainable * 4, optimizer=trainable * 8,
        activations=int(activations), logits=int(micro_tokens * vocab * 4 * 3),
        tokens_per_step=tokens_per_step, flops_per_token=flops_per_token, seconds_per_step=seconds,
        load_weights=quantizable * torch.tensor([], dtype=dtype).element_size() if cfg.model.quantization_bit else 0,
    )


def steps_for(examples: int, args: Any) -> int:
    """Optimizer steps of the run: max_steps, or epochs x batches per epoch."""
    if args.max_steps and args.max_steps > 0:
        return int(args.max_steps)
    per_step = max(args.per_device_train_batch_size, 1) * max(args.gradient_accumulation_steps, 1)
    return int(math.ceil(examples / per_step) * args.num_train_epochs)


def cutoff_len_report(cfg: Any) -> list[str]:
    """The estimate without data: every row taken as ``cutoff_len`` tokens (lines to show the user)."""
    args = cfg.training
    per_step = max(args.per_device_train_batch_size, 1) * max(args.gradient_accumulation_steps, 1)
    est = estimate_run(cfg, tokens_per_step=per_step * cfg.data.cutoff_len, longest_row=cfg.data.cutoff_len,
                       flops=measured_matmul_flops())
    steps = args.max_steps if args.max_steps and args.max_steps > 0 else None
    return [f"assuming every row is cutoff_len={cfg.data.cutoff_len} tokens (set dataset: for real counts)",
            *est.lines(steps)]
