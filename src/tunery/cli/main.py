"""The ``tunery`` command: dispatch to one handler per subcommand, print user errors plainly.

Every handler lives in ``tunery/cli/<command>.py`` and takes the argument list, returning an exit
code. Those modules are light to import; each imports its heavy workflow (torch, transformers)
inside the handler, so ``tunery --help``, ``tunery env`` and ``tunery <command> --help`` answer at once.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tunery import __version__
from tunery.cli import api, chat, data, demo, env, estimate, expand, export, launch, predict, train, webui
from tunery.cli import eval as eval_cmd
from tunery.cli.help import format_command_help
from tunery.errors import TuneryError
from tunery.logging import quiet_library_warnings

ISSUES_URL = "https://github.com/tunery/tunery/issues"
# Exit code of a command whose output reader went away (`tunery ... | head`): 128 + SIGPIPE, as a shell reports it.
EXIT_BROKEN_PIPE = 141


def print_version(_args: list[str]) -> int:
    print(f"tunery {__version__}")
    return 0


@dataclass(frozen=True)
class Command:
    summary: str
    usage: str
    handler: Callable[[list[str]], int]  # takes the argument list, returns an exit code


COMMANDS: dict[str, Command] = {
    "train": Command(
        "Train a model: stages pt, sft, rm, dpo, kto, orpo, simpo, ppo, grpo (also --do_predict).",
        "tunery train [config.yaml] [--key value | key=value ...]",
        train.main,
    ),
    "predict": Command(
        "Batch prediction over a dataset, with BLEU/ROUGE and per-sample scores.",
        "tunery predict [config.yaml] [--key value ...]",
        predict.main,
    ),
    "chat": Command(
        "Chat with a model (and adapters) in the terminal; --query answers once and exits; --image/--video/--audio "
        "attach media (multimodal models).",
        "tunery chat [config.yaml] [--key value ...] [--query TEXT] [--system TEXT] [--image PATH] [--video PATH] "
        "[--audio PATH]",
        chat.main,
    ),
    "eval": Command(
        "Few-shot multiple-choice benchmarks (MMLU / C-Eval / CMMLU format).",
        "tunery eval [config.yaml] [--key value ...]",
        eval_cmd.main,
    ),
    "export": Command(
        "Merge adapters, shard, quantize, or write GGUF for llama.cpp / Ollama.",
        "tunery export [config.yaml] [--key value ...]",
        export.main,
    ),
    "expand": Command(
        "LLaMA Pro: add copies of decoder blocks (output unchanged) to train only them (use_llama_pro).",
        expand.USAGE,
        expand.main,
    ),
    "api": Command(
        "OpenAI-compatible API server (127.0.0.1:8000 by default; API_HOST, API_PORT, API_KEY).",
        "tunery api [config.yaml] [--key value ...]",
        api.main,
    ),
    "webui": Command(
        "Web UI: train, evaluate, chat and export in the browser (127.0.0.1:7860 by default).",
        "tunery webui [--host H] [--port P] [--auth user:pass] [--lang en|zh]",
        webui.main,
    ),
    "data": Command(
        "Check datasets, preview rendered examples, or render one conversation with a template.",
        data.USAGE,
        data.main,
    ),
    "estimate": Command(
        "Estimate peak memory and time of a training run before starting it.",
        "tunery estimate [config.yaml] [--key value ...]",
        estimate.main,
    ),
    "demo": Command(
        "Run the embedded demo: LoRA-tune SmolLM2-135M-Instruct and compare before/after.",
        "tunery demo [--output_dir DIR]",
        demo.main,
    ),
    "env": Command("Print versions and hardware for bug reports.", "tunery env", env.main),
    "version": Command("Print Tunery's version.", "tunery version", print_version),
}


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
    """Run ``tunery`` with ``argv`` (default: sys.argv[1:]); returns the exit code.

    0 success, 1 internal error (a bug), 2 user error (TuneryError: one line, no traceback; --debug
    shows it), 130 Ctrl-C, 141 when the reader of stdout went away (``| head``): quietly.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = launch.without_local_rank([a for a in argv if a != "--debug"])  # the deepspeed launcher's flag
    if not debug:
        quiet_library_warnings()
    try:
        code = _dispatch(argv, debug)
        sys.stdout.flush()  # a closed pipe shows here, not as a complaint at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _dispatch(argv: list[str], debug: bool) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-v", "--version"):
        return print_version([])
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"tunery: unknown command '{name}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    if any(a in ("-h", "--help") for a in rest):
        print(format_command_help(name, command.summary, command.usage))
        return 0
    try:
        return int(command.handler(rest) or 0)
    except BrokenPipeError:
        raise  # not an error of the command: main() ends quietly
    except TuneryError as err:
        if debug:
            raise
        if not launch.record_failure(str(err), err.exit_code):  # a relaunched worker: the relauncher prints it
            print(f"tunery: error: {_rank_prefix()}{err}", file=sys.stderr)
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


def _rank_prefix() -> str:
    """``[rank N] `` in a process of a multi-process run (started by torchrun, accelerate or deepspeed)."""
    if launch.under_launcher() and os.environ.get("WORLD_SIZE", "1") != "1":
        return f"[rank {os.environ.get('RANK', '0')}] "
    return ""


def _silence_stdout() -> None:
    """The reader of stdout is gone (``| head``): send what is still buffered to /dev/null, so Python's
    final flush does not report the broken pipe once more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture): nothing to silence
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
