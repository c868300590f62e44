"""``tunery train``: parse the config, pick the stage, run it (or print the plan, or predict).

Stages are registered by name in :mod:`tunery.train.stages`; each runs as data -> trainer -> fit.
"""

from __future__ import annotations

from typing import Any

from tunery.data.template import get_template
from tunery.errors import ConfigError
from tunery.inference.predict import run_predict
from tunery.logging import get_logger
from tunery.model.loader import load_tokenizer
from tunery.train.dry_run import print_plan
from tunery.train.outputs import prepare_output_dir
from tunery.train.stages import get_stage, run_stage_steps

logger = get_logger(__name__)


def main(tokens: list[str]) -> int:
    """Handler of ``tunery train [config.yaml] [--key value ...]``."""
    from tunery.config import load_config

    cfg, rest = load_config("train", tokens)
    if rest:
        raise ConfigError(f"unexpected argument(s): {' '.join(rest)}",
                          hint="give at most one config file; settings go as --key value or key=value")
    return run_train(cfg)


def run_train(cfg: Any) -> int:
    """Run ``cfg`` (a RunConfig for 'train'); returns the exit code (0, also after a clean signal stop)."""
    args = cfg.training
    if not (args.do_train or args.do_eval or args.do_predict):
        if "do_train" in cfg.raw:  # the user switched training off and asked for nothing else
            raise ConfigError(
                "nothing to do: do_train is false and neither do_eval nor do_predict is set",
                hint="set do_train: true to train, or do_eval / do_predict to evaluate or predict",
            )
        args.do_train = True  # `tunery train cfg.yaml` trains even when the YAML omits do_train
    if cfg.finetuning.dry_run:
        print_plan(cfg)
        return 0
    if args.do_train or args.do_eval:
        outcome = run_stage(cfg)
        if getattr(outcome, "stopped_by", None):
            return 0
    if args.do_predict:
        run_prediction(cfg)
    return 0


def run_stage(cfg: Any, callbacks: list | None = None) -> Any:
    """Output-dir rules, tokenizer and template, then the stage's data -> trainer -> fit."""
    stage = get_stage(cfg.finetuning.stage)
    prepare_output_dir(cfg.training)
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    return run_stage_steps(stage, cfg, tokenizer, template, callbacks)


def run_prediction(cfg: Any) -> Any:
    """``--do_predict``: batch generation over the eval data, with the model just trained if any."""
    if cfg.training.do_train:
        point_at_trained_model(cfg)
    cfg.training.predict_with_generate = True
    return run_predict(cfg)


def point_at_trained_model(cfg: Any) -> None:
    """After training in the same command, predict with what was just saved in output_dir."""
    out = cfg.training.output_dir
    if cfg.finetuning.finetuning_type == "lora":
        adapters = [*cfg.model.adapters] if cfg.finetuning.create_new_adapter else cfg.model.adapters[:-1]
        cfg.model.adapter_name_or_path = ",".join([*adapters, out])
    else:
        cfg.model.model_name_or_path = out
        cfg.model.adapter_name_or_path = None
