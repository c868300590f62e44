"""Web UI pieces that need no browser: values -> config, progress parsing, run locking, locales."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from tunery.errors import ConfigError, ResourceError
from tunery.webui import config_builder
from tunery.webui.locales import LANGUAGES, texts
from tunery.webui.progress import loss_table, read_progress
from tunery.webui.runner import LOCK_NAME, RunManager

UI_VALUES = {
    "model_name_or_path": "smollm2-135m-instruct", "adapter_name_or_path": "", "template": "auto",
    "stage": "sft", "finetuning_type": "lora", "dataset_dir": "data", "dataset": ["alpaca_en_demo", "identity"],
    "learning_rate": "1e-4", "num_train_epochs": 3.0, "max_steps": -1.0, "per_device_train_batch_size": 2.0,
    "gradient_accumulation_steps": 1.0, "cutoff_len": 1024.0, "max_samples": 1000.0, "logging_steps": 5.0,
    "save_steps": 100.0, "lora_rank": 8.0, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target": "all",
    "quantization_bit": "none", "output_dir": "saves/x",
}


def test_ui_values_become_a_valid_lf_style_config():
    config = config_builder.train_config(UI_VALUES)
    assert config["dataset"] == "alpaca_en_demo,identity"
    assert config["lora_rank"] == 8 and isinstance(config["lora_rank"], int)
    assert config["num_train_epochs"] == 3.0
    assert "adapter_name_or_path" not in config  # empty fields stay defaults
    assert "quantization_bit" not in config
    assert config["do_train"] is True and config["plot_loss"] is True
    assert yaml.safe_load(config_builder.to_yaml(config)) == config


def test_lora_fields_are_dropped_for_full_finetuning():
    config = config_builder.train_config({**UI_VALUES, "finetuning_type": "full", "quantization_bit": "4"})
    assert not any(k.startswith("lora_") for k in config) and "quantization_bit" not in config


def test_qlora_bits_kept():
    assert config_builder.train_config({**UI_VALUES, "quantization_bit": "4"})["quantization_bit"] == "4"


def test_invalid_ui_values_give_the_cli_error():
    with pytest.raises(ConfigError, match="learning_rate"):
        config_builder.train_config({**UI_VALUES, "learning_rate": "fast"})


def test_command_line_preview_round_trips_through_the_cli_parser():
    from tunery.config import load_config

    config = config_builder.train_config(UI_VALUES)
    line = config_builder.command_line("train", config)
    assert line.startswith("tunery train --model_name_or_path smollm2-135m-instruct")
    import shlex

    cfg, _ = load_config("train", shlex.split(line)[2:])
    assert cfg.data.dataset == "alpaca_en_demo,identity" and cfg.finetuning.lora_rank == 8


def test_progress_from_trainer_log(tmp_path):
    lines = [
        {"current_steps": 1, "total_steps": 4, "loss": 2.5, "percentage": 25.0, "elapsed_time": "0:00:01", "remaining_time": "0:00:03"},
        {"current_steps": 2, "total_steps": 4, "loss": 2.0, "percentage": 50.0, "elapsed_time": "0:00:02", "remaining_time": "0:00:02"},
        {"current_steps": 2, "total_steps": 4, "eval_loss": 2.2, "percentage": 50.0},
    ]
    (tmp_path / "trainer_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"current_ste")
    progress = read_progress(tmp_path)
    assert (progress.current, progress.total, progress.percentage) == (2, 4, 50.0)
    assert progress.losses == [(1, 2.5), (2, 2.0)] and progress.eval_losses == [(2, 2.2)]
    table = loss_table(progress)
    assert list(table["series"]) == ["train", "train", "eval"]
    assert "2/4 (50%)" in progress.label


def test_progress_of_a_missing_log_is_zero(tmp_path):
    assert read_progress(tmp_path).percentage == 0.0


def test_second_run_into_the_same_output_dir_is_refused(tmp_path, monkeypatch):
    manager = RunManager()
    # a stand-in command that runs a while: `python -m tunery` with a sleeping module is overkill;
    # start the real CLI on `version` but keep the lock held by a live pid (our own).
    (tmp_path / LOCK_NAME).write_text(str(__import__("os").getpid()))
    with pytest.raises(ResourceError, match="already writing"):
        manager.start("version", {}, tmp_path)


def test_run_writes_yaml_log_and_releases_lock(tmp_path):
    manager = RunManager()
    run = manager.start("version", {"a": 1}, tmp_path, config_name="x.yaml")
    run.process.wait(timeout=60)
    assert yaml.safe_load((tmp_path / "x.yaml").read_text()) == {"a": 1}
    import time

    for _ in range(50):
        if not (tmp_path / LOCK_NAME).exists():
            break
        time.sleep(0.1)
    assert not (tmp_path / LOCK_NAME).exists()
    assert run.returncode is not None


def test_abort_stops_a_running_process(tmp_path, monkeypatch):
    import subprocess

    manager = RunManager()
    monkeypatch.setattr(sys, "executable", sys.executable)
    run = manager.start("version", {}, tmp_path)
    run.process.wait(timeout=60)
    # replace with a long-running child to abort
    run.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    manager.abort(tmp_path, timeout=10)
    assert run.aborted and run.returncode is not None


def test_locales_have_the_same_keys_and_no_empty_text():
    keys = {lang: set(texts(lang)) for lang in LANGUAGES}
    assert keys["en"] == keys["zh"]
    for lang in LANGUAGES:
        assert all(value.strip() for value in texts(lang).values())
    assert texts("zh")["tab_train"] != texts("en")["tab_train"]


def test_app_builds_in_both_languages():
    pytest.importorskip("gradio")
    from tunery.webui.app import build_app

    assert build_app("en") is not None and build_app("zh") is not None


def test_dataset_preview_is_the_data_preview_training_uses(reference_dir, tiny_chatml_model, tmp_path, monkeypatch):
    """The web UI's preview shows the processors' trained tokens (bold) of `tunery data preview`, entry for entry."""
    from html import unescape

    from tunery.config import parse_config
    from tunery.data.checker import preview_dataset
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer
    from tunery.webui.datasets_view import preview

    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    config = {"model_name_or_path": str(tiny_chatml_model), "template": "auto",
              "dataset_dir": str(reference_dir / "lf" / "data"), "dataset": "identity", "cutoff_len": 40}
    html = preview(config, count=2)
    cfg = parse_config("data", config)
    tokenizer = load_tokenizer(cfg.model)
    entries = preview_dataset(cfg, tokenizer, get_template("auto", tokenizer, cfg.data), 2)
    assert len(entries) == 2 and html.count("<h4>") == 2
    # cutoff_len applies as in training: the first example is cut, and says so
    assert entries[0]["num_tokens"] == 40 and entries[0]["status"] == "truncated"
    assert "40 tokens, 7 trained, truncated" in html
    bold = [unescape(b.split("</b>")[0]) for b in html.split("<b>")[1:]]
    marked = [m.split("]]")[0] for e in entries for m in e["marked_text"].split("[[")[1:]]
    assert bold == marked and bold
