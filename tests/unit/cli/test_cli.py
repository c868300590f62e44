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


def test_data_help_shows_its_subcommands_and_own_options(capsys):
    """`tunery data -h` used to open on "tunery data {check|preview|render} ... --key value" and never
    named --num, --json or --messages (options of the data command, not settings)."""
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    head = out.split("Settings come from")[0]
    for form in ("tunery data check ", "tunery data preview ", "tunery data render "):
        assert form in head
    for option in ("--num 3", "--json", "--messages FILE", "--add_generation_prompt"):
        assert option in head
    assert "--cutoff_len (default: 2048)" in out  # the settings still follow


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


# --------------------------------------------------------------------------- help: fast, complete, each setting once
def _expected_default(f) -> str:
    """A field's default spelled the way the help writes it, computed here independently of cli/help.py."""
    import dataclasses
    import enum

    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "none"
    return repr(value) if isinstance(value, str) else str(value)


@pytest.fixture
def help_cache(tmp_path, monkeypatch):
    """A fresh Tunery cache holding the training settings' help rows (built here, in this process)."""
    from tunery.cli import help as cli_help

    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    rows = cli_help.training_rows()  # builds from the class and writes the cache file
    assert cli_help.training_cache_file().is_file()
    return tmp_path / "cache", rows


def test_help_of_every_command_reads_the_cache_without_torch(help_cache, capsys):
    """With the training rows cached, `tunery <command> --help` and the data commands' help import neither
    torch nor transformers (a fresh interpreter), and print what the real class gives."""
    import os

    cache, _ = help_cache
    commands = [name for name in COMMANDS if name not in ("env", "version")]
    code = ("import sys; from tunery.cli.main import main\n"
            f"for c in {commands!r}: main([c, '--help'])\n"
            "main(['data', 'check', '--help']); main(['data', 'preview', '-h'])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'gradio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TUNERY_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert main(["train", "--help"]) == 0  # this process: same cache
    assert capsys.readouterr().out in result.stdout


def test_train_help_lists_every_training_argument_once_with_its_default(help_cache, capsys):
    import dataclasses
    import re

    from tunery.config.training_args import TrainingArguments

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    names = re.findall(r"^  --(\w+) \(default: ", out, flags=re.M)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    fields = [f for f in dataclasses.fields(TrainingArguments) if f.init]
    assert len(fields) > 100
    for f in fields:
        expected = {"output_dir": "'saves/tunery-run'"}.get(f.name, _expected_default(f))
        if f.name == "do_train":
            expected = "False; tunery train trains when none of do_train, do_eval, do_predict is given"
        assert f"\n  --{f.name} (default: {expected})\n" in out + "\n", f.name
    assert "  --learning_rate (default: 5e-05)" in out
    assert "  --lr_scheduler_type (default: 'linear')" in out
    # the tokenizer's template is the true default, not "none"
    assert "  --template (default: 'auto' (the tokenizer's chat template; 'default' when it has none))" in out
    # use_cache belongs to the model group (KV cache while generating): listed once, default True
    assert names.count("use_cache") == 1 and "  --use_cache (default: True)" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_setting_is_listed_twice(command, help_cache):
    from tunery.cli.help import command_rows

    names = [row["name"] for _, rows in command_rows(command) for row in rows]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_use_cache_is_the_model_groups_setting():
    """One key, one owner: use_cache sets the model's KV cache for generation; training keeps it off."""
    from tunery.config import parse_config

    cfg = parse_config("train", {"use_cache": False, "report_to": "none"})
    assert cfg.model.use_cache is False and cfg.training.use_cache is False
    cfg = parse_config("train", {"use_cache": True, "report_to": "none"})
    assert cfg.model.use_cache is True and cfg.training.use_cache is False


def test_damaged_help_cache_is_rebuilt(help_cache, capsys):
    from tunery.cli import help as cli_help

    _, rows = help_cache
    cli_help.training_cache_file().write_text("{not json", encoding="utf-8")
    assert cli_help.training_rows() == rows
    assert cli_help.training_rows() == rows  # and written back
    assert cli_help.training_cache_file().read_text(encoding="utf-8").startswith("[")


def test_help_cache_is_named_after_transformers_version(help_cache, monkeypatch):
    """Another transformers version (or Tunery version, or training_args.py) means another file."""
    import importlib.metadata

    from tunery.cli import help as cli_help

    before = cli_help.training_cache_file()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1" if name == "transformers" else real(name))
    assert cli_help.training_cache_file() != before
