"""The memory-lean causal-LM loss: output head + cross-entropy in chunks, and the Trainer mixin using it.

The default loss materializes fp32 logits for every token (T x 49k for SmolLM2) plus their softmax
for backward. :class:`FastLossMixin` runs the decoder, keeps only the positions that have a label,
and computes head + cross-entropy in chunks with the gradient formed chunk by chunk, so only one
chunk of logits lives at a time. It also skips the per-step entropy/accuracy extras that trl's
SFTTrainer computes. The result equals the model's own loss (tests/unit/test_fast_path.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunery.data import IGNORE_INDEX
from tunery.model.adapter import unwrap_peft

DEFAULT_CHUNK_TOKENS = 1024

# Config attributes of architectures that transform logits after the head (soft-capping, scaling):
# the fused loss would skip that step, so such models take the library's own loss.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


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
    inner = unwrap_peft(model)
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
    inner = unwrap_peft(model)
    decoder = inner.get_decoder()
    head = inner.get_output_embeddings()
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels", "num_items_in_batch")}
    model_inputs["use_cache"] = False  # a cache would also switch off packed-sequence handling
    hidden = decoder(**model_inputs).last_hidden_state
    labels = inputs["labels"].to(hidden.device)
    shift_labels = inputs.get("shift_labels")
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = shift_labels != IGNORE_INDEX
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


def dft_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Dynamic Fine-Tuning loss (``use_dft_loss``, Wu et al. 2025): each token's cross-entropy weighted by
    the model's own probability of that token, the weight detached from the graph.

    ``sum_t p_t.detach() * -log p_t`` over labelled next tokens, divided by ``num_items_in_batch``
    (the Trainer's labelled-token count over the accumulated batch) or by this batch's labelled
    tokens. ``outputs.logits`` is ``[batch, length, vocab]``, ``labels`` ``[batch, length]`` with
    IGNORE_INDEX on untrained positions. Used as the Trainer's ``compute_loss_func``.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    shift_labels = F.pad(labels.to(logits.device), (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = shift_labels != IGNORE_INDEX
    nll = F.cross_entropy(logits[keep].float(), shift_labels[keep], reduction="none")
    total = (nll * torch.exp(-nll).detach()).sum()
    if num_items_in_batch is None:
        return total / keep.sum().clamp(min=1)
    if isinstance(num_items_in_batch, torch.Tensor):
        return total / num_items_in_batch.to(total.device).clamp(min=1).to(total.dtype)
    return total / max(int(num_items_in_batch), 1)


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [n, vocab] fp32, targets [n])`` of the labelled next-token positions."""
    shift_labels = F.pad(labels.to(logits.device), (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = shift_labels != IGNORE_INDEX
    return logits[keep].float(), shift_labels[keep]


def _normalize(total: torch.Tensor, count: torch.Tensor, num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    if num_items_in_batch is None:
        return total / count.clamp(min=1)
    if isinstance(num_items_in_batch, torch.Tensor):
        return total / num_items_in_batch.to(total.device).clamp(min=1).to(total.dtype)
    return total / max(int(num_items_in_batch), 1)


EAFT_TOP_K = 20  # LLaMA-Factory's entropy estimate uses the 20 largest logits of each position
EAFT_ENTROPY_SCALE = 3.0  # and divides it by 3 (about ln 20, the largest entropy of 20 choices)


def eaft_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None,
              alpha: float = 1.0) -> torch.Tensor:
    """Entropy-Adaptive Fine-Tuning loss (``use_eaft_loss``): each token's cross-entropy weighted by how
    unsure the model is at that position, as LLaMA-Factory computes it.

    Weight (detached): ``(H_20 / 3) ** alpha`` with ``H_20`` the entropy of the softmax over the 20
    largest logits of the position (all logits when the vocabulary is smaller). Sum over labelled
    next tokens divided by ``num_items_in_batch`` or by this batch's labelled tokens. Shapes as
    :func:`dft_loss`; used as the Trainer's ``compute_loss_func`` with ``alpha`` bound.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    selected, targets = _shifted(logits, labels)
    nll = F.cross_entropy(selected, targets, reduction="none")
    with torch.no_grad():
        top = torch.topk(selected, k=min(EAFT_TOP_K, selected.shape[-1]), dim=-1).values
        log_p = top - torch.logsumexp(top, dim=-1, keepdim=True)
        entropy = -(log_p.exp() * log_p).sum(dim=-1)
        weight = (entropy / EAFT_ENTROPY_SCALE).pow(alpha)
    return _normalize((nll * weight).sum(), torch.tensor(targets.shape[0], device=nll.device), num_items_in_batch)


def asft_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Anchored SFT loss (``use_asft_loss``): the DFT loss plus ``alpha`` times the KL divergence of the
    model from a frozen reference, as LLaMA-Factory computes it.

    Over the labelled next-token positions (``logits``/``ref_logits`` ``[batch, length, vocab]``,
    ``labels`` ``[batch, length]``): ``mean_t p_t.detach() * -log p_t + alpha * mean_t KL(q_t || p_t)``
    with ``p`` the model's and ``q`` the reference's next-token distribution. Both terms are means over
    this batch's labelled tokens (LLaMA-Factory does not use the accumulated token count here).
    """
    selected, targets = _shifted(logits, labels)
    ref_selected, _ = _shifted(ref_logits.to(logits.device), labels)
    if targets.numel() == 0:
        return logits.sum() * 0.0
    nll = F.cross_entropy(selected, targets, reduction="none")
    dft = (nll * torch.exp(-nll).detach()).mean()
    log_p = F.log_softmax(selected, dim=-1)
    log_q = F.log_softmax(ref_selected.float(), dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1).mean()
    return dft + alpha * kl


class AsftLossMixin:
    """Put before a transformers ``Trainer`` class (see :func:`with_asft_loss`): training and evaluation
    losses become :func:`asft_loss` against a frozen reference.

    The reference is ``asft_ref_model`` when set, otherwise (LoRA) the trained model itself with its
    adapter switched off. It sees the same inputs as the model (padding-free rows included).
    """

    asft_ref_model: Any = None
    asft_alpha: float = 0.1

    def _reference_logits(self, model: Any, model_inputs: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            if self.asft_ref_model is not None:
                return self.asft_ref_model(**model_inputs).logits
            with unwrap_model_for_adapter_off(model):
                return model(**model_inputs).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        if "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels", "num_items_in_batch")}
        model_inputs["use_cache"] = False
        ref_logits = self._reference_logits(model, model_inputs)
        outputs = model(**model_inputs)
        loss = asft_loss(outputs.logits, ref_logits, inputs["labels"], self.asft_alpha)
        return (loss, outputs) if return_outputs else loss


def unwrap_model_for_adapter_off(model: Any) -> Any:
    """Context manager: ``model`` (a peft model, possibly wrapped by DDP) with its adapters switched off."""
    inner = getattr(model, "module", model)
    if not hasattr(inner, "disable_adapter"):
        raise TypeError("the ASFT reference needs a reference model or a LoRA model to switch off")
    return inner.disable_adapter()


def with_asft_loss(trainer_cls: type, ref_model: Any, alpha: float) -> type:
    """``trainer_cls`` with :class:`AsftLossMixin` in front, bound to ``ref_model`` (None: LoRA off) and ``alpha``."""
    return type(f"Asft{trainer_cls.__name__}", (AsftLossMixin, trainer_cls),
                {"asft_ref_model": ref_model, "asft_alpha": alpha})
