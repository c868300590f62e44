"""`tunery train` end to end on a tiny model and the reference demo data: sft, pt, guards, dry run."""

from __future__ import annotations

import json

import yaml

from tunery.cli.main import main as tunery_main


def _write_config(path, model, reference_dir, output_dir, **extra):
    config = {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_target": "all", "dataset": "alpaca_en_demo", "dataset_dir": str(reference_dir / "lf" / "data"),
        "template": "auto", "cutoff_len": 256, "max_samples": 16, "output_dir": str(output_dir),
        "logging_steps": 1, "save_steps": 2, "plot_loss": True, "per_device_train_batch_size": 2,
        "learning_rate": 1e-3, "max_steps": 3, "report_to": "none", "bf16": True,
    }
    config.update(extra)
    path.write_text(yaml.safe_dump(config))
    return path


def test_sft_yaml_run_writes_outputs_and_guards_finished_dir(tiny_chatml_model, reference_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = _write_config(tmp_path / "sft.yaml", tiny_chatml_model, reference_dir, out)
    assert tunery_main(["train", str(cfg), "--lora_rank", "4"]) == 0
    for name in ("adapter_model.safetensors", "trainer_log.jsonl", "training_loss.png", "train_results.json",
                 "all_results.json", "trainer_state.json", "training_args.yaml", "README.md"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in lines] == [1, 2, 3]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    saved = yaml.safe_load((out / "training_args.yaml").read_text())
    assert saved["lora_rank"] == 4 and saved["bf16"] is False  # fp32 forced on a CPU and recorded

    capsys.readouterr()
    assert tunery_main(["train", str(cfg)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert tunery_main(["train", str(cfg), "--overwrite_output_dir", "true", "--max_steps", "2"]) == 0
    lines = (out / "trainer_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["current_steps"] for line in lines] == [1, 2]  # a fresh log, not appended


def test_interrupted_run_resumes_from_newest_checkpoint(tiny_chatml_model, reference_dir, tmp_path, caplog):
    out = tmp_path / "out"
    cfg = _write_config(tmp_path / "sft.yaml", tiny_chatml_model, reference_dir, out, max_steps=4)
    assert tunery_main(["train", str(cfg), "--max_steps", "4"]) == 0
    (out / "train_results.json").unlink()  # as if stopped after its checkpoints
    import shutil

    shutil.rmtree(out / "checkpoint-4")
    assert tunery_main(["train", str(cfg)]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [json.loads(line)["current_steps"] for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # steps 3-4 logged once, after resuming from checkpoint-2


def test_pt_stage_on_plain_text(tiny_chatml_model, reference_dir, tmp_path):
    out = tmp_path / "pt"
    cfg = _write_config(tmp_path / "pt.yaml", tiny_chatml_model, reference_dir, out, stage="pt", dataset="c4_demo",
                        cutoff_len=64, max_steps=2, finetuning_type="full")
    assert tunery_main(["train", str(cfg)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "train_results.json").is_file()


def test_dry_run_and_config_errors(tiny_chatml_model, reference_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = _write_config(tmp_path / "sft.yaml", tiny_chatml_model, reference_dir, out)
    assert tunery_main(["train", str(cfg), "--dry_run", "true"]) == 0
    text = capsys.readouterr().out
    assert "optimizer steps: 3" in text and "estimated peak memory" in text and not out.exists()
    assert tunery_main(["train", str(cfg), "--lora_rnak", "4"]) == 2
    assert "lora_rank" in capsys.readouterr().err


def test_unusable_output_dir_fails_before_loading(reference_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # a model that does not exist: reaching the loader would give another error than the output_dir one
    for out in (blocker, blocker / "under", "/proc/tunery-out"):
        cfg = _write_config(tmp_path / "sft.yaml", tmp_path / "no-such-model", reference_dir, out)
        assert tunery_main(["train", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert f"output_dir {out} cannot be used as an output folder" in err, err
        assert "internal error" not in err and "no-such-model" not in err


def test_streaming_non_utf8_dataset_is_one_line_before_the_model_loads(tiny_chatml_model, reference_dir, tmp_path,
                                                                       capsys):
    data = tmp_path / "data"
    data.mkdir()
    body = b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n'
    (data / "latin.jsonl").write_bytes(body)
    (data / "dataset_info.json").write_text(json.dumps({"latin": {"file_name": "latin.jsonl"}}))
    out = tmp_path / "out"
    # a worker process reads the stream: the error used to come back as torch's "Caught DataError" traceback
    cfg = _write_config(tmp_path / "sft.yaml", tiny_chatml_model, reference_dir, out, dataset="latin",
                        dataset_dir=str(data), streaming=True, dataloader_num_workers=1)
    assert tunery_main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    offset = body.index(b"\xe9")
    assert f"not UTF-8: byte 0xe9 at byte offset {offset} (line 2) cannot be decoded (file {data / 'latin.jsonl'})" \
        in err, err
    assert "iconv" in err and "Traceback" not in err and "Caught" not in err
    assert not (out / "adapter_model.safetensors").exists()


def test_second_run_into_a_busy_output_dir_exits_2(tiny_chatml_model, reference_dir, tmp_path, capsys):
    import subprocess
    import sys

    from tunery.train.output_lock import LOCK_FILE, acquire_output_lock

    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        acquire_output_lock(out, pid=other.pid)  # a run in progress
        cfg = _write_config(tmp_path / "sft.yaml", tiny_chatml_model, reference_dir, out)
        assert tunery_main(["train", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another Tunery run (pid {other.pid}" in err
        assert not (out / "trainer_log.jsonl").exists()
    finally:
        other.kill()
        other.wait()
    assert tunery_main(["train", str(cfg), "--max_steps", "1"]) == 0  # the lock of the ended run is stale
    assert (out / "train_results.json").is_file() and not (out / LOCK_FILE).exists()
