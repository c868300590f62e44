"""Packing: bins respect the row size, and a packed batch gives the same per-token loss as unpacked.

The parity tests run a tiny Llama with eager and sdpa attention: if any token attended across an
example boundary (or a boundary token were trained on the next example), its loss would change.
"""

from __future__ import annotations

import pytest
import torch

from tunery.data.collator import PackedCollator, PaddedCollator, padding_free_collator
from tunery.data.packing import best_fit_bins, pack_examples
from tunery.data.processors import IGNORE_INDEX, ProcessSettings, process_batch


def test_best_fit_bins_fill_rows_without_overflow():
    lengths = [7, 5, 4, 3, 3, 2, 1, 9]
    bins = best_fit_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # 34 tokens need at least 4 rows of 10
    with pytest.raises(ValueError, match="more than the row size"):
        best_fit_bins([11], 10)


def test_pack_examples_restarts_positions_and_masks_first_label():
    rows = pack_examples([[1, 2, 3], [4, 5], [6]], [[1, 2, 3], [-100, 5], [6]], capacity=6)
    assert rows["input_ids"] == [[1, 2, 3, 4, 5, 6]]
    assert rows["position_ids"] == [[0, 1, 2, 0, 1, 0]]
    assert rows["labels"] == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5, IGNORE_INDEX]]


def test_packed_collator_pads_as_a_separate_sequence_without_attention_mask():
    batch = PackedCollator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 0]},
                                      {"input_ids": [8], "labels": [-100], "position_ids": [0]}])
    assert "attention_mask" not in batch and batch["use_cache"] is False
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]


@pytest.fixture(scope="module")
def examples(tiny_chatml_model):
    from transformers import AutoTokenizer

    from tunery.data.template import get_template

    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    template = get_template("auto", tok)
    convs = [[("Hello", "Hi there"), ("2+2?", "4")], [("What is the capital of France?", "Paris.")],
             [("Write a short poem", "The sea and the sky")]]
    records = []
    for conv in convs:
        msgs = [m for q, a in conv for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        records.append({"messages": msgs, "tools": None})
    out = process_batch({"messages": [r["messages"] for r in records], "tools": [None] * 3}, stage="sft",
                        tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=512))
    return out["input_ids"], out["labels"]


def per_token_losses(model, batch) -> list[float]:
    """Cross-entropy of every trained token (labels shifted like the model does)."""
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits
    logits, targets = logits[:, :-1], labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=IGNORE_INDEX, reduction="none")
    return losses[targets.reshape(-1) != IGNORE_INDEX].tolist()


def unpacked_losses(model, input_ids, labels) -> list[float]:
    out = []
    for ids, lab in zip(input_ids, labels):
        out += per_token_losses(model, PaddedCollator(0)([{"input_ids": ids, "labels": lab}]))
    return out


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def model(request, tiny_chatml_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_chatml_model, attn_implementation=request.param).eval()


def test_packed_row_loss_equals_unpacked(model, examples):
    input_ids, labels = examples
    reference = unpacked_losses(model, input_ids, labels)
    rows = pack_examples(input_ids, labels, capacity=sum(len(x) for x in input_ids))
    assert len(rows["input_ids"]) == 1  # all three examples share one row, in order
    packed = PackedCollator(0)([{k: rows[k][0] for k in rows}])
    assert per_token_losses(model, dict(packed)) == pytest.approx(reference, abs=1e-5)

    # Control: the same row with positions that do not restart lets tokens attend across examples.
    leaky = dict(packed)
    leaky["position_ids"] = torch.arange(leaky["input_ids"].shape[1])[None]
    assert per_token_losses(model, leaky) != pytest.approx(reference, abs=1e-3)
    # Control: with a KV cache transformers ignores the packing boundaries, hence use_cache=False in the batch.
    cached = {**packed, "use_cache": True}
    assert per_token_losses(model, cached) != pytest.approx(reference, abs=1e-3)


def test_padded_batch_of_packed_rows_loss_equals_unpacked(model, examples):
    input_ids, labels = examples
    reference = unpacked_losses(model, input_ids, labels)
    capacity = max(len(x) for x in input_ids)
    rows = pack_examples(input_ids, labels, capacity=capacity)
    assert len(rows["input_ids"]) >= 2  # several rows of different lengths -> padding in the batch
    batch = PackedCollator(0)([{k: rows[k][i] for k in rows} for i in range(len(rows["input_ids"]))])
    assert sorted(per_token_losses(model, dict(batch))) == pytest.approx(sorted(reference), abs=1e-5)


def test_padding_free_collator_loss_equals_unpacked(model, examples):
    input_ids, labels = examples
    reference = unpacked_losses(model, input_ids, labels)
    batch = padding_free_collator()([{"input_ids": i, "labels": lab} for i, lab in zip(input_ids, labels)])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch and batch["use_cache"] is False
    assert per_token_losses(model, dict(batch)) == pytest.approx(reference, abs=1e-5)
