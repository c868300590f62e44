"""Each finetuning type (and QLoRA on a 4-bit base) trains a tiny model and its loss falls."""

from __future__ import annotations

import pytest

from tests.unit.train_utils import logged_losses, run_tiny_training, train_config


def _assert_loss_falls(output_dir, steps: int) -> None:
    losses = logged_losses(output_dir)
    assert sorted(losses) == list(range(1, steps + 1))
    first, last = sum(losses[s] for s in (1, 2)) / 2, sum(losses[s] for s in (steps - 1, steps)) / 2
    assert last < first - 0.05, losses


@pytest.mark.parametrize(
    "overrides",
    [
        {"finetuning_type": "full", "learning_rate": 3e-3},
        {"finetuning_type": "freeze", "freeze_trainable_layers": 1, "freeze_extra_modules": "lm_head"},
        {"finetuning_type": "lora", "lora_rank": 8, "lora_alpha": 32},
        {"finetuning_type": "lora", "use_dora": True, "use_rslora": True, "lora_alpha": 32},
        {"finetuning_type": "lora", "pissa_init": True, "pissa_convert": True, "lora_alpha": 32},
        {"finetuning_type": "lora", "loraplus_lr_ratio": 16.0, "learning_rate": 3e-3},
    ],
    ids=["full", "freeze", "lora", "dora-rslora", "pissa", "loraplus"],
)
def test_finetuning_type_trains_and_loss_falls(tiny_chatml_model, tmp_path, overrides):
    cfg = train_config(tiny_chatml_model, tmp_path / "out", **overrides)
    outcome, trainer = run_tiny_training(cfg)
    assert outcome.stopped_by is None
    _assert_loss_falls(tmp_path / "out", 8)
    saved = {p.name for p in (tmp_path / "out").iterdir()}
    if cfg.finetuning.finetuning_type == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= saved
    else:
        assert "model.safetensors" in saved
    if overrides.get("pissa_convert"):
        import json

        config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
        assert config["init_lora_weights"] is True  # converted to a plain LoRA adapter
        assert "pissa_init" not in saved
    if overrides.get("loraplus_lr_ratio"):
        lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
        assert lrs[-1] == pytest.approx(lrs[0] * 16.0)


def test_qlora_4bit_trains_and_loss_falls(tiny_chatml_model, tmp_path):
    pytest.importorskip("bitsandbytes")
    cfg = train_config(tiny_chatml_model, tmp_path / "out", quantization_bit=4, quantization_type="nf4",
                       lora_alpha=32, learning_rate=2e-2)
    _, trainer = run_tiny_training(cfg)
    assert any(type(p).__name__ == "Params4bit" for p in trainer.model.parameters())
    _assert_loss_falls(tmp_path / "out", 8)
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_neftune_noise_reaches_the_embeddings(tiny_chatml_model, tmp_path):
    plain = train_config(tiny_chatml_model, tmp_path / "plain", max_steps=2)
    noisy = train_config(tiny_chatml_model, tmp_path / "noisy", max_steps=2, neftune_noise_alpha=5.0)
    run_tiny_training(plain)
    run_tiny_training(noisy)
    # same weights and batch at step 1: only the noise on the input embeddings can change the loss
    assert logged_losses(tmp_path / "plain")[1] != pytest.approx(logged_losses(tmp_path / "noisy")[1], abs=1e-6)
