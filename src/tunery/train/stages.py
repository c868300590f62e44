"""The training stages, registered by name in one place: ``--stage`` -> :class:`Stage`.

Every stage is the same three steps, so one function runs them all (:func:`run_stage_steps`):
``load_data`` (the tokenized datasets for the stage), ``create_trainer`` (load the model(s) and
build the trainer through ``tunery.train.trainer.build_trainer``) and ``tunery.train.loop.fit``
(train, save, evaluate, results files, plots of ``plot_keys``). The names are the config's
``stage`` choices (``tunery.config.finetuning_args.Stage``); a test checks the two agree.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from tunery.data import DatasetModule, copy_skipped, skipped_lines
from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.train.distributed import is_main_process, main_process_first
from tunery.train.dpo import PreferenceStage
from tunery.train.grpo import GRPOStage
from tunery.train.kto import KTOStage
from tunery.train.loop import TrainOutcome, fit
from tunery.train.ppo import PPOStage
from tunery.train.rm import RewardStage
from tunery.train.sft import CausalLMStage

logger = get_logger(__name__)


@runtime_checkable
class Stage(Protocol):
    """One training stage: its data, its trainer, and the log keys its plots draw."""

    name: str
    plot_keys: tuple[str, ...]

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        """Tokenized train/eval datasets in this stage's columns (``tunery.data.get_dataset``)."""
        ...

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> Any:
        """Load the model(s) this stage needs and return a ready transformers/trl trainer."""
        ...


STAGES: dict[str, Stage] = {
    "pt": CausalLMStage("pt"),
    "sft": CausalLMStage("sft"),
    "rm": RewardStage(),
    "dpo": PreferenceStage("dpo"),
    "kto": KTOStage(),
    "orpo": PreferenceStage("orpo"),  # LLaMA-Factory's dpo with pref_loss orpo
    "simpo": PreferenceStage("simpo"),  # LLaMA-Factory's dpo with pref_loss simpo
    "ppo": PPOStage(),
    "grpo": GRPOStage(),
}


def get_stage(name: str) -> Stage:
    """The stage registered as ``name``; ConfigError (exit 2) when there is none."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}'", hint=f"choose one of: {', '.join(STAGES)}")
    return STAGES[name]


def run_stage_steps(stage: Stage, cfg: Any, tokenizer: Any, template: Any,
                    callbacks: list | None = None) -> TrainOutcome:
    """Data, trainer, fit: what every stage does once the output dir, tokenizer and template are set.

    In a multi-process run the main process tokenizes first and writes the dataset cache; the
    others then read it (see tunery.data.cache)."""
    with main_process_first(cfg.training, desc="dataset tokenization"):
        data = stage.load_data(cfg, tokenizer, template)
    stats = getattr(data, "stats", None)  # a stage's data is a DatasetModule (tests pass stand-ins)
    if stats is not None and stats.skipped_invalid and is_main_process():
        copied = copy_skipped(stats, cfg.training.output_dir)  # every skipped row, beside the run
        logger.warning("\n".join(skipped_lines(stats, copied)))
    trainer = stage.create_trainer(cfg, tokenizer, template, data, callbacks)
    return fit(trainer, cfg, plot_keys=stage.plot_keys)
