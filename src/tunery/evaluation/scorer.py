"""Score multiple-choice prompts by the model's next-token probabilities of the choice letters.

No generation: one forward pass per batch, the logits at the last prompt position, read at the token
ids of ``A``, ``B``, ``C``... The prediction is the letter with the highest probability, so a run is
deterministic. Written by hand because transformers has no "logits of given tokens at the end of
each prompt" helper. Batches are padded on the right and read at each row's last real token, so a
padded prompt sees exactly what it would see alone; a prefix shared by a subject's prompts (header
and shots) runs once and its key/value cache is reused.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunery.errors import ModelError


@dataclass(frozen=True)
class LetterScores:
    token_probs: list[float]  # P(letter) over the whole vocabulary
    choice_probs: list[float]  # the same, renormalised over the choice letters
    predicted: int  # index of the most probable letter (first one on a tie)


def letter_token_ids(
    tokenizer, prompt_text: str, prompt_ids: Sequence[int], letters: str, separator: str, *, add_special_tokens: bool
) -> list[int]:
    """The token id each answer letter starts with when it follows this prompt.

    Per letter, the first of these that decodes to the letter itself: the token right after the prompt
    when ``prompt + separator + letter`` is tokenized (exact in context), the last token of
    ``separator + letter``, the last token of the bare letter. (A tokenizer may split " A" into " "
    and "A": the lone space says nothing about the choice.)
    """
    n = len(prompt_ids)

    def in_context(letter: str) -> int | None:
        ids = tokenizer(prompt_text + separator + letter, add_special_tokens=add_special_tokens)["input_ids"]
        return ids[n] if len(ids) > n and list(ids[:n]) == list(prompt_ids) else None

    def last_token(text: str) -> int | None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-1] if ids else None

    chosen = []
    for letter in letters:
        for token in (in_context(letter), last_token(separator + letter), last_token(letter)):
            if token is not None and tokenizer.decode([token]).strip() == letter:
                chosen.append(token)
                break
        else:
            chosen.append(None)
    if None in chosen or len(set(chosen)) != len(chosen):
        raise ModelError(
            f"the tokenizer gives no distinct token for each choice letter {', '.join(letters)}",
            hint="this model cannot be scored by next-token letter probabilities; try another template",
        )
    return chosen  # type: ignore[return-value]


def _accepts(model: torch.nn.Module, name: str) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft passes kwargs through
    try:
        return name in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def cache_argument(model: torch.nn.Module) -> str | None:
    """The forward argument taking a key/value cache: ``cache`` (transformers >= 5.2x) or the older name."""
    for name in ("cache", "past_key_values"):
        if _accepts(model, name):
            return name
    return None


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    n = 0
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


@torch.inference_mode()
def prefix_cache(model: torch.nn.Module, prefix: Sequence[int]) -> Any:
    """The key/value cache of a prefix shared by many prompts (the header and the shots)."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.inference_mode()
def next_token_log_probs(
    model: torch.nn.Module, batch: Sequence[Sequence[int]], pad_id: int, *, cache: Any = None, prefix_len: int = 0
) -> torch.Tensor:
    """log P(next token) over the vocabulary after each sequence of ``batch``: [batch, vocab], fp32.

    Sequences are padded on the right (causal attention keeps padding from touching real tokens) and
    read at their own last position. With ``cache``, they continue a shared prefix of ``prefix_len``.
    """
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, prefix_len : prefix_len + len(ids)] = 1
    last = torch.tensor([len(ids) - 1 for ids in batch], dtype=torch.long)
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
    if cache is not None:
        cache = copy.deepcopy(cache)  # the forward pass appends to it; the prefix is reused by the next batch
        cache.batch_repeat_interleave(len(batch))
        kwargs[cache_argument(model) or "past_key_values"] = cache
        kwargs["position_ids"] = (prefix_len + torch.arange(width)).unsqueeze(0).expand(len(batch), -1).to(device)
    if _accepts(model, "logits_to_keep"):
        # only the last real position of each row: the full logits of a 5-shot batch are large
        kwargs["logits_to_keep"] = last.unsqueeze(1).to(device)
        logits = model(**kwargs).logits[:, 0, :]
    else:
        logits = model(**kwargs).logits[torch.arange(len(batch)), last.to(device)]
    return torch.log_softmax(logits.float(), dim=-1)


def _batches(prompts: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], batch_size: int, min_prefix: int):
    """(prefix ids, [(index, suffix ids)]) batches: each group's shared prefix, longest prompts first."""
    for group in groups:
        if not group:
            continue
        n = common_prefix_length([prompts[i] for i in group])
        n = n if n >= min_prefix else 0
        order = sorted(group, key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield list(prompts[chunk[0]][:n]), [(i, list(prompts[i][n:])) for i in chunk]


def score_prompts(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    letter_ids: Sequence[int],
    *,
    batch_size: int,
    pad_id: int,
    groups: Sequence[Sequence[int]] | None = None,
    min_prefix: int = 32,
    progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> list[LetterScores]:
    """Scores for every prompt, in input order; ``on_progress(prompts scored so far)`` after each batch.

    ``groups`` lists prompts that share a long prefix (one subject's header and shots): that prefix
    runs through the model once per group and each batch continues from its cache (about half the
    compute of a 5-shot run on the sample task).
    """
    groups = groups if groups is not None else [list(range(len(prompts)))]
    letters = torch.tensor(list(letter_ids), dtype=torch.long)
    results: list[LetterScores | None] = [None] * len(prompts)
    use_cache = cache_argument(model) is not None
    batches = list(_batches(prompts, groups, max(1, batch_size), min_prefix if use_cache else 10**9))
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    cached: tuple[list[int], Any] | None = None
    done = 0
    for prefix, items in batches:
        if prefix and (cached is None or cached[0] != prefix):
            cached = (prefix, prefix_cache(model, prefix))
        log_probs = next_token_log_probs(
            model,
            [ids for _, ids in items],
            pad_id,
            cache=cached[1] if prefix else None,
            prefix_len=len(prefix),
        ).cpu()
        picked = log_probs[:, letters]
        choice = torch.softmax(picked, dim=-1)
        for row, (i, _) in enumerate(items):
            results[i] = LetterScores(
                token_probs=picked[row].exp().tolist(),
                choice_probs=choice[row].tolist(),
                predicted=int(torch.argmax(picked[row]).item()),
            )
        done += len(items)
        if on_progress is not None:
            on_progress(done)
    return results  # type: ignore[return-value]
