"""Packing: several tokenized examples per ``cutoff_len`` row, without cross-example attention.

Each packed row carries ``position_ids`` that restart at 0 for every example and no attention
mask. transformers (masking_utils.find_packed_sequence_indices) reads restarting position ids as
sequence boundaries when ``attention_mask`` is None and builds a block-diagonal causal mask for
sdpa/eager (flash-attention uses the same boundaries), so no token attends to another example.
The first label of every example is -100: otherwise the last token of the previous example would
be trained to predict it.
"""

from __future__ import annotations

import bisect

from tunery.data.processors import IGNORE_INDEX


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity (best-fit decreasing, O(n log n) search).

    A greedy bin packer is all we need: it wastes little space and is deterministic; no library in
    our stack packs pre-tokenized examples into rows with restarting position ids.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining space, bin index), sorted
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"example {i} has {size} tokens, more than the row size {capacity}")
        k = bisect.bisect_left(free, (size, -1))
        if k < len(free):
            remaining, b = free.pop(k)
        else:
            bins.append([])
            remaining, b = capacity, len(bins) - 1
        bins[b].append(i)
        if remaining - size > 0:
            bisect.insort(free, (remaining - size, b))
    return [sorted(b) for b in bins]


def pack_examples(input_ids: list[list[int]], labels: list[list[int]], capacity: int) -> dict[str, list]:
    """Rows of ``input_ids``/``labels``/``position_ids``; see the module docstring for why these three."""
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": []}
    keep = [i for i, ids in enumerate(input_ids) if ids]
    for group in best_fit_bins([len(input_ids[i]) for i in keep], capacity):
        ids_row: list[int] = []
        labels_row: list[int] = []
        pos_row: list[int] = []
        for j in group:
            i = keep[j]
            ids_row += input_ids[i]
            labels_row += [IGNORE_INDEX, *labels[i][1:]]
            pos_row += list(range(len(input_ids[i])))
        rows["input_ids"].append(ids_row)
        rows["labels"].append(labels_row)
        rows["position_ids"].append(pos_row)
    return rows


def pack_dataset(dataset, capacity: int):
    """A ``datasets.Dataset`` of packed rows built from a tokenized one (input_ids + labels)."""
    from datasets import Dataset

    packed = pack_examples(dataset["input_ids"], dataset["labels"], capacity)
    return Dataset.from_dict(packed)
