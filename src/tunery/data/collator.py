"""Collators: tokenized examples -> padded tensors, per stage.

- ``sft``/``pt`` (not packed): right padding, labels padded with -100 (see :class:`PaddedCollator`).
- packed rows: :class:`PackedCollator` pads ``position_ids`` as a fresh sequence and sends no
  attention mask, so transformers keeps the block-diagonal mask of the packed examples.
- padding-free: transformers' DataCollatorWithFlattening (one row, restarting position ids).
- pairwise: chosen rows then rejected rows in one batch (LLaMA-Factory's layout for rm/dpo).
- unsupervised: left padding, because generation continues from the right end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunery.data.media import KINDS, MediaEncoder
from tunery.data.processors import IGNORE_INDEX


def pad(seqs: list[list[int]], value: int, side: str = "right", multiple_of: int | None = None):
    """A LongTensor of ``seqs`` padded with ``value`` to the longest (rounded up to ``multiple_of``)."""
    import torch

    longest = max((len(s) for s in seqs), default=0)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    out = torch.full((len(seqs), longest), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if side == "right":
                out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            else:
                out[i, longest - len(s):] = torch.tensor(s, dtype=torch.long)
    return out


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


@dataclass
class PackedCollator:
    """Packed rows (``input_ids``, ``labels``, ``position_ids``) -> tensors without an attention mask.

    Padding gets positions 0..k, i.e. it is one more "example" that nobody attends to and that has
    no labels. ``use_cache: False`` is part of the batch because transformers only derives the
    per-example mask from position ids when no KV cache is passed; a model whose config says
    ``use_cache: true`` would otherwise silently attend across examples (checked in 5.24). Hand-written because DataCollatorWithFlattening recomputes position ids per row and
    would merge the examples inside a packed row into one sequence.
    """

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [list(f["input_ids"]) for f in features]
        labels = [list(f["labels"]) for f in features]
        positions = [list(f["position_ids"]) if "position_ids" in f else list(range(len(f["input_ids"])))
                     for f in features]
        longest = max(len(s) for s in ids)
        positions = [p + list(range(longest - len(p))) for p in positions]
        return {"input_ids": pad(ids, self.pad_id), "labels": pad(labels, IGNORE_INDEX),
                "position_ids": pad(positions, 0), "use_cache": False}


@dataclass
class PairwiseCollator:
    """Chosen then rejected sequences, right-padded, in one batch of 2 x batch size."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
        labels = [f["chosen_labels"] for f in features] + [f["rejected_labels"] for f in features]
        return {"input_ids": pad(ids, self.pad_id), "attention_mask": pad([[1] * len(s) for s in ids], 0),
                "labels": pad(labels, IGNORE_INDEX)}


@dataclass
class KTOCollator:
    """Prompt + reply sequences with the desirable/undesirable flag as a bool tensor ``label``."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = [f["input_ids"] for f in features]
        return {"input_ids": pad(ids, self.pad_id), "attention_mask": pad([[1] * len(s) for s in ids], 0),
                "labels": pad([f["labels"] for f in features], IGNORE_INDEX),
                "label": torch.tensor([bool(f["label"]) for f in features])}


@dataclass
class GenerationCollator:
    """Left-padded prompts for ``generate``; reference ``labels`` right-padded with -100."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [f["input_ids"] for f in features]
        batch = {"input_ids": pad(ids, self.pad_id, side="left"),
                 "attention_mask": pad([[1] * len(s) for s in ids], 0, side="left")}
        if all("labels" in f for f in features):
            batch["labels"] = pad([f["labels"] for f in features], IGNORE_INDEX)
        return batch


@dataclass
class PaddingFreeCollator:
    """transformers' DataCollatorWithFlattening (one row, restarting position ids), plus ``use_cache: False``
    for the reason given in :class:`PackedCollator`."""

    flatten: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        features = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        return {**self.flatten(features), "use_cache": False}


def padding_free_collator() -> PaddingFreeCollator:
    from transformers import DataCollatorWithFlattening

    return PaddingFreeCollator(DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX))


@dataclass
class PaddedCollator:
    """Right padding whatever ``tokenizer.padding_side`` says.

    Not DataCollatorForSeq2Seq: it follows the tokenizer's padding side, which the model loader sets
    to left for generation; training batches must be right-padded so positions start at 0.
    """

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [f["input_ids"] for f in features]
        return {"input_ids": pad(ids, self.pad_id), "attention_mask": pad([[1] * len(s) for s in ids], 0),
                "labels": pad([f["labels"] for f in features], IGNORE_INDEX)}


@dataclass
class MediaCollator:
    """A vision/audio model's batches: ``base`` pads the token columns, the model's processor turns the
    rows' media paths (images/videos/audios columns) into its tensors (``pixel_values``,
    ``image_grid_thw``, ``input_features``, ...), in row order, the same way tokenizing counted them."""

    base: Any
    media: MediaEncoder

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{kind: f.get(kind) or [] for kind in KINDS} for f in features]
        batch = self.base([{k: v for k, v in f.items() if k not in KINDS} for f in features])
        batch.update(self.media.batch_features(rows, batch["input_ids"]))
        return batch
