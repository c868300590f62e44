"""One `tunery train` run per preference/RL stage on SmolLM2-135M-Instruct (LoRA, 2 steps, cutoff 128)."""

from __future__ import annotations

import json

import pytest

from tunery.cli.main import main as tunery_main

pytestmark = pytest.mark.slow

REWARD_FILE = """
def short_and_polite(prompts, completions, **kwargs):
    return [("please" in c.lower()) - len(c) / 200 for c in completions]
"""


def _train(smollm2_path, reference_dir, out, *extra: str) -> list[dict]:
    argv = ["train", "--model_name_or_path", str(smollm2_path), "--dataset_dir", str(reference_dir / "lf" / "data"),
            "--output_dir", str(out), "--finetuning_type", "lora", "--lora_rank", "4", "--cutoff_len", "128",
            "--max_samples", "8", "--per_device_train_batch_size", "2", "--max_steps", "2", "--logging_steps", "1",
            "--learning_rate", "1e-4", "--report_to", "none", "--plot_loss", "true", "--max_new_tokens", "8", *extra]
    assert tunery_main(argv) == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file()
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reward_adapter(smollm2_path, reference_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    log = _train(smollm2_path, reference_dir, out, "--stage", "rm", "--dataset", "dpo_en_demo")
    assert len(log) == 2 and all("accuracy" in r and "margin" in r for r in log)
    assert (out / "training_accuracy.png").is_file()
    return out


def test_rm(reward_adapter):
    config = json.loads((reward_adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]


@pytest.mark.parametrize("stage", ["dpo", "orpo", "simpo"])
def test_pairwise_stages(smollm2_path, reference_dir, tmp_path, stage):
    log = _train(smollm2_path, reference_dir, tmp_path, "--stage", stage, "--dataset", "dpo_en_demo")
    assert len(log) == 2
    assert all(k in log[-1] for k in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                      "rewards/margins"))
    assert (tmp_path / "training_rewards_accuracies.png").is_file()


def test_kto(smollm2_path, reference_dir, tmp_path):
    log = _train(smollm2_path, reference_dir, tmp_path, "--stage", "kto", "--dataset", "kto_en_demo")
    assert len(log) == 2 and "kl" in log[-1] and "loss" in log[-1]


def test_ppo_with_the_reward_adapter(smollm2_path, reference_dir, tmp_path, reward_adapter):
    log = _train(smollm2_path, reference_dir, tmp_path, "--stage", "ppo", "--dataset", "alpaca_en_demo",
                 "--reward_model", str(reward_adapter), "--reward_model_type", "lora", "--ppo_epochs", "1")
    assert len(log) == 2 and all(k in log[-1] for k in ("reward", "kl", "kl_coef", "value_loss"))
    assert (tmp_path / "value_head.safetensors").is_file()


def test_grpo_with_a_reward_file_and_the_reward_model(smollm2_path, reference_dir, tmp_path, reward_adapter):
    path = tmp_path / "my_reward.py"
    path.write_text(REWARD_FILE)
    log = _train(smollm2_path, reference_dir, tmp_path / "out", "--stage", "grpo", "--dataset", "alpaca_en_demo",
                 "--reward_funcs", f"{path}:short_and_polite", "--reward_model", str(reward_adapter),
                 "--reward_model_type", "full", "--num_generations", "2")
    assert len(log) == 2
    assert "rewards/short_and_polite/mean" in log[-1] and "rewards/reward_model/mean" in log[-1]
