"""Per-example attention over packed rows: ``tunery_packed_sdpa``, registered with transformers.

transformers' ``sdpa`` path handles a packed row (several examples concatenated, positions
restarting at 0) by building a full ``T x T`` block-diagonal mask and attending over the whole row
(4 examples of 300 tokens cost like one of 1200: 4x the attention work). The kernel registered
here runs causal SDPA on each example's slice instead (the CPU equivalent of flash-attention's
varlen mode) and falls back to plain SDPA for padded batches, so evaluation and generation are
unchanged. It goes through transformers' public ``AttentionInterface`` registry, not a patch.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tunery.model.adapter import unwrap_peft

PACKED_ATTENTION = "tunery_packed_sdpa"


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA per packed example when sequence boundaries are given, plain SDPA otherwise.

    ``query``/``key``/``value`` are ``[batch, heads, tokens, head_dim]``; a packed batch has one row.
    Boundaries come from ``cu_seq_lens_q`` when a collator sends them, else from restarting
    ``position_ids``. Returns ``[batch, tokens, heads, head_dim]`` like every transformers attention function.
    """
    bounds = kwargs.pop("cu_seq_lens_q", None)
    for name in ("cu_seq_lens_k", "max_length_q", "max_length_k"):
        kwargs.pop(name, None)
    edges = None
    if query.shape[0] == 1 and key.shape[2] == query.shape[2]:
        if bounds is not None:
            edges = bounds.tolist() if isinstance(bounds, torch.Tensor) else list(bounds)
        else:
            edges = packed_boundaries(kwargs.get("position_ids"))
    if edges is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    outputs = []
    for start, end in zip(edges[:-1], edges[1:]):
        if end <= start:
            continue
        out, _ = sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,
            dropout,
            scaling,
            is_causal=True,
            **kwargs,
        )
        outputs.append(out)
    return torch.cat(outputs, dim=1), None


def packed_boundaries(position_ids: torch.Tensor | None) -> list[int] | None:
    """``[0, end_1, end_2, ..., T]`` for one row of packed examples (positions restart at 0), else None.

    Only a row whose positions are exactly ``0..n_1-1, 0..n_2-1, ...`` with at least two examples
    counts as packed; anything else (a single sequence, left-padded generation) returns None.
    """
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    pos = position_ids[0]
    if pos.numel() < 2 or int(pos[0]) != 0:
        return None
    steps = pos[1:] - pos[:-1]
    restarts = pos[1:] == 0
    if not bool(((steps == 1) | restarts).all()) or not bool(restarts.any()):
        return None
    starts = (restarts.nonzero().flatten() + 1).tolist()
    return [0, *starts, pos.numel()]


def register_packed_attention() -> str:
    """Register ``tunery_packed_sdpa`` with transformers (idempotent); returns its name."""
    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    # The same masks as sdpa, so padded batches (evaluation, generation) behave exactly as sdpa.
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    return PACKED_ATTENTION


def enable_packed_attention(model: torch.nn.Module) -> bool:
    """Switch a model that uses sdpa (or eager) to ``tunery_packed_sdpa``; False if it cannot."""
    inner = unwrap_peft(model)
    config = getattr(inner, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current == PACKED_ATTENTION:
        return True
    if current not in ("sdpa", "eager", None) or not hasattr(inner, "set_attn_implementation"):
        return False  # flash-attention kernels handle cu_seq_lens natively; leave them alone
    register_packed_attention()
    try:
        inner.set_attn_implementation(PACKED_ATTENTION)
    except (ValueError, ImportError):
        return False
    return getattr(inner.config, "_attn_implementation", None) == PACKED_ATTENTION
