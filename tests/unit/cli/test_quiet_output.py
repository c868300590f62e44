"""What a user sees on the terminal: no library deprecation noise, readable training lines, fast offline errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

WARNING_COMMAND = textwrap.dedent("""
    import sys, warnings
    from tunery.cli import main as cli

    def noisy(_args):
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                               "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("old peft thing", DeprecationWarning, "peft_model.py", 1, module="peft.peft_model")
        warnings.warn_explicit("`tokenizer` will be removed in version 2", FutureWarning, "loader.py", 1,
                               module="tunery.model.loader")  # a library call attributed to its caller
        warnings.warn_explicit("your dataset has 3 rows only", UserWarning, "check.py", 1, module="tunery.data")
        return 0

    cli.COMMANDS["version"] = cli.Command("noisy", "noisy", noisy)
    sys.exit(cli.main(sys.argv[1:]))
""")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-c", WARNING_COMMAND, *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_library_deprecation_warnings_do_not_reach_the_terminal():
    result = _run("version")
    assert result.returncode == 0, result.stderr
    assert "is_gradient_checkpointing" not in result.stderr
    assert "old peft thing" not in result.stderr and "will be removed in version 2" not in result.stderr
    assert "your dataset has 3 rows only" in result.stderr  # a warning about the user's own input still shows


def test_warnings_come_back_on_request():
    shown = _run("version", TUNERY_SHOW_WARNINGS="1")
    assert "is_gradient_checkpointing" in shown.stderr and "old peft thing" not in shown.stderr  # Python's default
    debug = _run("version", "--debug")
    assert "is_gradient_checkpointing" in debug.stderr


def test_training_log_line_is_readable():
    from tunery.train.callbacks import log_line

    line = log_line({"loss": 1.23449, "grad_norm": 0.5, "learning_rate": 9e-05, "epoch": 0.25}, 10, 40, 3.2, 100)
    assert line == "step 10/40  epoch 0.25  loss 1.2345  lr 9.0e-05  3.20 s/step  eta 0:01:40"
    assert "{" not in line and "'" not in line
    dpo = log_line({"loss": 0.69, "rewards/chosen": 0.0123, "learning_rate": 1e-5, "epoch": 1.0}, 3, 6)
    assert dpo == "step 3/6  epoch 1.00  loss 0.6900  lr 1.0e-05  rewards/chosen 0.0123"
    assert log_line({"eval_loss": 1.1, "eval_runtime": 2.0, "epoch": 1.0}, 10, 40) == "eval step 10/40  eval_loss 1.1"
    done = log_line({"train_loss": 1.3, "train_runtime": 130.4, "train_samples_per_second": 2.0}, 40, 40)
    assert done == "done  40 steps in 0:02:10  train_loss 1.3"


def test_resumed_session_summary_names_the_steps_its_train_loss_covers(capsys):
    """After a resume the Trainer's train_loss averages this session's steps only (train_results.json has
    the whole run's): the closing line says which steps, instead of "done  4 steps" with a different loss."""
    from tunery.train.callbacks import ReadablePrinterCallback, log_line

    done = log_line({"train_loss": 2.703, "train_runtime": 9.7}, 4, 4, first_step=2)
    assert done == "done  steps 3-4 (resumed after step 2) in 0:00:09  train_loss 2.703 over these steps"
    printer = ReadablePrinterCallback()
    printer.on_train_begin(None, _State(30), None)
    printer.on_log(None, _State(40), None, logs={"train_loss": 1.5, "train_runtime": 20.0})
    assert capsys.readouterr().out.startswith("done  steps 31-40 (resumed after step 30) in 0:00:20  train_loss 1.5")


def test_deepspeed_cpu_notice_is_dropped_and_its_other_messages_kept():
    """DeepSpeed prints "Setting accelerator to CPU ..." on stdout in every command on a CPU machine."""
    import logging

    from tunery.logging import quiet_third_party

    quiet_third_party()
    quiet_third_party()  # idempotent: one filter
    deepspeed = logging.getLogger("DeepSpeed")

    def record(msg):
        return logging.LogRecord("DeepSpeed", logging.WARNING, "real_accelerator.py", 213, msg, None, None)

    assert sum(type(f).__name__ == "_NoCpuAcceleratorNotice" for f in deepspeed.filters) == 1
    assert not deepspeed.filter(record("Setting accelerator to CPU. If you have GPU or other accelerator, we were "
                                       "unable to detect it."))
    assert deepspeed.filter(record("ZeRO-3 is enabled"))


class _State:
    is_local_process_zero = is_world_process_zero = True
    max_steps = 40

    def __init__(self, step):
        self.global_step = step


def test_trainer_prints_lines_not_dicts(tmp_path, tiny_chatml_model, capsys):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tunery.train.callbacks import ReadablePrinterCallback, ReadableProgressCallback, use_readable_logs

    model = AutoModelForCausalLM.from_pretrained(tiny_chatml_model)
    for disable_tqdm, readable in ((False, ReadableProgressCallback), (True, ReadablePrinterCallback)):
        args = TrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=disable_tqdm)
        trainer = use_readable_logs(Trainer(model=model, args=args))
        kinds = [type(c) for c in trainer.callback_handler.callbacks]
        assert readable in kinds and ProgressCallback not in kinds and PrinterCallback not in kinds
    printer = ReadablePrinterCallback()
    printer.on_train_begin(None, _State(0), None)
    printer.on_log(None, _State(10), None, logs={"loss": 2.0, "learning_rate": 1e-4, "epoch": 0.5})
    out = capsys.readouterr().out
    assert out.startswith("step 10/40  epoch 0.50  loss 2.0000  lr 1.0e-04") and "eta " in out and "{" not in out


UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def test_hub_probe_sees_a_refused_connection():
    from tunery.hub import hub_reachable

    assert hub_reachable(UNREACHABLE, timeout=1.0) is False


def test_model_not_cached_and_no_network_asks_only_the_cache(tmp_path, monkeypatch):
    """No connection at all: snapshot_download is asked for local files only (no retries), one ModelError."""
    import huggingface_hub

    from tunery import hub
    from tunery.errors import ModelError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_endpoint", lambda: UNREACHABLE)
    calls = []
    real = huggingface_hub.snapshot_download

    def recording(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    with pytest.raises(ModelError, match="hub cannot be reached .no connection to http://127.0.0.1:9"):
        hub.resolve_model("owner/not-cached-model", cache_dir=str(tmp_path))
    assert calls == [True]
