"""``tunery eval``: few-shot multiple-choice benchmarks (and lm-eval tasks); prints the score tables."""

from __future__ import annotations

from typing import Any

from tunery.cli import options


def print_tables(results: dict[str, Any]) -> None:
    """The accuracy table of our task (when it ran) and lm-eval's table (when harness tasks ran)."""
    from tunery.evaluation.results import format_table  # light module, but it lives beside the heavy ones

    if "average" in results:
        print(format_table(results))
    harness = results.get("harness")
    if harness and harness.get("table"):
        print(harness["table"])


def main(tokens: list[str]) -> int:
    """``tunery eval [config.yaml] [--key value ...]``."""
    cfg = options.load("eval", tokens, hint="give one config file, then --key value pairs")
    # the evaluation imports torch and transformers (seconds); --help must not pay for them
    from tunery.evaluation.workflow import run_eval

    print_tables(run_eval(cfg))
    return 0
