"""``tunery estimate``: peak memory and time of a training run, from the data when ``dataset`` is set."""

from __future__ import annotations

from tunery.cli import options


def main(tokens: list[str]) -> int:
    """``tunery estimate [config.yaml] [--key value ...]``: without ``dataset`` every row counts as cutoff_len.

    The same plan as ``tunery train --dry_run true`` (one function: ``build_plan``), so both print
    the same figures for the same config.
    """
    cfg = options.load("estimate", tokens)
    # the estimate imports torch and transformers (seconds); --help must not pay for them
    from tunery.train.dry_run import build_plan

    print("\n".join(build_plan(cfg).lines()))
    return 0
