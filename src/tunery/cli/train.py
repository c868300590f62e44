"""``tunery train``: the dry-run plan, or training and/or evaluation, then prediction when asked.

``--do_predict`` is composed here: the train workflow runs, ``point_at_trained_model`` makes the
config name what it saved, and the prediction workflow runs on that (train/ and inference/ do not
import each other).
"""

from __future__ import annotations

from typing import Any

from tunery.cli import options

DRY_RUN_NOTE = "dry run: nothing was trained (drop --dry_run to train)"


def main(tokens: list[str]) -> int:
    """``tunery train [config.yaml] [--key value | key=value ...]``."""
    return run(options.load("train", tokens))


def run(cfg: Any) -> int:
    """Everything ``tunery train`` does with a parsed RunConfig; returns the exit code (0 also after a
    clean SIGTERM/SIGINT stop, which skips prediction)."""
    # training imports torch, transformers and trl (seconds); --help must not pay for them
    from tunery.train import workflow
    from tunery.train.dry_run import build_plan

    workflow.resolve_actions(cfg)
    if cfg.finetuning.dry_run:
        print("\n".join([*build_plan(cfg).lines(), DRY_RUN_NOTE]))
        return 0
    outcome = workflow.run_train(cfg)
    if getattr(outcome, "stopped_by", None):
        return 0
    if cfg.training.do_predict:
        predict_after_training(cfg)
    return 0


def predict_after_training(cfg: Any) -> dict[str, float]:
    """``--do_predict``: batch generation over the eval data, with the model just trained if any."""
    # prediction imports torch and transformers (seconds); --help must not pay for them
    from tunery.inference.predict import run_predict
    from tunery.train.workflow import point_at_trained_model

    if cfg.training.do_train:
        point_at_trained_model(cfg)
    cfg.training.predict_with_generate = True
    return run_predict(cfg)
