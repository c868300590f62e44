"""The training workflow: settle what to do, pick the stage, run it.

``tunery train`` (``cli/train.py``) composes it with the dry-run plan and batch prediction.

Stages are registered by name in :mod:`tunery.train.stages`; each runs as data -> trainer -> fit.
"""

from __future__ import annotations

from typing import Any

from tunery.data.dataset_info import get_dataset_attrs
from tunery.data.template import get_template
from tunery.logging import get_logger
from tunery.model.loader import load_tokenizer
from tunery.train.continue_run import settings_fingerprint
from tunery.train.distributed import is_main_process, share_from_main
from tunery.train.output_lock import acquire_output_lock, ensure_writable_dir
from tunery.train.outputs import CONFIG_FILE, prepare_output_dir
from tunery.train.stages import get_stage, run_stage_steps

logger = get_logger(__name__)


def resolve_actions(cfg: Any) -> None:
    """Settle do_train / do_eval / do_predict for a hand-built config: train when nothing is asked for.

    ``parse_config`` already did this (and refused ``do_train: false`` with nothing else to do)."""
    args = cfg.training
    if not (args.do_train or args.do_eval or args.do_predict):  # parse_config refuses or resolves this
        args.do_train = True  # kept for hand-built configs: `tunery train cfg.yaml` trains by default


def run_train(cfg: Any, callbacks: list | None = None) -> Any:
    """Train and/or evaluate ``cfg`` (a RunConfig for 'train'); returns the stage's outcome, or None when
    only prediction was asked for (``do_predict`` is the caller's next step: see ``point_at_trained_model``).

    The outcome's ``stopped_by`` names the signal when SIGTERM/SIGINT stopped the run cleanly.
    """
    resolve_actions(cfg)
    if not (cfg.training.do_train or cfg.training.do_eval):
        return None
    return run_stage(cfg, callbacks)


def run_stage(cfg: Any, callbacks: list | None = None) -> Any:
    """Output-dir rules (writable, locked, resume/overwrite), tokenizer and template, then the stage's
    data -> trainer -> fit.

    In a multi-process run the global main process alone takes the lock and applies the output-dir
    rules (removing, resuming, stamping); every other process gets its resume decision from it."""
    stage = get_stage(cfg.finetuning.stage)
    args = cfg.training
    out = ensure_writable_dir(args.output_dir)  # before anything is loaded: one clear error, exit 2
    main_process = is_main_process()  # one lock per run, taken by its first process
    lock = acquire_output_lock(out) if main_process else None
    try:
        # model, template and dataset names first: a typo must fail before overwrite_output_dir removes
        # the previous run's files
        tokenizer = load_tokenizer(cfg.model)
        template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
        for names in (cfg.data.dataset, cfg.data.eval_dataset):
            if names:
                get_dataset_attrs(names, cfg.data.dataset_dir)
        resume = prepare_output_dir(args, fingerprint=settings_fingerprint(cfg)) if main_process else None
        args.resume_from_checkpoint = share_from_main(resume, args)
        if args.do_train and main_process:
            cfg.save(str(out / CONFIG_FILE))  # the settings of the running run: rerunning it resumes
        return run_stage_steps(stage, cfg, tokenizer, template, callbacks)
    finally:
        if lock is not None:
            lock.release()


def point_at_trained_model(cfg: Any) -> None:
    """After training, make ``cfg.model`` name what was just saved in output_dir (prediction in the same
    command uses it): the new adapter after the earlier ones for LoRA/OFT, else the saved model itself."""
    out = cfg.training.output_dir
    if cfg.finetuning.uses_adapter:
        adapters = [*cfg.model.adapters] if cfg.finetuning.create_new_adapter else cfg.model.adapters[:-1]
        cfg.model.adapter_name_or_path = ",".join([*adapters, out])
    else:
        cfg.model.model_name_or_path = out
        cfg.model.adapter_name_or_path = None
