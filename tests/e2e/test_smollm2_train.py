"""SmolLM2-135M-Instruct through `tunery train`: a handful of LoRA SFT steps, outputs, loss falls."""

from __future__ import annotations

import json

import pytest

from tunery.cli.main import main as tunery_main

pytestmark = pytest.mark.slow


def test_lora_sft_on_smollm2_end_to_end(smollm2_path, reference_dir, tmp_path):
    out = tmp_path / "smollm2-lora"
    rc = tunery_main([
        "train", "--model_name_or_path", str(smollm2_path), "--stage", "sft", "--do_train", "true",
        "--finetuning_type", "lora", "--lora_rank", "8", "--lora_target", "all",
        "--dataset", "identity", "--dataset_dir", str(reference_dir / "lf" / "data"), "--template", "auto",
        "--max_samples", "4", "--cutoff_len", "128", "--per_device_train_batch_size", "2",
        "--learning_rate", "2e-3", "--max_steps", "6", "--logging_steps", "1", "--save_steps", "100",
        "--disable_gradient_checkpointing", "true", "--plot_loss", "true", "--output_dir", str(out),
        "--report_to", "none", "--seed", "1",
    ])
    assert rc == 0
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "trainer_log.jsonl",
                 "training_loss.png", "train_results.json", "training_args.yaml"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["loss"] is not None]
    assert len(losses) == 6 and all(0 < loss < 20 for loss in losses)
    assert (losses[-1] + losses[-2]) / 2 < (losses[0] + losses[1]) / 2  # the 4 examples are being learned
    assert records[-1]["total_tokens"] > 0 and records[-1]["throughput"] > 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
