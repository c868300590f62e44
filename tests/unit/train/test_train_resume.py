"""Resume and signals: 10 steps equal 5 + 5 step for step; SIGTERM saves a complete checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerCallback

from tests.unit.train_utils import logged_losses, run_tiny_training, train_config


class SignalAtStep(TrainerCallback):
    """Send ``sig`` to this process while step ``step`` runs."""

    def __init__(self, step: int, sig: int = signal.SIGTERM) -> None:
        self.step, self.sig = step, sig

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), self.sig)


OVERRIDES = {"max_steps": 10, "lora_dropout": 0.0, "learning_rate": 5e-3, "per_device_train_batch_size": 2}


def test_sigterm_saves_checkpoint_then_resume_matches_uninterrupted_run(tiny_chatml_model, tmp_path):
    straight = tmp_path / "straight"
    run_tiny_training(train_config(tiny_chatml_model, straight, **OVERRIDES))
    reference = logged_losses(straight)
    assert sorted(reference) == list(range(1, 11))

    split = tmp_path / "split"
    outcome, _ = run_tiny_training(train_config(tiny_chatml_model, split, **OVERRIDES), callbacks=[SignalAtStep(5)])
    assert outcome.stopped_by == "SIGTERM"
    checkpoint = split / "checkpoint-5"
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert not (split / "train_results.json").exists()  # not a finished run
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    resumed, trainer = run_tiny_training(train_config(tiny_chatml_model, split, **OVERRIDES))
    assert resumed.stopped_by is None and trainer.state.global_step == 10
    losses = logged_losses(split)
    assert sorted(losses) == list(range(1, 11))  # steps 1-5 from the first run, 6-10 after resuming
    for step in range(1, 11):
        assert losses[step] == pytest.approx(reference[step], abs=1e-5), step


def test_sigint_also_stops_cleanly(tiny_chatml_model, tmp_path):
    cfg = train_config(tiny_chatml_model, tmp_path / "out", max_steps=6)
    outcome, trainer = run_tiny_training(cfg, callbacks=[SignalAtStep(2, signal.SIGINT)])
    assert outcome.stopped_by == "SIGINT" and trainer.state.global_step == 2
    assert (tmp_path / "out" / "checkpoint-2" / "trainer_state.json").is_file()


def test_explicit_resume_path_and_incomplete_checkpoint(tiny_chatml_model, tmp_path):
    from tunery.errors import ConfigError
    from tunery.train.outputs import latest_checkpoint, prepare_output_dir

    out = tmp_path / "out"
    run_tiny_training(train_config(tiny_chatml_model, out, max_steps=4, save_steps=2))
    (out / "train_results.json").unlink()  # pretend the run was cut off after its checkpoints
    half = out / "checkpoint-6"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"partial")
    cfg = train_config(tiny_chatml_model, out)
    assert prepare_output_dir(cfg.training) == str(out / "checkpoint-4")
    assert not half.exists()  # a checkpoint cut off mid-save is removed, never resumed from
    assert latest_checkpoint(out) == str(out / "checkpoint-4")

    cfg = train_config(tiny_chatml_model, out, resume_from_checkpoint=str(out / "checkpoint-2"))
    assert prepare_output_dir(cfg.training) == str(out / "checkpoint-2")
    assert max(r for r in logged_losses(out)) == 2  # log lines after the checkpoint dropped
    cfg = train_config(tiny_chatml_model, out, resume_from_checkpoint=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        prepare_output_dir(cfg.training)
