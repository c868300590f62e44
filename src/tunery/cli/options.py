"""What every command's argument handling shares: the config (file + overrides), no stray words, own flags.

A command's own options (``chat --query``, ``data --json``) are not settings: :func:`pop_flags`
takes them out of the tokens before the config parser, which rejects unknown keys, sees the rest.
"""

from __future__ import annotations

from typing import Any

from tunery.config import RunConfig, load_config
from tunery.errors import ConfigError

DEFAULT_HINT = "give at most one config file; settings go as --key value or key=value"


def refuse_positionals(rest: list[str], hint: str = DEFAULT_HINT) -> None:
    """ConfigError (exit 2) naming the words left over after the config file and the settings."""
    if rest:
        raise ConfigError(f"unexpected argument(s): {' '.join(rest)}", hint=hint)


def load(command: str, tokens: list[str], hint: str = DEFAULT_HINT) -> RunConfig:
    """``command``'s RunConfig from ``[config.yaml] [--key value | key=value ...]``; stray words are an error."""
    cfg, rest = load_config(command, tokens)
    refuse_positionals(rest, hint)
    return cfg


def pop_flags(tokens: list[str], flags: dict[str, bool]) -> tuple[dict[str, Any], list[str]]:
    """Take the command's own ``flags`` (name -> takes a value) out of ``tokens``.

    ``--name VALUE`` and ``--name=VALUE`` give a string; a flag without a value gives True.
    A dash in the name counts as an underscore (``--add-generation-prompt``). Returns
    (found flags, remaining tokens in order); a missing value is a ConfigError.
    """
    found: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else ""
        if name in flags:
            if "=" in token:
                found[name] = token.split("=", 1)[1]
            elif flags[name]:
                if i + 1 >= len(tokens):
                    raise ConfigError(f"--{name} needs a value", hint=f'write --{name} "..."')
                found[name] = tokens[i + 1]
                i += 1
            else:
                found[name] = True
        else:
            rest.append(token)
        i += 1
    return found, rest
