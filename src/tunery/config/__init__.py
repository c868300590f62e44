"""Typed settings for every command, read from YAML + overrides (see parser.py).

``parse_config("train", raw)`` returns a :class:`RunConfig` whose groups hold the same argument
names LLaMA-Factory uses, so its YAML files parse unchanged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from tunery.config.data_args import DataArguments
from tunery.config.eval_args import EvaluationArguments
from tunery.config.export_args import ExportArguments
from tunery.config.finetuning_args import FinetuningArguments
from tunery.config.generating_args import GeneratingArguments
from tunery.config.groups import settings_of
from tunery.config.model_args import ModelArguments
from tunery.config.parser import build_dataclasses, dump_config, load_raw_config
from tunery.config.validation import deepspeed_config, unsloth_loads, validate
from tunery.errors import DependencyError, require
from tunery.logging import get_logger

logger = get_logger(__name__)

# Group name -> dataclass, in the order --help shows them.
GROUPS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "generation": GeneratingArguments,
    "evaluation": EvaluationArguments,
    "export": ExportArguments,
}

# Where a training run writes when no output_dir is given (relative to the working folder).
DEFAULT_OUTPUT_DIR = "saves/tunery-run"

COMMAND_GROUPS: dict[str, list[str]] = {
    "train": ["model", "data", "finetuning", "generation", "training"],
    "predict": ["model", "data", "finetuning", "generation", "training"],
    "chat": ["model", "data", "finetuning", "generation"],
    "api": ["model", "data", "finetuning", "generation"],
    "webui": [],
    "eval": ["model", "data", "finetuning", "evaluation", "generation"],
    "export": ["model", "data", "finetuning", "export"],
    "data": ["model", "data", "finetuning"],
    "estimate": ["model", "data", "finetuning", "generation", "training"],
}


# Boolean settings whose feature lives in an optional package: (setting, module, pyproject extra).
# Checked at parse time so a missing package is one line before anything loads.
OPTIONAL_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("use_galore", "galore_torch", "galore"),
    ("use_apollo", "apollo_torch", "apollo"),
    ("use_swanlab", "swanlab", "swanlab"),
    ("use_adam_mini", "adam_mini", "adam-mini"),
    ("use_badam", "badam", "badam"),
)

# fp8_backend -> (module, pip package, tunery extra) of the FP8 library accelerate drives; "auto" takes the
# first one installed, in this order (accelerate's own order). MS-AMP is not on PyPI (no extra).
FP8_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "torchao": ("torchao", "torchao", "fp8"),
    "te": ("transformer_engine", "transformer-engine", "fp8-te"),
    "msamp": ("msamp", "msamp", None),
}


def group_class(name: str) -> type:
    if name == "training":
        from tunery.config.training_args import TrainingArguments  # heavy import: transformers

        return TrainingArguments
    return GROUPS[name]


@dataclass
class RunConfig:
    """All settings of one command. Groups a command does not use stay at their defaults."""

    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    finetuning: FinetuningArguments = field(default_factory=FinetuningArguments)
    generation: GeneratingArguments = field(default_factory=GeneratingArguments)
    evaluation: EvaluationArguments = field(default_factory=EvaluationArguments)
    export: ExportArguments = field(default_factory=ExportArguments)
    training: Any = None  # TrainingArguments, only for commands that train or predict
    raw: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> dict[str, Any]:
        """Every Tunery setting with its final value, plus the training settings the user gave.

        Written as training_args.yaml; feeding it back reproduces the run.
        """
        out: dict[str, Any] = {}
        for name in ("model", "data", "finetuning", "generation", "evaluation", "export"):
            defaults = group_class(name)()
            for _, f, _ in settings_of(type(getattr(self, name))):
                value = getattr(getattr(self, name), f.name)
                if f.name in self.raw or value != getattr(defaults, f.name):
                    out[f.name] = value
        if self.training is not None:
            for key in self.raw:
                if hasattr(self.training, key) and key not in out:
                    out[key] = getattr(self.training, key)
        return out

    def save(self, path: str) -> None:
        dump_config(path, self.resolved())


def _resolve_precision(raw: dict[str, Any]) -> None:
    """bf16/fp16 need hardware that runs them fast; on a CPU, train in fp32 and say why."""
    import torch

    if torch.cuda.is_available():
        return
    for key in ("bf16", "fp16"):
        if str(raw.get(key, False)).lower() in ("true", "1", "yes"):
            logger.warning(
                "%s requested but no GPU is present: training in fp32 instead (this CPU has no fast %s "
                "kernels, and fp32 is both faster and more accurate here).",
                key,
                key,
            )
            raw[key] = False


def parse_config(command: str, raw: dict[str, Any], *, source: str = "config") -> RunConfig:
    """Build the RunConfig of ``command`` from ``raw`` and check it (see validation.py).

    The one place settings are checked: types while building, then every domain and every rule
    between settings, before anything loads. Raises ConfigError (exit 2) naming the settings.
    """
    raw = dict(raw)
    names = COMMAND_GROUPS[command]
    if "training" in names:
        _resolve_precision(raw)
        if raw.get("deepspeed") and command != "estimate":
            require("deepspeed", f"deepspeed: {raw['deepspeed']}", "deepspeed")
            deepspeed_config(raw["deepspeed"])  # transformers reads it while building the settings
        raw.setdefault("output_dir", DEFAULT_OUTPUT_DIR)
    classes = [group_class(n) for n in names]
    # An estimate only reads the deepspeed JSON (cfg.raw, see tunery.train.estimate): it can plan a
    # run for a machine that has deepspeed from one that has not.
    fields = {k: v for k, v in raw.items() if not (command == "estimate" and k == "deepspeed")}
    built = build_dataclasses(fields, classes, source=source)
    cfg = RunConfig(raw=raw)
    for name, obj in zip(names, built):
        setattr(cfg, name, obj)
    _resolve_defaults(cfg, command)
    validate(cfg, command, names)
    if unsloth_loads(cfg, command):  # CUDA is there (rule unsloth_needs_cuda); Unsloth's pins stay out of the extras
        require("unsloth", "use_unsloth: true (Unsloth)", package="unsloth")
    if "training" in names:  # after the rules: a refused combination is reported before a missing package
        for key, module, extra in OPTIONAL_PACKAGES:
            if str(raw.get(key, False)).lower() in ("true", "1", "yes"):
                require(module, f"{key}: true", extra)
        if command == "train" and cfg.training.do_train:  # CUDA-only training methods (refused above without CUDA)
            if cfg.model.enable_liger_kernel or cfg.training.use_liger_kernel:
                require("liger_kernel", "enable_liger_kernel: true (Liger kernels)", "liger", package="liger-kernel")
            if cfg.training.fp8:
                require_fp8_backend(cfg.training.fp8_backend)
            if cfg.finetuning.loftq_init:  # peft's LoftQ quantizes with bitsandbytes and needs scipy
                require("bitsandbytes", "loftq_init: true (peft's LoftQ)", "loftq")
                require("scipy", "loftq_init: true (peft's LoftQ)", "loftq")
        if command == "train" and cfg.training.use_ray:  # the setting or USE_RAY=1
            require("ray", "use_ray: true (Ray Train)", "ray")
    return cfg


def fp8_backend_in_use(backend: str) -> str:
    """The FP8 library ``fp8_backend`` names ("auto": the first of FP8_BACKENDS installed, else "torchao")."""
    if backend != "auto":
        return backend
    return next((name for name, (module, _, _) in FP8_BACKENDS.items() if importlib.util.find_spec(module)), "torchao")


def require_fp8_backend(backend: str) -> str:
    """The FP8 library of ``fp8_backend`` ("torchao", "te" or "msamp"); DependencyError saying how to install it."""
    name = fp8_backend_in_use(backend)
    module, package, extra = FP8_BACKENDS[name]
    try:
        require(module, f"fp8: true (fp8_backend: {backend})", extra, package=package)
    except DependencyError as err:
        if extra is None:
            err.hint = "MS-AMP is built from its source (Azure/MS-AMP); or use fp8_backend: torchao (pip install 'tunery[fp8]')"
        raise
    return name


def _resolve_defaults(cfg: RunConfig, command: str) -> None:
    """Defaults that depend on other settings, decided here so nothing below the workflows writes into cfg."""
    if command == "train" and "do_train" not in cfg.raw:
        t = cfg.training
        if not (t.do_train or t.do_eval or t.do_predict):
            t.do_train = True  # `tunery train cfg.yaml` trains even when the YAML omits do_train
    if cfg.training is not None:
        _resolve_training_defaults(cfg)
    m = cfg.model
    if (m.add_tokens or m.add_special_tokens) and not m.resize_vocab and "resize_vocab" not in cfg.raw:
        m.resize_vocab = True
        logger.info("resize_vocab turned on so the added tokens get embeddings")


def _resolve_training_defaults(cfg: RunConfig) -> None:
    """Training settings implied by Tunery settings (LLaMA-Factory's meanings)."""
    t, ft = cfg.training, cfg.finetuning
    cfg.model.model_max_length = cfg.data.cutoff_len  # RoPE scaling sizes its factor from it
    if ft.swanlab.use_swanlab and "swanlab" not in t.report_to:
        t.report_to = [r for r in t.report_to if r != "none"] + ["swanlab"]
    if ft.early_stopping_steps is not None and t.metric_for_best_model is None:
        t.metric_for_best_model = "eval_loss"
        t.greater_is_better = False


def load_config(command: str, tokens: list[str]) -> tuple[RunConfig, list[str]]:
    """Parse CLI tokens (config file + overrides) for ``command``; returns leftover positionals."""
    raw, rest = load_raw_config(tokens)
    return parse_config(command, raw), rest


__all__ = [
    "DataArguments",
    "EvaluationArguments",
    "ExportArguments",
    "FinetuningArguments",
    "GeneratingArguments",
    "ModelArguments",
    "RunConfig",
    "load_config",
    "parse_config",
]
