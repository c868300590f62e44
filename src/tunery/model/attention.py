"""Attention functions registered with transformers: per-example packed SDPA and LongLoRA's S^2-Attn.

``tunery_packed_sdpa``: per-example attention over packed rows.

transformers' ``sdpa`` path handles a packed row (several examples concatenated, positions
restarting at 0) by building a full ``T x T`` block-diagonal mask and attending over the whole row
(4 examples of 300 tokens cost like one of 1200: 4x the attention work). The kernel registered
here runs causal SDPA on each example's slice instead (the CPU equivalent of flash-attention's
varlen mode) and falls back to plain SDPA for padded batches, so evaluation and generation are
unchanged. It goes through transformers' public ``AttentionInterface`` registry, not a patch.

``tunery_shift_short`` (``shift_attn: true``): LongLoRA's shift short attention while training,
the same registry, so every model whose attention dispatches through it gets it without a patch.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tunery.errors import ModelError
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


# ------------------------------------------------------------------ LongLoRA shift short attention

SHIFT_ATTENTION = "tunery_shift_short"
SHIFT_GROUPS = 4  # LongLoRA's group_size_ratio 1/4: each group is a quarter of the sequence


def shift_short_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """LongLoRA's shift short attention (S^2-Attn) while the module trains; plain SDPA otherwise.

    ``query`` is ``[batch, heads, tokens, head_dim]``, ``key``/``value`` ``[batch, kv_heads, tokens,
    head_dim]``. The sequence is cut into 4 groups of ``g = ceil(tokens / 4)`` tokens (the tail padded
    and masked) and each token attends only inside its group; the second half of the heads sees the
    sequence rolled by ``g // 2``, so its groups straddle the first half's boundaries and information
    flows between groups. Masking keeps the model's own mask (causal, padding, packed examples)
    restricted to the group, so the wrapped group of the shifted heads never looks ahead.
    In eval mode, during generation (cached keys) or for fewer than 4 tokens it is exactly ``sdpa``.
    Returns ``[batch, tokens, heads, head_dim]`` like every transformers attention function.
    """
    batch, heads, length, head_dim = query.shape
    if not module.training or key.shape[2] != length or length < SHIFT_GROUPS or heads < 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if key.shape[1] != heads:  # grouped-query attention: one key/value head per query head
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    allowed = _allowed_mask(attention_mask, batch, length, query.device)
    group = -(-length // SHIFT_GROUPS)
    padded = group * SHIFT_GROUPS
    shift = group // 2
    if padded != length:
        pad = padded - length
        query, key, value = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (query, key, value))
        allowed = torch.nn.functional.pad(allowed, (0, pad, 0, pad), value=False)
    half = heads // 2

    def rolled(t: torch.Tensor) -> torch.Tensor:  # [b, h, T, d]: second half of the heads rolled left
        return torch.cat((t[:, :half], t[:, half:].roll(-shift, dims=2)), dim=1)

    def grouped(t: torch.Tensor) -> torch.Tensor:  # [b, h, T, d] -> [b * groups, h, g, d]
        return t.reshape(batch, heads, SHIFT_GROUPS, group, head_dim).transpose(1, 2).reshape(
            batch * SHIFT_GROUPS, heads, group, head_dim)

    def blocks(mask: torch.Tensor) -> torch.Tensor:  # [b, T, T] -> [b, groups, g, g], the diagonal blocks
        return torch.stack([mask[:, i * group:(i + 1) * group, i * group:(i + 1) * group]
                            for i in range(SHIFT_GROUPS)], dim=1)

    plain_blocks = blocks(allowed)
    shifted_blocks = blocks(allowed.roll((-shift, -shift), dims=(1, 2)))
    mask = torch.cat((plain_blocks.unsqueeze(2).expand(-1, -1, half, -1, -1),
                      shifted_blocks.unsqueeze(2).expand(-1, -1, heads - half, -1, -1)), dim=2)
    mask = mask.reshape(batch * SHIFT_GROUPS, heads, group, group)
    # a query that may see no key in its group (padding, the padded tail) attends to itself instead of NaN
    empty = ~mask.any(dim=-1, keepdim=True)
    mask = mask | (empty & torch.eye(group, dtype=torch.bool, device=mask.device))
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped(rolled(query)), grouped(rolled(key)), grouped(rolled(value)),
        attn_mask=mask, dropout_p=dropout, scale=scaling,
    )
    out = out.reshape(batch, SHIFT_GROUPS, heads, group, head_dim).transpose(1, 2).reshape(
        batch, heads, padded, head_dim)
    out = torch.cat((out[:, :half], out[:, half:].roll(shift, dims=2)), dim=1)[:, :, :length]
    return out.transpose(1, 2).contiguous(), None


def _allowed_mask(attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """``[batch, T, T]`` bool, True where a query may attend a key (causal when no mask is given)."""
    if attention_mask is None:
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        return causal.expand(batch, -1, -1)
    mask = attention_mask[:, 0, :, :length]
    if mask.dtype != torch.bool:  # an additive float mask: 0 where allowed
        mask = mask == 0
    return mask.expand(batch, -1, -1)


def register_shift_attention() -> str:
    """Register ``tunery_shift_short`` with transformers (idempotent); returns its name."""
    AttentionInterface.register(SHIFT_ATTENTION, shift_short_attention)
    AttentionMaskInterface.register(SHIFT_ATTENTION, sdpa_mask)
    return SHIFT_ATTENTION


def enable_shift_attention(model: torch.nn.Module) -> None:
    """Switch the model to shift short attention (``shift_attn: true``), for training only.

    Raises ModelError when the model cannot take a registered attention function.
    """
    inner = unwrap_peft(model)
    register_shift_attention()
    try:
        inner.set_attn_implementation(SHIFT_ATTENTION)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ModelError(f"shift_attn: {type(inner).__name__} cannot use a registered attention function: {exc}",
                         hint="drop shift_attn for this model") from exc
