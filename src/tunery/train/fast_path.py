"""Tunery's fast path for causal-LM training (pt, sft): same loss, less work, less memory.

Three levers, each measured in ``bench/train_sft.py``:

1. **Padding-free batches.** The examples of one step are concatenated into a single row without
   pad tokens; ``position_ids`` restart at 0 for every example and the label of each example's first
   token is ignored, so no token learns from its neighbour. transformers' ``DataCollatorWithFlattening``
   builds such rows; we use it as is.
2. **Attention kept inside each example, at the cost of each example.** transformers' ``sdpa`` path
   handles a packed row by building a full ``T x T`` block-diagonal mask and attending over the whole
   row (4 examples of 300 tokens cost like one of 1200: 4x the attention work). The kernel registered
   here, ``tunery_packed_sdpa``, runs causal SDPA on each example's slice instead (the CPU
   equivalent of flash-attention's varlen mode) and falls back to plain SDPA for padded batches, so
   evaluation and generation are unchanged. It goes through transformers' public
   ``AttentionInterface`` registry, not a patch.
3. **A memory-lean loss over the vocabulary.** The default loss materializes fp32 logits for every
   token (T x 49k for SmolLM2) plus their softmax for backward. ``FastLossMixin.compute_loss`` runs
   the decoder, keeps only the positions that have a label, and computes head + cross-entropy in
   chunks with the gradient formed chunk by chunk, so only one chunk of logits lives at a time.
   It also skips the per-step entropy/accuracy extras that trl's SFTTrainer computes.

Gradient checkpointing is a separate switch (``disable_gradient_checkpointing``); with the levers
above the activations of a 4 x 512 batch of SmolLM2 fit easily, so the demo and bench turn it off.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

PACKED_ATTENTION = "tunery_packed_sdpa"
DEFAULT_CHUNK_TOKENS = 1024

# Config attributes of architectures that transform logits after the head (soft-capping, scaling):
# the fused loss would skip that step, so such models take the library's own loss.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


# ---------------------------------------------------------------------------------------------
# 1. padding-free collator
# ---------------------------------------------------------------------------------------------
def padding_free_collator() -> Any:
    """A collator that concatenates a batch into one row with restarting position ids.

    ``tunery.data.collator``'s when present (one padding-free collator in the project), else
    transformers' DataCollatorWithFlattening. The ``tunery_packed_sdpa`` kernel finds the example
    boundaries from ``cu_seq_lens_q`` when a collator sends them, else from the restarting positions.
    """
    try:  # the data pipeline's own padding-free collator (it also sends use_cache: False)
        from tunery.data.collator import padding_free_collator as data_padding_free_collator
    except ImportError:
        data_padding_free_collator = None
    if data_padding_free_collator is not None:
        return data_padding_free_collator()
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_flash_attn_kwargs=True)


# ---------------------------------------------------------------------------------------------
# 2. attention within each example
# ---------------------------------------------------------------------------------------------
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
    Returns ``[batch, tokens, heads, head_dim]`` like every transformers attention function.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

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
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    # The same masks as sdpa, so padded batches (evaluation, generation) behave exactly as sdpa.
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    return PACKED_ATTENTION


def enable_packed_attention(model: torch.nn.Module) -> bool:
    """Switch a model that uses sdpa (or eager) to ``tunery_packed_sdpa``; False if it cannot."""
    inner = _unwrap(model)
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


# ---------------------------------------------------------------------------------------------
# 3. chunked head + cross-entropy
# ---------------------------------------------------------------------------------------------
class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of ``CE(hidden @ weight.T, targets)``, one chunk of logits at a time.

    Why by hand: autograd would keep every chunk's logits alive until backward, so chunking alone
    saves nothing. Here the gradient of each chunk (softmax - one_hot) is turned into the gradients
    of ``hidden`` and ``weight`` right away and the logits are freed; backward only scales them.
    The FLOPs are those of the plain loss (one head matmul forward, one or two backward).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, grad_hidden_needed, grad_weight_needed):  # type: ignore[override]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if grad_hidden_needed else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grad_weight_needed else None
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            probs = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the logits
            probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            probs = probs.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = probs @ weight
            if grad_weight is not None:
                grad_weight += (probs.t() @ h).float()
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else torch.empty(0),
            grad_weight.to(weight.dtype) if grad_weight is not None else torch.empty(0),
        )
        ctx.has_grads = (grad_hidden is not None, grad_weight is not None)
        return total

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        has_h, has_w = ctx.has_grads
        return (
            grad_hidden * grad_output if has_h else None,
            grad_weight * grad_output if has_w else None,
            None,
            None,
            None,
            None,
        )


def chunked_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = DEFAULT_CHUNK_TOKENS
) -> torch.Tensor:
    """``sum(CE(hidden @ weight.T, targets))`` over rows (every target is valid), memory-lean.

    ``hidden`` is ``[n, hidden_size]``, ``weight`` the output head ``[vocab, hidden_size]``.
    """
    grad_enabled = torch.is_grad_enabled()
    return _ChunkedLinearCrossEntropy.apply(
        hidden,
        weight,
        targets,
        max(1, int(chunk)),
        grad_enabled and hidden.requires_grad,
        grad_enabled and weight.requires_grad,
    )


def supports_fast_loss(model: torch.nn.Module) -> bool:
    """True for decoder-only LMs whose logits are exactly ``lm_head(decoder(x))``."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    for name in _LOGIT_TRANSFORMS:
        value = getattr(config, name, None) or getattr(getattr(config, "text_config", None), name, None)
        if value not in (None, 1, 1.0):
            return False
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return False
    if type(head).__module__.startswith("peft"):  # a LoRA on the head: leave it to the library
        return False
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    return decoder is not None and decoder is not inner


def causal_lm_loss(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """The causal-LM loss of ``model`` on ``inputs``, equal to the model's own, without full logits.

    Normalized by ``num_items_in_batch`` when given (the Trainer's count over the accumulated
    batch), otherwise by the number of labelled tokens, as ``ForCausalLMLoss`` does.
    """
    inner = _unwrap(model)
    decoder = inner.get_decoder()
    head = inner.get_output_embeddings()
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels", "num_items_in_batch")}
    model_inputs["use_cache"] = False  # a cache would also switch off packed-sequence handling
    hidden = decoder(**model_inputs).last_hidden_state
    labels = inputs["labels"].to(hidden.device)
    shift_labels = inputs.get("shift_labels")
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    keep = shift_labels != -100
    selected = hidden[keep]
    targets = shift_labels[keep]
    total = chunked_cross_entropy_sum(selected, head.weight, targets, chunk)
    if num_items_in_batch is None:
        count = keep.sum()
    elif isinstance(num_items_in_batch, torch.Tensor):
        count = num_items_in_batch.to(total.device)
    else:
        count = num_items_in_batch
    if isinstance(count, torch.Tensor):
        count = count.clamp(min=1)
        return total / count.to(total.dtype)
    return total / max(int(count), 1)


class FastLossMixin:
    """Put before a transformers ``Trainer`` class: ``class T(FastLossMixin, Seq2SeqTrainer)``.

    Training steps use :func:`causal_lm_loss`; anything else (evaluation that needs logits, label
    smoothing, a custom ``compute_loss_func``, models it does not support) goes to the parent.
    """

    fast_loss_chunk: int = DEFAULT_CHUNK_TOKENS

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        usable = (
            not return_outputs
            and "labels" in inputs
            and getattr(self, "label_smoother", None) is None
            and getattr(self, "compute_loss_func", None) is None
            and supports_fast_loss(model)
        )
        if not usable:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        # Mirror Trainer: the count is only used when the model takes loss kwargs (else a mean,
        # which Trainer then divides by the accumulation steps itself).
        count = num_items_in_batch if getattr(self, "model_accepts_loss_kwargs", False) else None
        return causal_lm_loss(model, inputs, count, self.fast_loss_chunk)


def with_fast_loss(trainer_cls: type) -> type:
    """``trainer_cls`` with :class:`FastLossMixin` in front (a new subclass, the original untouched)."""
    if issubclass(trainer_cls, FastLossMixin):
        return trainer_cls
    return type(f"Fast{trainer_cls.__name__}", (FastLossMixin, trainer_cls), {})


FAST_PATH_STAGES = ("pt", "sft")


def fast_path_enabled(cfg: Any) -> bool:
    """Whether a run takes the fast loss and packed attention: on by default for pt/sft.

    Off with ``fast_path: false`` and for the other stages (their losses are not token CE).
    """
    finetuning = cfg.finetuning
    return bool(getattr(finetuning, "fast_path", True)) and finetuning.stage in FAST_PATH_STAGES


def padding_free_applies(cfg: Any) -> bool:
    """Padding-free batches, unless rows are already packed by the data pipeline (``packing``,
    ``neat_packing``) or prediction needs left-padded batches for generation."""
    from tunery.data import resolve_packing

    data, training = cfg.data, getattr(cfg, "training", None)
    if resolve_packing(data, cfg.finetuning.stage):  # pt packs by default: rows are already full
        return False
    return not (training is not None and getattr(training, "predict_with_generate", False))


def fast_trainer_parts(cfg: Any, model: torch.nn.Module, trainer_cls: type) -> tuple[type, Any | None]:
    """The hook for the pt/sft trainer: ``(trainer class, padding-free collator or None)``.

    With the fast path on, the model attends per packed example and the trainer class gets the
    chunked loss; the collator is padding-free where :func:`padding_free_applies`, else None and
    the caller keeps its own (padded or packed) collator. Call it after the model is prepared
    and before the trainer is built (it sets how the Trainer counts tokens for padding-free rows).
    """
    if not fast_path_enabled(cfg):
        return trainer_cls, None
    enable_packed_attention(model)
    collator = None
    if padding_free_applies(cfg):
        collator = padding_free_collator()
        training = getattr(cfg, "training", None)
        if training is not None:
            # A padding-free row has no pad tokens, but the Trainer's "non_padding" count (there is
            # no attention mask) drops every token equal to pad_token_id, which is often eos: the
            # logged throughput would miss the real end-of-turn tokens. Every token is useful here.
            training.include_num_input_tokens_seen = "all"
    return with_fast_loss(trainer_cls), collator


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        try:
            return get_base()
        except AttributeError:
            return model
    return model
