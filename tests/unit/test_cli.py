"""The command line: dispatch, help, env, and the user-error path (exit 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunery.cli.main import COMMANDS, main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tunery", *args], capture_output=True, text=True, env=env, timeout=120)


def test_every_subcommand_of_the_brief_exists():
    for name in ("train", "chat", "eval", "export", "api", "webui", "data", "estimate", "env", "version"):
        assert name in COMMANDS


def test_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("tunery ")


def test_env_lists_versions_and_hardware(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("python", "os", "cpu", "gpu", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        assert f"- {key}" in out


def test_help_lists_groups_defaults_and_help(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for group in ("model:", "data:", "finetuning:", "generation:", "training"):
        assert group in out
    assert "--lora_rank (default: 8)" in out
    assert "--cutoff_len (default: 2048)" in out
    assert "--learning_rate (default:" in out  # transformers' own arguments are listed too
    assert "LoRA rank" in out


def test_unknown_command_suggests(capsys):
    assert main(["trian"]) == 2
    assert "Did you mean 'train'" in capsys.readouterr().err


def test_user_error_is_one_message_and_exit_2():
    result = run_cli("chat", "--lora_rnak", "3")
    assert result.returncode == 2
    assert "unknown setting 'lora_rnak'" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = run_cli("chat", "--temprature", "3", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help(flag, capsys):
    assert main([flag]) == 0
    assert "commands:" in capsys.readouterr().out
