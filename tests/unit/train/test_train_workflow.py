"""tunery train's routing: stage dispatch, prediction hand-off, dry run and estimate."""

from __future__ import annotations

import sys
import types

import pytest

from tests.unit.train_utils import train_config
from tunery.cli import train as train_cli
from tunery.errors import ConfigError
from tunery.train import workflow


def test_every_documented_stage_resolves_to_a_registered_stage():
    """One stage list: the config's ``stage`` choices are exactly the registry's names."""
    from typing import get_args

    from tunery.config.finetuning_args import Stage as StageName
    from tunery.data.processors import STAGE_KIND
    from tunery.train.stages import STAGES, Stage, get_stage

    documented = ["pt", "sft", "rm", "dpo", "kto", "orpo", "simpo", "ppo", "grpo"]  # docs/training*.md
    assert sorted(STAGES) == sorted(get_args(StageName)) == sorted(documented)
    assert set(STAGES) <= set(STAGE_KIND)  # the data pipeline knows every stage's columns
    for name in documented:
        stage = get_stage(name)
        assert isinstance(stage, Stage) and stage.name == name and "loss" in stage.plot_keys
    assert type(get_stage("orpo")) is type(get_stage("dpo")) is type(get_stage("simpo"))
    with pytest.raises(ConfigError, match="unknown stage"):
        get_stage("nope")


def test_run_stage_is_data_then_trainer_then_fit(monkeypatch, tmp_path):
    """workflow.run_stage: output-dir rules, then the registered stage's data -> trainer -> fit."""
    from tunery.train import stages

    calls = []

    class FakeStage:
        name = "sft"
        plot_keys = ("loss", "custom")

        def load_data(self, cfg, tokenizer, template):
            calls.append(("data", tokenizer, template))
            return "data"

        def create_trainer(self, cfg, tokenizer, template, data, callbacks=None):
            calls.append(("trainer", data, callbacks))
            return "trainer"

    monkeypatch.setitem(stages.STAGES, "sft", FakeStage())
    monkeypatch.setattr(stages, "fit", lambda trainer, cfg, plot_keys: calls.append(("fit", trainer, plot_keys)))
    monkeypatch.setattr(workflow, "load_tokenizer", lambda model_args: "tok")
    monkeypatch.setattr(workflow, "get_template", lambda name, tokenizer, data_args: "tpl")
    cfg = train_config(tmp_path / "model", tmp_path / "out", stage="sft")
    workflow.run_stage(cfg, callbacks=["cb"])
    assert calls == [("data", "tok", "tpl"), ("trainer", "data", ["cb"]), ("fit", "trainer", ("loss", "custom"))]


def test_do_predict_routes_to_batch_prediction(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("tunery.inference.predict")
    fake.run_predict = lambda cfg: calls.append(cfg) or {}
    monkeypatch.setitem(sys.modules, "tunery.inference.predict", fake)
    cfg = train_config(tmp_path / "model", tmp_path / "out", do_train=False, do_predict=True,
                       predict_with_generate=True, eval_dataset="demo")  # prediction needs data to parse
    assert train_cli.run(cfg) == 0
    assert calls == [cfg] and cfg.training.predict_with_generate


def test_prediction_after_training_uses_the_trained_model(tmp_path):
    cfg = train_config(tmp_path / "model", tmp_path / "out", adapter_name_or_path="a1,a2")
    workflow.point_at_trained_model(cfg)
    assert cfg.model.adapters == ["a1", str(tmp_path / "out")]  # a2 was continued into out
    cfg = train_config(tmp_path / "model", tmp_path / "out", finetuning_type="full")
    workflow.point_at_trained_model(cfg)
    assert cfg.model.model_name_or_path == str(tmp_path / "out")


def test_estimate_counts_exact_parameters_without_loading_weights(tiny_chatml_model, tmp_path):
    from tunery.train.estimate import GIB, estimate_run, steps_for

    lora = estimate_run(train_config(tiny_chatml_model, tmp_path, lora_rank=8), tokens_per_step=512, longest_row=128)
    assert (lora.trainable, lora.total) == (16_384, 160_832)
    full = estimate_run(train_config(tiny_chatml_model, tmp_path, finetuning_type="full"), tokens_per_step=512,
                        longest_row=128, flops=1e11)
    assert full.trainable == full.total == 144_448
    assert full.optimizer == 8 * full.total and full.seconds_per_step and full.seconds_per_step > 0
    assert full.peak_bytes > lora.peak_bytes > 0.5 * GIB
    checkpointed = estimate_run(train_config(tiny_chatml_model, tmp_path, disable_gradient_checkpointing=False),
                                tokens_per_step=512, longest_row=128)
    assert checkpointed.activations < lora.activations
    args = train_config(tiny_chatml_model, tmp_path, max_steps=-1, num_train_epochs=2.0,
                        per_device_train_batch_size=4, gradient_accumulation_steps=2).training
    assert steps_for(17, args) == 6


def test_dry_run_prints_the_plan_and_trains_nothing(tiny_chatml_model, reference_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = train_config(tiny_chatml_model, out, dataset="alpaca_en_demo", dataset_dir=str(reference_dir / "lf" / "data"),
                       max_samples=12, cutoff_len=64, dry_run=True, max_steps=-1, num_train_epochs=1.0)
    assert train_cli.run(cfg) == 0
    text = capsys.readouterr().out
    import math
    import re

    found = re.search(r"examples after filtering: (\d+) train.*?(\d+) dropped: no room for a reply", text)
    assert found, text
    kept, dropped = int(found.group(1)), int(found.group(2))
    assert kept + dropped == 12 and kept > 0
    assert f"optimizer steps: {math.ceil(kept / 4)}" in text and "trainable of 160,832" in text
    assert "estimated peak memory" in text and "precision: float32" in text
    assert not out.exists()


def test_missing_reporter_package_is_a_dependency_error(tmp_path):
    import importlib.util

    from tunery.errors import DependencyError
    from tunery.train.trainer import configure_training_args

    if importlib.util.find_spec("swanlab") is not None:
        pytest.skip("swanlab is installed here")
    cfg = train_config(tmp_path / "model", tmp_path / "out", report_to="swanlab")
    with pytest.raises(DependencyError, match="swanlab"):
        configure_training_args(cfg.training)


def test_estimate_command_without_data(tiny_chatml_model, capsys):
    from tunery.cli.estimate import main

    assert main(["--model_name_or_path", str(tiny_chatml_model), "--finetuning_type", "full",
                 "--cutoff_len", "128", "--max_steps", "10", "--output_dir", "unused"]) == 0
    text = capsys.readouterr().out
    assert "assuming every row is cutoff_len=128" in text
    assert "144,448 trainable of 144,448" in text and "for 10 steps" in text
