"""``tunery estimate``: peak memory and time of a training run, from the data when ``dataset`` is set."""

from __future__ import annotations

from tunery.cli import options


def main(tokens: list[str]) -> int:
    """``tunery estimate [config.yaml] [--key value ...]``: without ``dataset`` every row counts as cutoff_len."""
    cfg = options.load("estimate", tokens)
    # the estimate imports torch and transformers (seconds); --help must not pay for them
    from tunery.train.dry_run import build_plan
    from tunery.train.estimate import cutoff_len_report

    lines = build_plan(cfg).lines() if cfg.data.dataset else cutoff_len_report(cfg)
    print("\n".join(lines))
    return 0
