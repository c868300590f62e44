"""``tunery demo``: the embedded LoRA demo (``tunery.demo``), with progress lines and a before/after table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunery.config.parser import parse_overrides
from tunery.errors import ConfigError

ROWS = [
    ("identity: names Tuna and the Tunery project", "identity_match"),
    ("identity: names Tuna", "identity_names_tuna"),
    ("units: exact answer", "units_exact"),
    ("units: right value and unit", "units_value"),
]


def format_table(before: dict[str, float], after: dict[str, float]) -> str:
    """Rates before and after training, one row per check of ``ROWS``."""
    width = max(len(label) for label, _ in ROWS)
    lines = [f"{'held-out prompts'.ljust(width)}   before    after", "-" * (width + 19)]
    for label, key in ROWS:
        lines.append(f"{label.ljust(width)}   {before[key]:6.0%}   {after[key]:6.0%}")
    lines.append(f"({before['identity_prompts']} identity and {before['units_prompts']} unit prompts, en + zh, "
                 "greedy decoding; none are in the training data)")
    return "\n".join(lines)


def build_config(tokens: list[str]) -> Any:
    """The demo's RunConfig with ``--key value`` overrides; a config file or other word is a ConfigError."""
    # the demo imports torch, transformers and the training stack (seconds); --help must not pay for them
    from tunery.demo import demo_config

    overrides, positional = parse_overrides(tokens)
    if positional:
        raise ConfigError(f"tunery demo takes only --key value flags, not {positional[0]!r}",
                          hint="e.g. tunery demo --output_dir saves/demo --num_train_epochs 1")
    # the demo workflow imports torch and transformers (seconds); `tunery --help` must not pay for them

    return demo_config(overrides)


def report(results: dict[str, Any], output_dir: Path) -> None:
    """The table, the time taken, and a few replies before and after."""
    from tunery.demo import RESULTS_FILE, TABLE_FILE
    seconds = results["seconds"]
    print()
    print(format_table(results["before"], results["after"]))
    print(f"\ntime: {seconds['total'] / 60:.1f} min in all, training {seconds['train'] / 60:.1f} min. "
          f"Replies and figures: {output_dir / RESULTS_FILE}; markdown table: {output_dir / TABLE_FILE}; "
          f"loss curve: {output_dir / 'training_loss.png'}")
    replies = results["replies"]
    for item in replies[:: max(1, len(replies) // 4)][:4]:
        print(f"  Q: {item['prompt']}\n     before: {item['before'][:90]}\n     after:  {item['after'][:90]}")


def main(tokens: list[str]) -> int:
    """``tunery demo [--key value ...]``: score, train, score again, report."""
    from tunery.demo import run_demo

    cfg = build_config(tokens)
    results = run_demo(cfg, notify=lambda line: print(f"tunery demo: {line}", flush=True))
    report(results, Path(cfg.training.output_dir))
    return 0
