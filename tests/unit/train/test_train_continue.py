"""Runs never lose or redo work: covered checkpoints, overwrite + resume, whole-run results, full disk,
the stop message, and continuing a finished run with more steps (schedule re-planned, optimizer kept)."""

from __future__ import annotations

import errno
import json
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback

from tests.unit.train.test_train_resume import OVERRIDES, SignalAtStep
from tests.unit.train_utils import logged_losses, run_tiny_training, train_config
from tunery.config import parse_config
from tunery.config.parser import load_raw_config
from tunery.errors import ConfigError, ResourceError
from tunery.runlog import read as read_log
from tunery.train.continue_run import settings_fingerprint


def run_as_command(cfg, callbacks=None):
    """Like ``tunery train``: the output-dir rules know the settings' fingerprint."""
    return run_tiny_training(cfg, callbacks=callbacks, fingerprint=settings_fingerprint(cfg))


def adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


CONSTANT = {**OVERRIDES, "max_steps": 6, "lr_scheduler_type": "constant", "save_steps": 3}


def test_sigterm_in_the_last_step_then_same_command_trains_nothing_more(tiny_chatml_model, tmp_path):
    out = tmp_path / "out"
    # 16 rows / batch 2 = 8 steps an epoch, so 6 steps end inside the first epoch
    outcome, _ = run_tiny_training(train_config(tiny_chatml_model, out, **CONSTANT), callbacks=[SignalAtStep(6)])
    assert outcome.stopped_by == "SIGTERM" and (out / "checkpoint-6" / "trainer_state.json").is_file()
    assert not (out / "train_results.json").exists()
    saved = adapter(out / "checkpoint-6")

    again, trainer = run_tiny_training(train_config(tiny_chatml_model, out, **CONSTANT))
    assert again.stopped_by is None and trainer.state.global_step == 6  # not a 7th step
    assert sorted(logged_losses(out)) == [1, 2, 3, 4, 5, 6]
    final = adapter(out)
    for name, value in saved.items():
        assert torch.equal(final[name], value), name  # the checkpoint's weights, untouched
    results = json.loads((out / "train_results.json").read_text())
    losses = logged_losses(out)
    assert results["train_loss"] == pytest.approx(sum(losses.values()) / 6, rel=1e-6)


def test_killed_during_the_final_save_then_same_command_only_writes_outputs(tiny_chatml_model, tmp_path):
    out = tmp_path / "out"
    run_tiny_training(train_config(tiny_chatml_model, out, **CONSTANT))
    finished = adapter(out)
    for name in ("train_results.json", "all_results.json", "adapter_model.safetensors"):
        (out / name).unlink()  # as if killed while the final model was written
    _, trainer = run_tiny_training(train_config(tiny_chatml_model, out, **CONSTANT))
    assert trainer.state.global_step == 6 and sorted(logged_losses(out)) == [1, 2, 3, 4, 5, 6]
    again = adapter(out)
    for name, value in finished.items():
        assert torch.equal(again[name], value), name
    assert (out / "train_results.json").is_file()


def test_results_after_a_resume_cover_the_whole_run(tiny_chatml_model, tmp_path):
    straight = tmp_path / "straight"
    run_tiny_training(train_config(tiny_chatml_model, straight, **OVERRIDES))
    reference = json.loads((straight / "train_results.json").read_text())["train_loss"]

    split = tmp_path / "split"
    run_tiny_training(train_config(tiny_chatml_model, split, **OVERRIDES), callbacks=[SignalAtStep(4)])
    run_tiny_training(train_config(tiny_chatml_model, split, **OVERRIDES))
    results = json.loads((split / "train_results.json").read_text())
    assert results["train_loss"] == pytest.approx(reference, abs=1e-5)  # all 10 steps, not steps 5-10
    assert results["epoch"] == pytest.approx(json.loads((straight / "train_results.json").read_text())["epoch"])


def test_overwrite_then_sigterm_then_same_command_resumes(tiny_chatml_model, tmp_path, caplog):
    out = tmp_path / "out"
    first = train_config(tiny_chatml_model, out, **{**OVERRIDES, "max_steps": 4})
    run_as_command(first)  # an older, finished run in the folder
    old_adapter = adapter(out)

    settings = {**OVERRIDES, "save_steps": 3, "overwrite_output_dir": True}
    with caplog.at_level("WARNING"):
        outcome, _ = run_as_command(train_config(tiny_chatml_model, out, **settings), callbacks=[SignalAtStep(5)])
    assert outcome.stopped_by == "SIGTERM"
    assert not (out / "adapter_model.safetensors").exists()  # the old run's model went before the new run wrote
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-3", "checkpoint-5"}
    config = out / "training_args.yaml"
    assert f"tunery train {config}" in caplog.text  # the stop message names a command that resumes
    assert config.is_file()

    resumed, trainer = run_as_command(train_config(tiny_chatml_model, out, **settings))
    assert resumed.stopped_by is None and trainer.state.global_step == 10
    assert sorted(logged_losses(out)) == list(range(1, 11))
    log = read_log(str(out))
    assert [r["current_steps"] for r in log if r["loss"] is not None] == list(range(1, 11))  # steps 1-5 once
    new_adapter = adapter(out)
    assert any(not torch.equal(new_adapter[k], v) for k, v in old_adapter.items())

    # the command printed at the stop resumes too: its settings have the same fingerprint
    raw, _ = load_raw_config([str(config)])
    assert settings_fingerprint(parse_config("train", raw)) == settings_fingerprint(
        train_config(tiny_chatml_model, out, **settings))


def test_overwrite_with_other_settings_starts_over(tiny_chatml_model, tmp_path):
    from tunery.train.outputs import prepare_output_dir

    out = tmp_path / "out"
    settings = {**OVERRIDES, "save_steps": 3, "overwrite_output_dir": True}
    run_as_command(train_config(tiny_chatml_model, out, **settings), callbacks=[SignalAtStep(4)])
    assert (out / "checkpoint-4").is_dir()
    other = train_config(tiny_chatml_model, out, **{**settings, "learning_rate": 1e-3})
    assert prepare_output_dir(other.training, fingerprint=settings_fingerprint(other)) is None
    assert not list(out.glob("checkpoint-*")) and not (out / "trainer_log.jsonl").exists()


def test_full_disk_during_a_checkpoint_is_one_clear_error(tiny_chatml_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []

    def disk_full(trainer, output_dir):
        calls.append(output_dir)
        raise OSError(errno.ENOSPC, "No space left on device")

    # the adapter is written first, then the optimizer: the checkpoint is cut off half-way
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", disk_full)
    with pytest.raises(ResourceError, match="no space left on the disk while writing a checkpoint"):
        run_tiny_training(train_config(tiny_chatml_model, out, **{**OVERRIDES, "max_steps": 4, "save_steps": 2}))
    assert len(calls) == 1 and calls[0].endswith("checkpoint-2")
    assert not list(out.glob("checkpoint-*"))  # the partial checkpoint-2 was removed
    assert not (out / "train_results.json").exists()


class RecordFirstStep(TrainerCallback):
    """Adam's state and the learning rate as the first step of this session begins."""

    def __init__(self):
        self.adam_step = None
        self.exp_avg_norm = None

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.adam_step is None:
            states = [s for s in optimizer.state.values() if "exp_avg" in s]
            self.adam_step = float(states[0]["step"]) if states else 0.0
            self.exp_avg_norm = sum(float(s["exp_avg"].abs().sum()) for s in states)


FR = {**OVERRIDES, "learning_rate": 1e-4, "lr_scheduler_type": "linear", "warmup_steps": 0, "max_steps": 2,
      "save_steps": 2}


def test_continue_a_finished_run_into_a_new_folder_replans_the_schedule(tiny_chatml_model, tmp_path):
    first = tmp_path / "first"
    run_tiny_training(train_config(tiny_chatml_model, first, **FR))
    assert (first / "checkpoint-2").is_dir()

    second = tmp_path / "second"
    seen = RecordFirstStep()
    cfg = train_config(tiny_chatml_model, second, **{**FR, "max_steps": 4, "overwrite_output_dir": True,
                                                     "resume_from_checkpoint": str(first / "checkpoint-2")})
    outcome, trainer = run_tiny_training(cfg, callbacks=[seen])
    assert outcome.stopped_by is None and trainer.state.global_step == 4
    lrs = {r["current_steps"]: r["lr"] for r in read_log(str(second)) if r["loss"] is not None}
    assert sorted(lrs) == [3, 4]
    assert lrs[3] == pytest.approx(5e-5) and lrs[4] == pytest.approx(2.5e-5)  # linear from 1e-4 over 4 steps
    assert seen.adam_step == 2.0 and seen.exp_avg_norm > 0  # optimizer state carried over, not fresh
    results = json.loads((second / "train_results.json").read_text())
    assert results["epoch"] == pytest.approx(trainer.state.epoch)
    assert json.loads((second / "trainer_state.json").read_text())["global_step"] == 4


def test_continue_in_the_same_folder_with_more_steps(tiny_chatml_model, tmp_path):
    out = tmp_path / "out"
    run_tiny_training(train_config(tiny_chatml_model, out, **FR))
    _, trainer = run_tiny_training(train_config(tiny_chatml_model, out, **{**FR, "max_steps": 4}))
    assert trainer.state.global_step == 4
    log = [r for r in read_log(str(out)) if r["loss"] is not None]
    assert [r["current_steps"] for r in log] == [1, 2, 3, 4]
    assert log[0]["lr"] == pytest.approx(1e-4) and log[1]["lr"] == pytest.approx(5e-5)  # the first plan
    assert log[2]["lr"] == pytest.approx(5e-5) and log[3]["lr"] == pytest.approx(2.5e-5)  # the new plan
    assert json.loads((out / "train_results.json").read_text())["train_loss"] == pytest.approx(
        sum(r["loss"] for r in log) / 4, rel=1e-6)


def test_a_resume_that_cannot_do_what_was_asked_says_so(tiny_chatml_model, tmp_path):
    from tunery.train.outputs import prepare_output_dir

    first = tmp_path / "first"
    run_tiny_training(train_config(tiny_chatml_model, first, **FR))
    same = train_config(tiny_chatml_model, first, **FR)
    with pytest.raises(ResourceError, match="already holds a finished run"):
        prepare_output_dir(same.training)
    covered = train_config(tiny_chatml_model, tmp_path / "second",
                           **{**FR, "resume_from_checkpoint": str(first / "checkpoint-2")})
    with pytest.raises(ConfigError, match="already covers this run"):
        prepare_output_dir(covered.training)
    # a finished run whose last checkpoint is older than its last step cannot be continued exactly
    (first / "checkpoint-2").rename(first / "checkpoint-1")
    state = json.loads((first / "checkpoint-1" / "trainer_state.json").read_text())
    state["global_step"] = 1
    (first / "checkpoint-1" / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="newest checkpoint is .*checkpoint-1, not one at its last step 2"):
        prepare_output_dir(train_config(tiny_chatml_model, first, **{**FR, "max_steps": 4}).training)


def test_sigint_message_also_names_the_resume_command(tiny_chatml_model, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        run_tiny_training(train_config(tiny_chatml_model, out, max_steps=4), callbacks=[SignalAtStep(2, signal.SIGINT)])
    assert f"tunery train {out / 'training_args.yaml'}" in caplog.text
    raw, _ = load_raw_config([str(out / "training_args.yaml")])
    assert raw["max_steps"] == 4 and raw["output_dir"] == str(out)
