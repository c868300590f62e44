"""Load a user's function named ``path/to/file.py:function`` or ``package.module:function``.

Custom metrics (``compute_metrics``) and reward functions (``reward_funcs``) are plugged in this
way, so users extend Tunery without editing it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunery.errors import ConfigError


def load_callable(spec: str, setting: str) -> tuple[str, Callable[..., Any]]:
    """``spec`` -> (function name, function); every failure is a ConfigError naming ``setting``."""
    target, sep, func_name = spec.strip().rpartition(":")
    if not sep or not target or not func_name:
        raise ConfigError(
            f"{setting} '{spec}' does not name a function",
            hint="write it as path/to/file.py:function or package.module:function",
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"{setting} file {path} does not exist", hint="check the path (relative to where you run tunery)")
        module_name = f"tunery_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"{setting} file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"{setting} module '{target}' cannot be imported: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"{setting}: '{func_name}' is not a function in {target}")
    return func_name, func
