"""``tunery predict``: batch prediction over a dataset; prints the corpus scores."""

from __future__ import annotations

from tunery.cli import options


def print_results(results: dict[str, float]) -> None:
    """One ``key = value`` line per result (predict_bleu-4, predict_runtime...)."""
    for key, value in results.items():
        print(f"{key} = {value}")


def main(tokens: list[str]) -> int:
    """``tunery predict [config.yaml] [--key value ...]``."""
    cfg = options.load("predict", tokens, hint="settings are --key value")
    # prediction imports torch and transformers (seconds); --help must not pay for them
    from tunery.inference.predict import run_predict

    print_results(run_predict(cfg))
    return 0
