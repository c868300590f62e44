"""What a user sees on the terminal: no library deprecation noise, readable training lines, fast offline errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
