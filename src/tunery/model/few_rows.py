"""Linear layers for decoding on the CPU: a few rows times a large weight, the weight read once.

While a model decodes, each linear layer multiplies one row per sequence of the batch by its
weight: a handful of rows against megabytes of weights, so the time goes into reading the weight.
On the CPU, ``torch.nn.functional.linear`` with 2-8 rows (fp32, MKL's GEMM) costs up to twice its
one-row cost: the GEMM path re-packs the weight on every call. Taking the weight as the left
operand, ``weight @ x.T``, streams it once, so a decoding step of four sequences costs about what
a step of one does (SmolLM2-135M, 1 thread: 94 ms against 184 ms; ``bench/few_rows.py`` measures
it). torch and transformers have no setting that picks this; hence this small layer.

:class:`FewRowLinear` is an ``nn.Linear`` with the same parameters (the state dict, tied
embeddings and ``.to()`` are unchanged). It takes the ``weight @ x.T`` path only for at most
:data:`MAX_ROWS` rows of float32 on the CPU with gradients off, and ``nn.Linear``'s own path for
everything else (a prompt's prefill, training, other devices and dtypes).
"""

from __future__ import annotations

import torch
from torch import nn

# Largest row count that takes the weight-first path. Measured on this project's 2-core CPU
# (bench/few_rows.py): faster or equal up to 8 rows at 1 and 2 threads; slower at 12 rows on 1 thread.
MAX_ROWS = 8


class FewRowLinear(nn.Linear):
    """``nn.Linear`` whose forward computes ``(weight @ x.T).T + bias`` for a few CPU float32 rows.

    Input ``(..., in_features)``, output ``(..., out_features)`` as ``nn.Linear``; the result
    equals ``nn.Linear``'s up to float rounding (the sums run in another order).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features if self.in_features else 0
        if (rows == 0 or rows > MAX_ROWS or x.device.type != "cpu" or x.dtype != torch.float32
                or self.weight.dtype != torch.float32 or torch.is_grad_enabled()):
            return super().forward(x)
        out = torch.mm(self.weight, x.reshape(rows, self.in_features).t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.contiguous().reshape(*x.shape[:-1], self.out_features)

    @classmethod
    def sharing(cls, linear: nn.Linear) -> FewRowLinear:
        """A FewRowLinear holding ``linear``'s own weight and bias Parameters (nothing is copied)."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.train(linear.training)
        return layer


def use_few_row_linear(model: nn.Module) -> int:
    """Replace every plain float32 CPU ``nn.Linear`` of ``model`` by a :class:`FewRowLinear` sharing its
    parameters; returns how many were replaced.

    Only modules whose type is exactly ``nn.Linear`` are replaced: subclasses (bitsandbytes'
    quantized layers, PEFT's adapter layers) keep their own forward, as do layers on another
    device or in another dtype and layers accelerate wraps (``_hf_hook``: offloaded weights).
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Linear and child.weight.device.type == "cpu"
                    and child.weight.dtype == torch.float32 and not hasattr(child, "_hf_hook")):
                setattr(parent, name, FewRowLinear.sharing(child))
                replaced += 1
    return replaced
