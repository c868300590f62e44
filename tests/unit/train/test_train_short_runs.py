"""A run shorter than logging_steps still logs its last step, writes trainer_log.jsonl and the loss plot."""

from __future__ import annotations

import logging

from tests.unit.train_utils import logged_losses, run_tiny_training, train_config


def test_last_step_is_logged_when_the_run_is_shorter_than_logging_steps(tiny_chatml_model, tmp_path):
    out = tmp_path / "run"
    cfg = train_config(tiny_chatml_model, out, max_steps=3, logging_steps=10, plot_loss=True)
    outcome, _ = run_tiny_training(cfg)
    losses = logged_losses(out)
    assert list(losses) == [3] and losses[3] > 0
    assert (out / "trainer_log.jsonl").is_file() and (out / "training_loss.png").stat().st_size > 0
    assert outcome.train_metrics["train_loss"] > 0


def test_last_step_logged_once_beside_the_regular_steps(tiny_chatml_model, tmp_path):
    out = tmp_path / "run"
    outcome, _ = run_tiny_training(train_config(tiny_chatml_model, out, max_steps=4, logging_steps=2))
    assert list(logged_losses(out)) == [2, 4]  # step 4 is a logging step: not logged a second time
    out = tmp_path / "odd"
    run_tiny_training(train_config(tiny_chatml_model, out, max_steps=5, logging_steps=2))
    assert list(logged_losses(out)) == [2, 4, 5]


def test_logging_strategy_no_logs_nothing_and_says_why_there_is_no_plot(tiny_chatml_model, tmp_path, caplog):
    out = tmp_path / "run"
    cfg = train_config(tiny_chatml_model, out, max_steps=2, logging_strategy="no", plot_loss=True)
    with caplog.at_level(logging.WARNING):
        run_tiny_training(cfg)
    assert logged_losses(out) == {}
    assert not (out / "training_loss.png").exists()
    assert "nothing to plot" in caplog.text and "logging_strategy" in caplog.text
