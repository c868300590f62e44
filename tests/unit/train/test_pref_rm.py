"""Stage rm: a reward model learns the easy preference; it saves and scores back through rewards.py."""

from __future__ import annotations

import json

import torch

from tests.unit.pref_data import config, logged, pairwise_dataset


def _train_rm(tiny_chatml_model, out, **overrides):
    from tunery.model.loader import load_tokenizer
    from tunery.train.loop import fit
    from tunery.train.rewards import load_sequence_classifier
    from tunery.train.rm import PLOT_KEYS, prepare_reward_model, reward_trainer

    cfg = config(tiny_chatml_model, out, stage="rm", max_steps=10, plot_loss=True, **overrides)
    tokenizer = load_tokenizer(cfg.model)
    model = prepare_reward_model(load_sequence_classifier(tokenizer, cfg.model, cfg.training), cfg)
    data = pairwise_dataset(tokenizer)
    trainer = reward_trainer(cfg, model, tokenizer, data)
    fit(trainer, cfg, plot_keys=PLOT_KEYS)
    return cfg, tokenizer, trainer, data


def _pairwise_accuracy(scorer, data) -> float:
    chosen = scorer([r["prompt_ids"] + r["chosen_ids"] for r in data])
    rejected = scorer([r["prompt_ids"] + r["rejected_ids"] for r in data])
    return float((chosen > rejected).float().mean())


def test_lora_reward_model_learns_and_loads_for_scoring(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model
    from tunery.train.rewards import AdapterScorer, ModelScorer, load_reward_scorer

    out = tmp_path / "rm"
    cfg, tokenizer, trainer, data = _train_rm(tiny_chatml_model, out)
    assert logged(trainer, "accuracy")[-1] >= 0.9
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert all("accuracy" in r and "margin" in r for r in log)
    assert (out / "adapter_config.json").is_file() and (out / "training_accuracy.png").is_file()

    # reward_model = the adapter folder, loaded as a standalone classifier (base + adapter merged)
    cfg.finetuning.reward_model = str(out)
    cfg.finetuning.reward_model_type = "full"
    full = load_reward_scorer(cfg, tokenizer)
    assert isinstance(full, ModelScorer)
    assert _pairwise_accuracy(full, data) >= 0.9
    # ... and as a second adapter on a LoRA policy's base: same scores, no second base in memory
    policy_cfg = config(tiny_chatml_model, tmp_path / "ppo", stage="ppo", reward_model=str(out))
    policy = load_model(tokenizer, policy_cfg.model, policy_cfg.finetuning, is_trainable=True,
                        training_args=policy_cfg.training)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    scorer = load_reward_scorer(policy_cfg, tokenizer, policy)
    assert isinstance(scorer, AdapterScorer)
    seqs = [r["prompt_ids"] + r["chosen_ids"] for r in data][:3]
    torch.testing.assert_close(scorer(seqs), full(seqs), atol=1e-4, rtol=1e-4)
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable


def test_full_reward_model_saves_a_transformers_classifier(tiny_chatml_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "rm_full"
    _, tokenizer, trainer, data = _train_rm(tiny_chatml_model, out, finetuning_type="full", learning_rate=1e-3)
    assert logged(trainer, "accuracy")[-1] >= 0.9
    model = AutoModelForSequenceClassification.from_pretrained(out)
    from tunery.train.rewards import ModelScorer

    assert _pairwise_accuracy(ModelScorer(model, tokenizer.pad_token_id), data) >= 0.9
