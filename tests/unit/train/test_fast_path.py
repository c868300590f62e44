"""The fast path changes speed and memory, never the result: losses and gradients must match."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunery.data.collator import padding_free_collator
from tunery.model import attention
from tunery.train import fast_path, losses


def tiny_llama(seed: int = 0, attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
    )
    config._attn_implementation = attn
    return LlamaForCausalLM(config).float()


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(model, cfg)


def examples():
    """Three sft-like examples of different lengths: prompt tokens labelled -100."""
    g = torch.Generator().manual_seed(3)
    out = []
    for length, prompt in ((9, 4), (5, 2), (13, 6)):
        ids = torch.randint(3, 97, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def padded_batch(features, pad_id: int = 0):
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id)
    labels = torch.full((len(features), width), -100)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def trainable_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("chunk", [1, 4, 7, 1024])
def test_chunked_cross_entropy_equals_plain_values_and_grads(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(23, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))

    plain = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    plain.backward()
    grads_plain = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    fused = losses.chunked_cross_entropy_sum(hidden, weight, targets, chunk=chunk)
    (fused * 0.5).backward()  # a scale on the loss must reach the gradients

    assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-5)
    assert torch.allclose(hidden.grad, grads_plain[0] * 0.5, rtol=1e-4, atol=1e-6)
    assert torch.allclose(weight.grad, grads_plain[1] * 0.5, rtol=1e-4, atol=1e-6)


def test_chunked_cross_entropy_without_grad_needs_no_backward():
    hidden, weight = torch.randn(5, 8), torch.randn(11, 8)
    targets = torch.tensor([0, 3, 10, 2, 2])
    with torch.no_grad():
        fused = losses.chunked_cross_entropy_sum(hidden, weight, targets, chunk=2)
    assert torch.allclose(fused, F.cross_entropy(hidden @ weight.t(), targets, reduction="sum"), atol=1e-5)


def test_causal_lm_loss_equals_model_loss_with_lora():
    batch = padded_batch(examples())
    model = with_lora(tiny_llama())
    reference = model(**batch, use_cache=False).loss
    reference.backward()
    expected = trainable_grads(model)
    model.zero_grad()

    assert losses.supports_fast_loss(model)
    loss = losses.causal_lm_loss(model, batch, chunk=5)
    loss.backward()
    got = trainable_grads(model)

    assert torch.allclose(loss, reference, rtol=1e-5)
    assert expected.keys() == got.keys() and len(got) > 0
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-6), name


def test_causal_lm_loss_honours_num_items_in_batch():
    batch = padded_batch(examples())
    model = tiny_llama()
    mean = losses.causal_lm_loss(model, batch)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    scaled = losses.causal_lm_loss(model, batch, num_items_in_batch=2 * labelled)
    assert torch.allclose(scaled, mean / 2, rtol=1e-5)


@pytest.mark.parametrize("boundaries_from", ["position_ids", "cu_seq_lens"])
def test_padding_free_batch_gives_the_padded_loss_and_grads(boundaries_from):
    from transformers import DataCollatorWithFlattening

    feats = examples()
    padded = padded_batch(feats)
    model = with_lora(tiny_llama())
    reference = model(**padded, use_cache=False).loss
    reference.backward()
    expected = trainable_grads(model)
    model.zero_grad()

    if boundaries_from == "cu_seq_lens":
        packed = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(feats)
        assert packed["cu_seq_lens_q"].tolist() == [0, 9, 14, 27]
    else:
        packed = padding_free_collator()(feats)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))
    assert packed["position_ids"][0].tolist() == list(range(9)) + list(range(5)) + list(range(13))
    assert attention.enable_packed_attention(model)
    loss = losses.causal_lm_loss(model, packed)
    loss.backward()
    got = trainable_grads(model)

    assert torch.allclose(loss, reference, rtol=1e-5)
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-6), name


def test_packed_attention_keeps_examples_apart():
    """Changing one example must not change the hidden states of the others in the same row."""
    feats = examples()
    model = tiny_llama()
    assert attention.enable_packed_attention(model)
    collate = padding_free_collator()

    def logits(batch):
        return model(**{**{k: v for k, v in collate(batch).items() if k != "labels"}, "use_cache": False}).logits

    first = logits(feats)
    changed = [feats[0], {"input_ids": [5] * 5, "labels": [5] * 5}, feats[2]]
    second = logits(changed)
    assert torch.allclose(first[0, :9], second[0, :9], atol=1e-6)
    assert torch.allclose(first[0, 14:], second[0, 14:], atol=1e-6)
    assert not torch.allclose(first[0, 9:14], second[0, 9:14])


def test_packed_attention_on_padded_batches_matches_sdpa():
    batch = padded_batch(examples())
    plain = tiny_llama(attn="sdpa")
    fast = tiny_llama(attn="sdpa")
    assert attention.enable_packed_attention(fast)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    mask = batch["attention_mask"].bool()
    assert torch.allclose(plain(**inputs).logits[mask], fast(**inputs).logits[mask], atol=1e-5)
    prompt = torch.tensor([[5, 6, 7, 8]])
    assert plain.generate(prompt, max_new_tokens=6, do_sample=False).tolist() == fast.generate(
        prompt, max_new_tokens=6, do_sample=False
    ).tolist()


def test_trainer_with_fast_path_reproduces_plain_trainer_losses(tmp_path, monkeypatch):
    """Three optimizer steps: padded batches + library loss vs padding-free + chunked loss."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    feats = examples() * 4
    data = Dataset.from_list(feats)
    calls = []
    original = losses.causal_lm_loss
    monkeypatch.setattr(losses, "causal_lm_loss", lambda *a, **k: calls.append(1) or original(*a, **k))

    def run(fast: bool) -> list[float]:
        model = with_lora(tiny_llama())
        args = TrainingArguments(
            output_dir=str(tmp_path / ("fast" if fast else "plain")), per_device_train_batch_size=3, max_steps=3,
            learning_rate=1e-2, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
            remove_unused_columns=False, seed=7, disable_tqdm=True,
        )
        if fast:
            attention.enable_packed_attention(model)
            trainer_cls, collator = losses.with_fast_loss(Trainer), padding_free_collator()
        else:
            trainer_cls, collator = Trainer, padded_batch
        trainer = trainer_cls(model=model, args=args, train_dataset=data, data_collator=collator)
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    plain = run(False)
    assert calls == []
    fast = run(True)
    assert len(calls) == 3  # every step took the fast loss
    assert len(plain) == len(fast) == 3
    assert plain[0] > 0
    for a, b in zip(plain, fast):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (plain, fast)


def test_packed_boundaries_only_for_rows_of_restarting_positions():
    assert attention.packed_boundaries(torch.tensor([[0, 1, 2, 0, 1, 0]])) == [0, 3, 5, 6]
    assert attention.packed_boundaries(torch.tensor([[0, 1, 2, 3]])) is None  # one sequence
    assert attention.packed_boundaries(torch.tensor([[1, 1, 0, 1]])) is None  # left-padded generation
    assert attention.packed_boundaries(torch.tensor([[0, 1], [0, 1]])) is None  # a padded batch
    assert attention.packed_boundaries(None) is None


def test_fast_path_on_by_default_for_sft_and_pt_only():
    from tunery.config import parse_config

    def cfg(**extra):
        return parse_config("train", {"model_name_or_path": "x", "stage": "sft", "output_dir": "out", **extra})

    assert fast_path.fast_path_enabled(cfg()) and fast_path.padding_free_applies(cfg())
    assert fast_path.fast_path_enabled(cfg(stage="pt"))
    assert not fast_path.fast_path_enabled(cfg(stage="dpo"))
    assert not fast_path.padding_free_applies(cfg(predict_with_generate=True))
    trainer_cls, padding_free = fast_path.fast_trainer_parts(cfg(stage="dpo"), tiny_llama(), object)
    assert trainer_cls is object and padding_free is False
    sft = cfg()
    model = tiny_llama()
    trainer_cls, padding_free = fast_path.fast_trainer_parts(sft, model, object)
    assert issubclass(trainer_cls, losses.FastLossMixin) and padding_free is True
    assert model.config._attn_implementation == attention.PACKED_ATTENTION


def test_sft_trainer_parts_take_the_fast_path_by_default(tiny_chatml_model):
    """`tunery train` (stage sft) uses the chunked loss and padding-free batches unless fast_path: false."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    from tunery.config import parse_config
    from tunery.train.losses import FastLossMixin
    from tunery.train.sft import trainer_parts

    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_chatml_model)
    cfg = parse_config("train", {"stage": "sft", "output_dir": "unused"})
    trainer_cls, collator = trainer_parts(cfg, model, tokenizer, "sft")
    assert issubclass(trainer_cls, FastLossMixin)
    assert cfg.training.include_num_input_tokens_seen == "all"  # no pads in a padding-free row
    batch = collator([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}])
    assert batch["input_ids"].shape == (1, 5) and batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    plain = parse_config("train", {"stage": "sft", "fast_path": False, "output_dir": "unused"})
    trainer_cls, collator = trainer_parts(plain, model, tokenizer, "sft")
    assert trainer_cls is Trainer
    pt = parse_config("train", {"stage": "pt", "output_dir": "unused"})
    _, collator = trainer_parts(pt, model, tokenizer, "pt")
    assert type(collator).__name__ == "PackedCollator"  # pt rows are packed already: not re-flattened
    packed_sft = parse_config("train", {"stage": "sft", "packing": True, "output_dir": "unused"})
    trainer_cls, collator = trainer_parts(packed_sft, model, tokenizer, "sft")
    assert issubclass(trainer_cls, FastLossMixin) and type(collator).__name__ == "PackedCollator"
    predict = parse_config("train", {"stage": "sft", "predict_with_generate": True, "output_dir": "unused"})
    _, collator = trainer_parts(predict, model, tokenizer, "sft")
    assert type(collator).__name__ == "PaddedCollator"
