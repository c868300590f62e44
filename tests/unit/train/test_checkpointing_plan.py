"""Gradient checkpointing decided from the memory estimate: only as many layers as the budget needs.

The plan (``train.estimate.plan_checkpointing``) picks the count, ``model.adapter.limit_checkpointed_layers``
applies it, and ``train.sft.checkpointing_plan`` decides when the plan applies at all (pt/sft fast path,
checkpointing neither off nor forced). Checkpointing only some layers must not change the math.
"""

from __future__ import annotations

import pytest
import torch

from tests.unit.train_utils import train_config
from tunery.model.adapter import (
    checkpointable_layers,
    enable_gradient_checkpointing,
    limit_checkpointed_layers,
)
from tunery.train.estimate import (
    GIB,
    DataShape,
    estimate_run,
    layer_activation_values,
    plan_checkpointing,
    worst_batch_shape,
)
from tunery.train.sft import checkpointing_plan

SHAPE = DataShape(sequence_tokens=200.0, longest=400, examples=40, trained_tokens=120.0)


def _cfg(model, tmp_path, **extra):
    settings = {"stage": "sft", "disable_gradient_checkpointing": False, "per_device_train_batch_size": 4,
                "cutoff_len": 512, **extra}
    return train_config(model, tmp_path / "out", **settings)


def test_activation_values_count_checkpointed_layers():
    full = 22 * 8 + 5 * 16
    assert layer_activation_values(8, 16, 4, 0) == 4 * full
    assert layer_activation_values(8, 16, 4, 4) == 4 * 8 + full  # inputs kept + one layer recomputed
    assert layer_activation_values(8, 16, 4, 1) == 8 + 3 * full  # recomputed after the others are freed
    assert layer_activation_values(8, 16, 4, 3) == 3 * 8 + full


def test_estimate_grows_as_fewer_layers_are_checkpointed(tiny_chatml_model, tmp_path):
    cfg = _cfg(tiny_chatml_model, tmp_path)
    peaks = [estimate_run(cfg, shape=SHAPE, checkpointed_layers=k).activations for k in (0, 1, 2)]
    assert peaks[0] > max(peaks[1], peaks[2])
    assert peaks[2] - peaks[1] < (peaks[0] - peaks[1]) / 10  # 2 layers: one kept ~ one recomputed
    every = estimate_run(cfg, shape=SHAPE)  # checkpointing on: every layer by default
    assert every.checkpointed_layers == every.layers == 2
    assert estimate_run(cfg, shape=SHAPE, checkpointed_layers=0).flops_per_step < every.flops_per_step


def test_plan_follows_the_budget(tiny_chatml_model, tmp_path):
    cfg = _cfg(tiny_chatml_model, tmp_path)
    roomy = plan_checkpointing(cfg, SHAPE, budget_gib=64.0)
    assert roomy.checkpointed == 0 and roomy.peak <= roomy.budget
    tight = plan_checkpointing(cfg, SHAPE, budget_gib=0.01)  # below the runtime alone: every layer
    assert tight.checkpointed == tight.layers == 2
    every = estimate_run(cfg, shape=worst_batch_shape(SHAPE), checkpointed_layers=2)  # the plan's view
    layer = every.layer_activations
    assert layer > 0
    between = plan_checkpointing(cfg, SHAPE, budget_gib=(every.peak_bytes + layer * 0.5) / GIB)
    assert between.checkpointed == 1 and between.peak == every.peak_bytes <= between.budget
    assert plan_checkpointing(cfg, SHAPE, budget_gib=(every.peak_bytes + layer * 1.5) / GIB).checkpointed == 0
    setting = plan_checkpointing(_cfg(tiny_chatml_model, tmp_path, gradient_checkpointing_budget=64.0), SHAPE)
    assert setting.checkpointed == 0 and setting.source == "gradient_checkpointing_budget"


def test_default_budget_is_llamafactorys_run_and_spends_the_chunked_head_savings(tiny_chatml_model, tmp_path):
    """Default: the peak of the run with every layer checkpointed and full logits; the fast path's chunked
    head needs less, so the plan leaves layers unchecked and still stays within that peak."""
    cfg = _cfg(tiny_chatml_model, tmp_path)
    plan = plan_checkpointing(cfg, SHAPE)
    assert "LLaMA-Factory" in plan.source
    assert plan.checkpointed < plan.layers and plan.peak <= plan.budget
    no_fast = _cfg(tiny_chatml_model, tmp_path, fast_path=False)
    assert plan.budget == estimate_run(no_fast, shape=DataShape(
        sequence_tokens=400.0, longest=400, examples=40, trained_tokens=240.0), checkpointed_layers=2).peak_bytes


def test_plan_applies_only_when_checkpointing_is_on_and_not_forced(tiny_chatml_model, tmp_path):
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}] * 4
    assert checkpointing_plan(_cfg(tiny_chatml_model, tmp_path), rows, "sft") is not None
    off = _cfg(tiny_chatml_model, tmp_path, disable_gradient_checkpointing=True)
    assert checkpointing_plan(off, rows, "sft") is None
    forced = _cfg(tiny_chatml_model, tmp_path, gradient_checkpointing=True)
    assert checkpointing_plan(forced, rows, "sft") is None
    zero = _cfg(tiny_chatml_model, tmp_path, gradient_checkpointing_budget=0)
    assert checkpointing_plan(zero, rows, "sft") is None
    plain = _cfg(tiny_chatml_model, tmp_path, fast_path=False)
    assert checkpointing_plan(plain, rows, "sft") is None


def _tiny(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_partial_checkpointing_keeps_the_loss_and_gradients(count):
    ids = torch.tensor([[3, 9, 4, 7, 1, 5, 8, 2]])
    plain = _tiny()
    plain.train()
    loss = plain(input_ids=ids, labels=ids).loss
    loss.backward()
    partial = _tiny()
    partial.train()
    enable_gradient_checkpointing(partial, reentrant=True)
    assert limit_checkpointed_layers(partial, count) == count
    flags = [layer.gradient_checkpointing for layer in checkpointable_layers(partial)]
    assert flags == [i < count for i in range(3)]
    other = partial(input_ids=ids, labels=ids).loss
    other.backward()
    assert torch.allclose(loss, other)
    for (name, a), (_, b) in zip(plain.named_parameters(), partial.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_limit_leaves_a_model_without_checkpointing_alone():
    model = _tiny()
    assert limit_checkpointed_layers(model, 2) == 0
    assert not any(layer.gradient_checkpointing for layer in checkpointable_layers(model))


def test_a_model_without_an_estimate_keeps_every_layer_checkpointed(monkeypatch, tiny_chatml_model, tmp_path):
    from tunery.train import sft

    def no_estimate(*_args, **_kwargs):
        raise ValueError("unknown architecture")

    monkeypatch.setattr(sft, "checkpointing_plan", no_estimate)
    model = _tiny()
    enable_gradient_checkpointing(model)
    assert sft.apply_checkpointing_plan(_cfg(tiny_chatml_model, tmp_path), model, [], "sft") is None
    assert all(layer.gradient_checkpointing for layer in checkpointable_layers(model))
