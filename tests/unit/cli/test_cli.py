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


def test_handlers_live_in_the_cli_package():
    for name, command in COMMANDS.items():
        assert callable(command.handler), name
        assert command.handler.__module__.startswith("tunery.cli."), (name, command.handler.__module__)


def test_help_and_start_up_import_no_torch():
    """`tunery --help` and `tunery chat --help` answer without importing torch or transformers."""
    code = ("import sys; from tunery.cli.main import main; main(['--help']); main(['chat', '--help']); "
            "print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_train_and_inference_do_not_import_each_other():
    import ast
    from pathlib import Path

    import tunery

    src = Path(tunery.__file__).parent
    for package, other in (("train", "tunery.inference"), ("inference", "tunery.train")):
        for path in (src / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(n == other or n.startswith(other + ".") for n in names), (path, names)


def test_closed_stdout_pipe_ends_quietly():
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head -c1`) is gone before tunery writes a byte
    try:
        result = subprocess.run([sys.executable, "-m", "tunery", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_yaml_syntax_error_names_file_and_place(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n b: [\n")
    assert main(["chat", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tunery: error: config file {bad} is not valid YAML (line 2, column 3): mapping values are not allowed here"
