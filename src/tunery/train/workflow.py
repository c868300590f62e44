"""``tunery train``: parse the config, pick the stage, run it (or print the plan, or predict).

Stages are modules ``tunery.train.<stage>`` with ``run(cfg, tokenizer, template, callbacks=None)``,
imported only when used, so a stage that is not built yet is a plain message, not a crash.
"""

from __future__ import annotations

import importlib
from typing import Any

from tunery.errors import ConfigError
from tunery.logging import get_logger

logger = get_logger(__name__)

# stage -> modules that may serve it, first found wins (orpo/simpo are DPO losses in LLaMA-Factory).
STAGES: dict[str, tuple[str, ...]] = {
    "pt": ("tunery.train.pt",),
    "sft": ("tunery.train.sft",),
    "rm": ("tunery.train.rm",),
    "dpo": ("tunery.train.dpo",),
    "kto": ("tunery.train.kto",),
    "orpo": ("tunery.train.orpo", "tunery.train.dpo"),
    "simpo": ("tunery.train.simpo", "tunery.train.dpo"),
    "ppo": ("tunery.train.ppo",),
    "grpo": ("tunery.train.grpo",),
}


def stage_module(stage: str) -> Any:
    """The module that runs ``stage``; ConfigError (exit 2) when it is unknown or not built yet."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage '{stage}'", hint=f"choose one of: {', '.join(STAGES)}")
    for name in STAGES[stage]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    raise ConfigError(f"stage {stage} is not built yet in this version of Tunery",
                      hint="use stage: sft or pt, or update Tunery")


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
    if not (args.do_train or args.do_eval or args.do_predict):  # parse_config refuses or resolves this
        args.do_train = True  # kept for hand-built configs: `tunery train cfg.yaml` trains by default
    if cfg.finetuning.dry_run:
        from tunery.train.dry_run import print_plan

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
    """Output-dir rules, tokenizer and template, then the stage's own ``run``."""
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer
    from tunery.train.outputs import prepare_output_dir

    module = stage_module(cfg.finetuning.stage)
    prepare_output_dir(cfg.training)
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    return module.run(cfg, tokenizer, template, callbacks=callbacks)


def run_prediction(cfg: Any) -> Any:
    """``--do_predict``: batch generation over the eval data, with the model just trained if any."""
    try:
        from tunery.inference.predict import run_predict
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("tunery"):
            raise ConfigError("batch prediction is not built yet in this version of Tunery") from exc
        raise
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
