"""Stage grpo: trl's GRPOTrainer on Tunery's prompt ids, rewards from reward_funcs files or a reward model."""

from __future__ import annotations

import pytest
import torch

from tests.unit.pref_data import config, logged, pairwise_dataset
from tunery.errors import ConfigError

LOW = 275  # the reward prefers replies whose first token is in the lower half of the vocabulary

REWARD_FILE = f"""
def first_token_low(prompts, completions, completion_ids, **kwargs):
    return [float(ids[0] < {LOW}) if ids else 0.0 for ids in completion_ids]
"""


def _low_mass(model, data) -> float:
    with torch.no_grad():
        probs = [torch.softmax(model(input_ids=torch.tensor([r["prompt_ids"]])).logits[0, -1], -1) for r in data]
    return float(sum(p[:LOW].sum() for p in probs) / len(probs))


def test_grpo_mean_reward_rises_with_a_reward_function_file(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.grpo import grpo_trainer
    from tunery.train.rewards import load_reward_funcs

    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    cfg = config(tiny_chatml_model, tmp_path / "out", stage="grpo", finetuning_type="full", learning_rate=5e-2,
                 max_steps=10, per_device_train_batch_size=16, num_generations=4, max_new_tokens=2,
                 reward_funcs=f"{path}:first_token_low", pref_beta=0.0, temperature=1.0, top_p=1.0, top_k=0)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    data = pairwise_dataset(tokenizer)
    before = _low_mass(model, data)
    trainer = grpo_trainer(cfg, model, tokenizer, data, load_reward_funcs(cfg.finetuning.reward_funcs))
    assert trainer.args.num_generations == 4 and trainer.args.max_completion_length == 2
    trainer.train()
    rewards = logged(trainer, "reward")
    assert len(rewards) == 10
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.25, rewards
    assert _low_mass(model, data) > max(before + 0.3, 0.8)


def test_grpo_generates_from_tunery_prompt_ids_and_scores_full_sequences(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.grpo import grpo_config, grpo_trainer, scorer_reward

    cfg = config(tiny_chatml_model, tmp_path / "out", stage="grpo", max_steps=1, per_device_train_batch_size=4,
                 num_generations=4, max_new_tokens=3, pref_beta=0.05, temperature=0.7, top_p=0.9, top_k=20)
    args = grpo_config(cfg, stop_token_ids=[7])
    assert (args.beta, args.temperature, args.top_p, args.top_k) == (0.05, 0.7, 0.9, 20)
    assert args.generation_kwargs == {"eos_token_id": [7]}
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    data = pairwise_dataset(tokenizer).select(range(2))
    seen: list[list[int]] = []

    def scorer(sequences):
        seen.extend(sequences)
        return torch.ones(len(sequences))

    trainer = grpo_trainer(cfg, model, tokenizer, data, [scorer_reward(scorer)])
    assert list(trainer.model.peft_config) == ["default"]
    trainer.train()
    prompts = {tuple(r["prompt_ids"]) for r in data}
    assert len(seen) == 4
    for seq in seen:  # every scored sequence is one of Tunery's prompts followed by 1-3 generated ids
        assert any(tuple(seq[: len(p)]) == p and 1 <= len(seq) - len(p) <= 3 for p in prompts)
    with pytest.raises(ConfigError, match="rewards"):
        grpo_trainer(cfg, model, tokenizer, data, [])


def test_reward_functions_load_from_files_and_modules(tmp_path):
    from tunery.train.rewards import load_reward_funcs, score_texts_with

    path = tmp_path / "r.py"
    path.write_text("def length(prompts, completions, **kw):\n    return [len(c) for c in completions]\n")
    funcs = load_reward_funcs(f"{path}:length, tests.unit.train.test_pref_grpo:_exclaims")
    scores = score_texts_with(funcs, ["p", "p"], ["ab!", "c"])
    assert scores.tolist() == [4.0, 1.0]
    for bad, message in [("nofunc", "does not name a function"), (f"{tmp_path}/missing.py:f", "does not exist"),
                         (f"{path}:nothere", "not a function"), ("no_such_module_xyz:f", "cannot be imported")]:
        with pytest.raises(ConfigError, match=message):
            load_reward_funcs(bad)


def _exclaims(prompts, completions, **kwargs):
    return [c.count("!") for c in completions]
