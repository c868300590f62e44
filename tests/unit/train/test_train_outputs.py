"""What a run writes: log fields, plots, results files, config, card; overwrite protection."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.unit.train_utils import run_tiny_training, tokenized_dataset, train_config
from tunery.errors import ResourceError
from tunery.runlog import read as read_log

LOG_FIELDS = {"current_steps", "total_steps", "loss", "eval_loss", "lr", "epoch", "percentage", "elapsed_time",
              "remaining_time", "throughput", "total_tokens"}


@pytest.fixture(scope="module")
def finished_run(tiny_chatml_model, tmp_path_factory):
    from tunery.model.loader import load_tokenizer

    out = tmp_path_factory.mktemp("run") / "out"
    cfg = train_config(tiny_chatml_model, out, max_steps=6, plot_loss=True, eval_strategy="steps", eval_steps=3,
                       do_eval=True, per_device_eval_batch_size=4, report_to="tensorboard", lora_rank=4)
    tokenizer = load_tokenizer(cfg.model)
    run_tiny_training(cfg, eval_dataset=tokenized_dataset(tokenizer, repeat=1))
    return out, cfg


def test_trainer_log_has_the_documented_fields(finished_run):
    out, _ = finished_run
    records = read_log(str(out))
    train = [r for r in records if r["loss"] is not None]
    evals = [r for r in records if r["eval_loss"] is not None]
    assert [r["current_steps"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["current_steps"] for r in evals] == [3, 6, 6]  # during training, and the final evaluation
    for record in records:
        assert LOG_FIELDS <= set(record)
        assert record["total_steps"] == 6
    assert train[-1]["percentage"] == 100.0 and train[2]["percentage"] == 50.0
    tokens = [r["total_tokens"] for r in train]
    assert tokens == sorted(tokens) and tokens[0] > 0
    # non-padding tokens: the six steps saw 6 x 4 rows of the dataset in order of the sampler
    assert all(r["throughput"] > 0 for r in train)
    assert train[0]["lr"] == pytest.approx(1e-2)
    assert ":" in train[0]["elapsed_time"] and ":" in train[0]["remaining_time"]


def test_results_files_config_card_and_plots(finished_run):
    out, _ = finished_run
    for name in ("train_results.json", "all_results.json", "trainer_state.json", "training_args.yaml", "README.md",
                 "adapter_model.safetensors", "tokenizer.json", "training_loss.png", "training_eval_loss.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "train_results.json").read_text())
    assert {"train_loss", "train_runtime", "epoch"} <= set(results)
    all_results = json.loads((out / "all_results.json").read_text())
    assert "eval_loss" in all_results and "train_loss" in all_results and "eval_perplexity" in all_results
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    saved = yaml.safe_load((out / "training_args.yaml").read_text())
    assert saved["lora_rank"] == 4 and saved["max_steps"] == 6 and saved["plot_loss"] is True
    assert "tunery" in (out / "README.md").read_text()
    assert (out / "training_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_tensorboard_events_written_offline(finished_run):
    out, _ = finished_run
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_finished_run_is_protected_unless_overwrite(finished_run, tiny_chatml_model, tmp_path):
    from tunery.train.outputs import prepare_output_dir

    out, _ = finished_run
    with pytest.raises(ResourceError, match="already holds a finished run"):
        prepare_output_dir(train_config(tiny_chatml_model, out, max_steps=6).training)  # no more steps asked
    # overwrite in a copy, so the module fixture stays intact
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "notes.txt").write_text("mine")
    cfg = train_config(tiny_chatml_model, copy, overwrite_output_dir=True)
    assert prepare_output_dir(cfg.training) is None
    left = {p.name for p in copy.iterdir()}
    # every output of the old run goes before the new one writes: no old model beside new checkpoints
    assert not {"train_results.json", "trainer_log.jsonl", "checkpoint-6", "adapter_model.safetensors",
                "adapter_config.json", "tokenizer.json", "README.md", "training_loss.png", "runs"} & left
    assert left == {"notes.txt"}  # a file Tunery did not write is kept



def test_a_typo_fails_before_overwrite_removes_the_previous_run(finished_run, tiny_chatml_model, tmp_path):
    """overwrite_output_dir: a wrong dataset or template name is an error that leaves the old run as it was."""
    import shutil

    from tunery.errors import ConfigError, DataError
    from tunery.train.workflow import run_stage

    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = sorted(p.name for p in copy.iterdir())
    for bad in ({"dataset": "no_such_dataset"}, {"template": "qwen3_nothnk"}):
        cfg = train_config(tiny_chatml_model, copy, overwrite_output_dir=True, **bad)
        with pytest.raises((ConfigError, DataError)):
            run_stage(cfg)
        assert sorted(p.name for p in copy.iterdir()) == before
        assert (copy / "adapter_model.safetensors").is_file()


def test_overwrite_of_a_fresh_folder_claims_no_removal(tiny_chatml_model, tmp_path, caplog):
    from tunery.train.outputs import clear_previous_run, prepare_output_dir

    fresh = tmp_path / "fresh"
    fresh.mkdir()  # run_stage creates output_dir (ensure_writable_dir) before the overwrite rule runs
    with caplog.at_level("INFO"):
        assert prepare_output_dir(train_config(tiny_chatml_model, fresh, overwrite_output_dir=True).training) is None
    assert "removed the previous run" not in caplog.text
    (fresh / "trainer_log.jsonl").write_text("{}\n")
    (fresh / "checkpoint-2").mkdir()
    (fresh / "notes.txt").write_text("mine")
    assert clear_previous_run(fresh) == 2
    assert [p.name for p in fresh.iterdir()] == ["notes.txt"]

def test_smoothing_and_generic_plot(tmp_path):
    from tunery.train.plotting import plot_key, smooth

    assert smooth([]) == []
    values = [4.0, 2.0, 4.0, 2.0] * 10
    smoothed = smooth(values)
    assert len(smoothed) == len(values) and max(smoothed[5:]) - min(smoothed[5:]) < 2.0
    records = [{"current_steps": i, "rewards/chosen": 0.1 * i} for i in range(1, 5)]
    path = plot_key(records, "rewards/chosen", str(tmp_path))
    assert path and path.endswith("training_rewards_chosen.png")
    assert plot_key(records, "missing", str(tmp_path)) is None


def test_plot_run_without_logged_loss_says_so(tmp_path, caplog):
    from tunery.train.plotting import plot_run

    with caplog.at_level("WARNING"):
        assert plot_run(str(tmp_path)) == []
    assert "nothing to plot" in caplog.text
