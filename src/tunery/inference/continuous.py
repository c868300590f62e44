"""Continuous batching for the transformers engine: rows join and leave a running decode between steps.

Static batching (one ``generate`` call per gathered batch) runs every row until the longest one is
done, and a request that arrives meanwhile waits for the whole batch. Here the engine owns the
decoding loop: each step runs the model once on the last token of every live row (one
left-padded ``DynamicCache`` for all of them), a row that ends leaves the batch at once, and new
requests with the same settings are prefilled and join it. transformers' own continuous batching
(``generate_batch``, paged attention) is built around GPU kernels: on this project's CPU it gave
19.8 tokens/s for four greedy SmolLM2 replies where one static ``generate`` batch gives about 24.
Hence this loop over the model's ordinary forward.

Each step does what ``generate`` does for a left-padded batch (same attention mask, position ids
``cumsum(mask) - 1``, logits in float32), so greedy rows give the tokens one-at-a-time ``generate``
gives. Served: greedy and sampled decoding with temperature, top_k, top_p and
repetition_penalty, through transformers' own logits processors. Everything else (beams,
several sequences per prompt, other processors a model's generation_config turns on, caches that
are not plain per-layer key/value tensors) stays with ``generate``: :func:`decoding_of` says None.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer

from tunery.inference.generation import MODEL_SAMPLING_KEYS

# generate() arguments this loop serves (the rest of a request's settings must be at their defaults).
SERVED_KWARGS = {"do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length",
                 "repetition_penalty", "length_penalty", "num_return_sequences", "eos_token_id", "pad_token_id",
                 "bos_token_id"}
# generation_config fields that do not change which token is chosen.
NEUTRAL_CONFIG = {"bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "output_attentions",
                  "output_hidden_states", "return_dict_in_generate", "output_scores", "output_logits",
                  "transformers_version", "max_length", "max_new_tokens", "_from_model_config", "cache_implementation"}


@dataclass(frozen=True)
class Decoding:
    """How each step picks the next token of every row; see :func:`decoding_of`."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def processors(self) -> LogitsProcessorList:
        """transformers' processors in generate's order: the penalty, then temperature, top-k, top-p."""
        chain = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.do_sample:
            if self.temperature != 1.0:
                chain.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                chain.append(TopKLogitsWarper(self.top_k))
            if self.top_p < 1.0:
                chain.append(TopPLogitsWarper(self.top_p))
        return chain


def decoding_of(kwargs: dict[str, Any], generation_config: Any) -> Decoding | None:
    """The :class:`Decoding` for ``generate`` keyword arguments on a model with ``generation_config``,
    or None when they need ``generate`` itself (beam search, several sequences, a setting this loop
    does not apply, or a model generation_config that turns on another logits processor)."""
    if set(kwargs) - SERVED_KWARGS or kwargs.get("num_beams", 1) != 1 or kwargs.get("num_return_sequences", 1) != 1:
        return None
    config = generation_config.to_diff_dict() if generation_config is not None else {}
    for key, value in config.items():
        if key in NEUTRAL_CONFIG or key in kwargs:  # the request's own value wins
            continue
        if key not in (*MODEL_SAMPLING_KEYS, "num_return_sequences"):
            return None  # another logits processor, or a generation mode this loop does not have
        if key in ("num_beams", "num_return_sequences") and value != 1:
            return None

    def setting(key: str, default: Any) -> Any:
        value = kwargs.get(key, config.get(key, default))
        return default if value is None else value

    if not setting("do_sample", False):  # greedy: the sampling settings play no part
        return Decoding(repetition_penalty=float(setting("repetition_penalty", 1.0)))
    return Decoding(do_sample=True, temperature=float(setting("temperature", 1.0)),
                    top_k=int(setting("top_k", 50)), top_p=float(setting("top_p", 1.0)),
                    repetition_penalty=float(setting("repetition_penalty", 1.0)))


def has_plain_cache(model: Any) -> bool:
    """True when the model is a decoder whose DynamicCache holds plain per-layer key/value tensors
    (no sliding window, no state-space layers), which this loop can pad and merge by rows."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=config)
    except Exception:  # a model type DynamicCache cannot describe
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def left_padded(prompts: list[list[int]], pad_token_id: int,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(len(prompts), longest)`` long tensors, padded on the left so
    every row's last token is its generation prompt (what decoding continues)."""
    width = max(len(p) for p in prompts)
    ids = [[pad_token_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return (torch.tensor(ids, dtype=torch.long, device=device),
            torch.tensor(mask, dtype=torch.long, device=device))


def _prepend_zeros(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = width
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class DecodeBatch:
    """Rows decoding together: one left-padded DynamicCache, attention mask ``(rows, length)``, the
    token each row feeds next ``(rows, 1)`` and each row's tokens so far (for repetition_penalty).

    :meth:`admit` prefills new prompts and returns their first tokens; :meth:`step` decodes one
    token for every row; :meth:`keep` drops the rows that ended. Call inside ``torch.inference_mode``.
    """

    def __init__(self, model: Any, decoding: Decoding, pad_token_id: int) -> None:
        self.model, self.decoding, self.pad_token_id = model, decoding, pad_token_id
        self.processors = decoding.processors()
        # transformers 5 renames forward's past_key_values to cache; remote-code models may not have
        self.cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.next_input: torch.Tensor | None = None
        self.tokens: list[list[int]] = []
        self.device = next(model.parameters()).device

    @property
    def size(self) -> int:
        return len(self.tokens)

    def admit(self, prompts: list[list[int]]) -> list[int]:
        """Prefill ``prompts`` (left-padded among themselves) and add them as rows; returns each one's first token."""
        ids, mask = left_padded(prompts, self.pad_token_id, self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=self._positions(mask),
                         use_cache=True, logits_to_keep=1, **{self.cache_kw: cache})
        tokens = [list(p) for p in prompts]
        first = self._choose(out.logits[:, -1, :], tokens)
        for row, token in zip(tokens, first):
            row.append(token)
        self._merge(cache, mask)
        new_input = torch.tensor(first, device=self.device).unsqueeze(1)
        self.next_input = new_input if self.next_input is None else torch.cat([self.next_input, new_input])
        self.tokens.extend(tokens)
        return first

    def step(self) -> list[int]:
        """One forward pass over every row's last token; returns the next token of each row, in row order."""
        assert self.cache is not None and self.mask is not None and self.next_input is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=1)
        positions = self.mask.sum(dim=1, keepdim=True) - 1
        out = self.model(input_ids=self.next_input, attention_mask=self.mask, position_ids=positions,
                         use_cache=True, **{self.cache_kw: self.cache})
        chosen = self._choose(out.logits[:, -1, :], self.tokens)
        for row, token in zip(self.tokens, chosen):
            row.append(token)
        self.next_input = torch.tensor(chosen, device=self.device).unsqueeze(1)
        return chosen

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices, in order); drops the padding columns no kept row needs."""
        if len(rows) == self.size:
            return
        if not rows:
            self.cache = self.mask = self.next_input = None
            self.tokens = []
            return
        index = torch.tensor(rows, device=self.device)
        self.mask = self.mask.index_select(0, index)
        used = torch.nonzero(self.mask.sum(dim=0)).flatten()
        start = int(used[0]) if used.numel() else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
        self.next_input = self.next_input.index_select(0, index)
        self.tokens = [self.tokens[i] for i in rows]

    def _merge(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Join a prefilled cache to the running one: the shorter is padded on the left (masked out)."""
        if self.cache is None or self.mask is None:
            self.cache, self.mask = cache, mask
            return
        old, new = self.mask.shape[1], mask.shape[1]
        length = max(old, new)
        for running, joining in zip(self.cache.layers, cache.layers):
            running.keys = torch.cat([_prepend_zeros(running.keys, length - old, 2),
                                      _prepend_zeros(joining.keys, length - new, 2)])
            running.values = torch.cat([_prepend_zeros(running.values, length - old, 2),
                                        _prepend_zeros(joining.values, length - new, 2)])
        self.mask = torch.cat([_prepend_zeros(self.mask, length - old, 1), _prepend_zeros(mask, length - new, 1)])

    def _choose(self, logits: torch.Tensor, tokens: list[list[int]]) -> list[int]:
        """Next token per row from ``logits`` ``(rows, vocab)``, as generate picks it."""
        scores = logits.to(dtype=torch.float32)
        if self.processors:
            width = max(len(t) for t in tokens)  # each row padded with its own first token: no new penalties
            history = torch.tensor([t + [t[0]] * (width - len(t)) for t in tokens], device=scores.device)
            scores = self.processors(history, scores)
        if self.decoding.do_sample:
            return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1).tolist()
        return scores.argmax(dim=-1).tolist()

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        """Position ids of a left-padded prompt batch, as generate computes them."""
        positions = mask.long().cumsum(-1) - 1
        return positions.masked_fill_(mask == 0, 1)
