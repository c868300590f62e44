"""Stages dpo/orpo/simpo learn an easy preference on a tiny model, through Tunery's trl wiring."""

from __future__ import annotations

import json

import pytest

from tests.unit.pref_data import config, logged, mean_margin, pairwise_dataset
from tunery.errors import ConfigError


def _setup(tiny_chatml_model, tmp_path, **overrides):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = config(tiny_chatml_model, tmp_path / "out", stage="dpo", **overrides)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    return cfg, tokenizer, model


@pytest.mark.parametrize("loss", ["sigmoid", "hinge", "ipo", "orpo", "simpo"])
def test_each_loss_learns_the_preference(tiny_chatml_model, tmp_path, loss):
    from tunery.train.dpo import preference_trainer

    cfg, tokenizer, model = _setup(tiny_chatml_model, tmp_path, pref_loss=loss)
    data = pairwise_dataset(tokenizer)
    before = mean_margin(model, data)
    trainer = preference_trainer(cfg, model, tokenizer, data)
    trainer.train()
    accuracies = logged(trainer, "rewards/accuracies")
    assert accuracies[-1] >= 0.9, accuracies
    after = mean_margin(model, data)
    assert after > before + 0.5, (before, after)
    if loss in ("sigmoid", "hinge", "ipo"):
        # LoRA: the reference is the base with the adapter off, not a copy ('ref' adapter removed).
        assert list(trainer.model.peft_config) == ["default"]
        assert trainer.ref_model is None


def test_dpo_options_map_to_trl_losses(tiny_chatml_model, tmp_path):
    from tunery.train.dpo import trainer_parts

    cfg = config(tiny_chatml_model, tmp_path / "o", stage="dpo", pref_ftx=0.5, dpo_label_smoothing=0.1, pref_beta=0.3)
    _, args = trainer_parts(cfg.finetuning, cfg.training, 128)
    assert args.loss_type == ["robust", "sft"] and args.loss_weights == [1.0, 0.5]
    assert args.beta == 0.3 and args.label_smoothing == 0.1 and args.max_length == 128
    assert args.bf16 is False and args.gradient_checkpointing is False
    assert args.ld_alpha is None  # plain DPO unless asked
    cfg = config(tiny_chatml_model, tmp_path / "o", stage="dpo", ld_alpha=0.5)
    _, args = trainer_parts(cfg.finetuning, cfg.training, 128)
    assert args.ld_alpha == 0.5 and args.loss_type == ["sigmoid"]  # LD-DPO: trl weights the longer tail by 0.5
    cfg = config(tiny_chatml_model, tmp_path / "o", stage="simpo", simpo_gamma=0.7, pref_ftx=0.2)
    _, args = trainer_parts(cfg.finetuning, cfg.training, 128)
    assert (args.loss_type, args.simpo_gamma, args.cpo_alpha) == ("simpo", 0.7, 0.2)
    # refused when the config is parsed (config/validation.py rules kto_pair_removed, label_smoothing_needs_sigmoid)
    with pytest.raises(ConfigError, match="kto"):
        config(tiny_chatml_model, tmp_path / "o", stage="dpo", pref_loss="kto_pair")
    with pytest.raises(ConfigError, match="sigmoid"):
        config(tiny_chatml_model, tmp_path / "o", stage="dpo", pref_loss="hinge", dpo_label_smoothing=0.1)


def test_full_finetuning_uses_a_frozen_reference_and_writes_outputs(tiny_chatml_model, tmp_path):
    from tunery.train.dpo import PLOT_KEYS, preference_trainer
    from tunery.train.loop import fit
    from tunery.train.pref_common import load_reference_model

    cfg, tokenizer, model = _setup(tiny_chatml_model, tmp_path, finetuning_type="full", learning_rate=1e-3,
                                   max_steps=4, plot_loss=True)
    ref = load_reference_model(cfg, tokenizer, model)
    assert ref is not None and not any(p.requires_grad for p in ref.parameters())
    ref_weight = ref.model.layers[0].self_attn.q_proj.weight.clone()
    trainer = preference_trainer(cfg, model, tokenizer, pairwise_dataset(tokenizer), ref_model=ref)
    fit(trainer, cfg, plot_keys=PLOT_KEYS)
    out = tmp_path / "out"
    assert (ref.model.layers[0].self_attn.q_proj.weight == ref_weight).all()
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all("rewards/accuracies" in r and "rewards/margins" in r for r in lines)
    assert (out / "train_results.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "training_rewards_accuracies.png").is_file()


def test_freeze_finetuning_trains_only_the_last_layers(tiny_chatml_model, tmp_path):
    """finetuning_type: freeze with a preference stage: the last layer learns, the rest stays put."""
    import torch

    from tunery.train.dpo import preference_trainer

    cfg, tokenizer, model = _setup(tiny_chatml_model, tmp_path, finetuning_type="freeze", freeze_trainable_layers=1,
                                   learning_rate=5e-3, max_steps=6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = pairwise_dataset(tokenizer)
    start = mean_margin(model, data)
    trainer = preference_trainer(cfg, model, tokenizer, data)
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(".layers.1." in n for n in changed), sorted(changed)
    assert mean_margin(model, data) > start
