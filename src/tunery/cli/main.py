"""The ``tunery`` command: dispatch to one handler per subcommand, print user errors plainly.

Each handler lives in the workflow package that owns the job and is imported lazily, so
``tunery env`` or a config error answers in a second instead of after importing every library.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from tunery import __version__
from tunery.errors import TuneryError

ISSUES_URL = "https://github.com/tunery/tunery/issues"


@dataclass(frozen=True)
class Command:
    summary: str
    usage: str
    handler: str  # "module:function", the function takes the argument list and returns an exit code


COMMANDS: dict[str, Command] = {
    "train": Command(
        "Train a model: stages pt, sft, rm, dpo, kto, orpo, simpo, ppo, grpo (also --do_predict).",
        "tunery train [config.yaml] [--key value | key=value ...]",
        "tunery.train.workflow:main",
    ),
    "predict": Command(
        "Batch prediction over a dataset, with BLEU/ROUGE and per-sample scores.",
        "tunery predict [config.yaml] [--key value ...]",
        "tunery.inference.predict:main",
    ),
    "chat": Command(
        "Chat with a model (and adapters) in the terminal; --query answers once and exits.",
        "tunery chat [config.yaml] [--key value ...] [--query TEXT] [--system TEXT]",
        "tunery.inference.chat:main",
    ),
    "eval": Command(
        "Few-shot multiple-choice benchmarks (MMLU / C-Eval / CMMLU format).",
        "tunery eval [config.yaml] [--key value ...]",
        "tunery.evaluation.workflow:main",
    ),
    "export": Command(
        "Merge adapters, shard, quantize, or write GGUF for llama.cpp / Ollama.",
        "tunery export [config.yaml] [--key value ...]",
        "tunery.export.workflow:main",
    ),
    "api": Command(
        "OpenAI-compatible API server (127.0.0.1:8000 by default; API_HOST, API_PORT, API_KEY).",
        "tunery api [config.yaml] [--key value ...]",
        "tunery.api.server:main",
    ),
    "webui": Command(
        "Web UI: train, evaluate, chat and export in the browser (127.0.0.1:7860 by default).",
        "tunery webui",
        "tunery.webui.app:main",
    ),
    "data": Command(
        "Check datasets, preview rendered examples, or render one conversation with a template.",
        "tunery data {check|preview|render} [config.yaml] [--key value ...]",
        "tunery.data.cli:main",
    ),
    "estimate": Command(
        "Estimate peak memory and time of a training run before starting it.",
        "tunery estimate [config.yaml] [--key value ...]",
        "tunery.train.estimate:main",
    ),
    "demo": Command(
        "Run the embedded demo: LoRA-tune SmolLM2-135M-Instruct and compare before/after.",
        "tunery demo [--output_dir DIR]",
        "tunery.demo:main",
    ),
    "env": Command("Print versions and hardware for bug reports.", "tunery env", "tunery.cli.env:main"),
    "version": Command("Print Tunery's version.", "tunery version", "tunery.cli.main:print_version"),
}


def print_version(_args: list[str]) -> int:
    print(f"tunery {__version__}")
    return 0


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    rows = "\n".join(f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in COMMANDS.items())
    return (
        "usage: tunery <command> [config.yaml] [--key value | key=value ...]\n\n"
        f"commands:\n{rows}\n\n"
        "Run 'tunery <command> --help' for every setting of a command. Add --debug to see tracebacks.\n"
        "Docs: docs/cli.md"
    )


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("TUNERY_DEBUG", "").lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-v", "--version"):
        return print_version([])
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"tunery: unknown command '{name}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    if any(a in ("-h", "--help") for a in rest):
        from tunery.cli.help import format_command_help

        print(format_command_help(name, command.summary, command.usage))
        return 0
    module_name, func_name = command.handler.split(":")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("tunery"):
                print(f"tunery: '{name}' is not built yet in this version of Tunery.", file=sys.stderr)
                return 2
            raise
        return int(getattr(module, func_name)(rest) or 0)
    except TuneryError as err:
        if debug:
            raise
        print(f"tunery: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("\ntunery: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not a user error: say so and how to report it
        if debug:
            raise
        print(
            f"tunery: internal error: {type(err).__name__}: {err}\n"
            f"  hint: rerun with --debug for the traceback and report it at {ISSUES_URL}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
