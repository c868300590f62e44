"""What a run leaves in output_dir, and the rules that protect it.

- A finished run (``train_results.json`` present) is never overwritten unless
  ``overwrite_output_dir`` is set; then every file the old run wrote is removed first (an
  interrupted run with the same settings fingerprint is resumed instead). Settings asking for more
  steps or epochs continue it from its last checkpoint (see ``continue_run``).
- Otherwise training resumes from the newest *complete* checkpoint. transformers writes
  ``trainer_state.json`` last when it saves a checkpoint, so a folder without it was cut off
  mid-save: it is removed, never resumed from.
- Results are written after the model, so a finished marker never points at a missing model.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
from pathlib import Path
from typing import Any

from tunery import runlog
from tunery.errors import ConfigError, ResourceError
from tunery.logging import get_logger
from tunery.model.loader import resolve
from tunery.model.multimodal import PROCESSOR_FILES, is_multimodal
from tunery.train.callbacks import SavePissaInit
from tunery.train.continue_run import RUN_STAMP, read_stamp, read_state, wants_more_than, write_stamp
from tunery.train.plotting import plot_run

logger = get_logger(__name__)

FINISHED_MARKER = "train_results.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "training_args.yaml"
# Files a previous Tunery run wrote; removed (with checkpoints) when overwriting.
RUN_FILES = (runlog.LOG_FILE, "train_results.json", "eval_results.json", "all_results.json", STATE_FILE,
             CONFIG_FILE, "training_loss.png", "training_eval_loss.png", RUN_STAMP,
             # the saved model or adapter, its tokenizer and card
             "adapter_model.safetensors", "adapter_model.bin", "adapter_config.json", "model.safetensors",
             "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json", "config.json",
             "generation_config.json", "training_args.bin", "README.md", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
             "vocab.json", "merges.txt", "tokenizer.model", "processor_config.json", "preprocessor_config.json",
             "video_preprocessor_config.json",
             # prediction after training
             "generated_predictions.jsonl", "predict_results.json")
# Patterns of further run files (sharded weights, other plots) and folders (TensorBoard, PiSSA init).
RUN_FILE_PATTERNS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin", "training_*.png")
RUN_FOLDERS = ("runs", SavePissaInit.FOLDER)


def checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return sorted(found)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / STATE_FILE).is_file()


def remove_incomplete_checkpoints(output_dir: str | Path) -> None:
    for _, folder in checkpoints(output_dir):
        if not is_complete(folder):
            logger.warning("removing %s: it was cut off while being saved (no %s)", folder, STATE_FILE)
            shutil.rmtree(folder, ignore_errors=True)


def latest_checkpoint(output_dir: str | Path) -> str | None:
    complete = [p for _, p in checkpoints(output_dir) if is_complete(p)]
    return str(complete[-1]) if complete else None


def clear_previous_run(output_dir: str | Path) -> int:
    """Remove what a previous Tunery run wrote in ``output_dir``: checkpoints, the model or adapter
    with its tokenizer and card, logs, plots, results. Files Tunery does not write are kept.
    Returns how many files and folders were removed (0: nothing of a previous run was there)."""
    root = Path(output_dir)
    removed = 0
    for _, folder in checkpoints(root):
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    for name in RUN_FOLDERS:
        if (root / name).is_dir():
            shutil.rmtree(root / name, ignore_errors=True)
            removed += 1
    for name in RUN_FILES:
        if (root / name).is_file():
            (root / name).unlink()
            removed += 1
    for pattern in RUN_FILE_PATTERNS:
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def _in_dir(path: str, out: Path) -> bool:
    return Path(path).resolve().parent == out.resolve()


def _step(checkpoint: str | Path) -> int:
    match = CHECKPOINT.match(Path(checkpoint).name)
    return int(match.group(1)) if match else int(read_state(checkpoint).get("global_step", 0))


def _continue_finished_run(training_args: Any, out: Path) -> str:
    """The checkpoint that continues the finished run in ``out`` with more steps or epochs.

    Raises ResourceError when the settings ask for no more than was trained, ConfigError when the
    run has no checkpoint at its last step (continuing from an older one would redo steps).
    """
    state = read_state(out)
    done = int(state.get("global_step", 0))
    if not wants_more_than(training_args, state):
        raise ResourceError(
            f"output_dir {out} already holds a finished run ({done} steps, {state.get('epoch', 0):g} epochs)",
            hint="set overwrite_output_dir: true to replace it, raise max_steps or num_train_epochs to continue it, "
                 "or choose another output_dir",
        )
    remove_incomplete_checkpoints(out)
    latest = latest_checkpoint(out)
    if latest is None or _step(latest) < done:
        where = f"its newest checkpoint is {latest}" if latest else "it kept no checkpoint"
        raise ConfigError(
            f"cannot continue the finished run in {out}: {where}, not one at its last step {done}",
            hint=(f"resume_from_checkpoint: {latest} continues from there (later steps are trained again), or "
                  if latest else "") + "set overwrite_output_dir: true to start over",
        )
    # The continued run owns the folder now: it is finished again only when it ends.
    for name in (FINISHED_MARKER, "all_results.json"):
        (out / name).unlink(missing_ok=True)
    logger.info("continuing the finished run in %s from %s", out, latest)
    return latest


def prepare_output_dir(training_args: Any, fingerprint: str | None = None) -> str | None:
    """Apply the overwrite/resume/continue rules; set and return ``resume_from_checkpoint`` (or None).

    Every stage calls this before loading the model, so a finished run fails fast.
    ``fingerprint`` (:func:`tunery.train.continue_run.settings_fingerprint`) identifies the run's
    settings: an interrupted run with the same fingerprint is resumed even with
    ``overwrite_output_dir: true`` (the same command run again), and it is recorded in output_dir.
    """
    out = Path(training_args.output_dir)
    asked = training_args.resume_from_checkpoint
    if isinstance(asked, str) and asked.strip().lower() in ("true", "false", ""):
        asked = asked.strip().lower() == "true"
    if not training_args.do_train:
        return None
    finished = (out / FINISHED_MARKER).is_file()
    if getattr(training_args, "overwrite_output_dir", False):
        same_run = (fingerprint is not None and not finished and read_stamp(out) == fingerprint
                    and latest_checkpoint(out) is not None)
        if isinstance(asked, str) and _in_dir(asked, out):
            resume = asked  # an explicit checkpoint of this folder: resume it, never delete it
            for name in (FINISHED_MARKER, "all_results.json"):
                (out / name).unlink(missing_ok=True)
        elif same_run:
            remove_incomplete_checkpoints(out)
            resume = latest_checkpoint(out)
            logger.info("overwrite_output_dir: %s holds this run, interrupted (same settings): resuming it", out)
        else:
            if out.is_dir() and (removed := clear_previous_run(out)):
                logger.info("overwrite_output_dir: removed the previous run's outputs in %s (%d files and folders)",
                            out, removed)
            resume = asked if isinstance(asked, str) else None
    else:
        if finished and not isinstance(asked, str):
            resume = _continue_finished_run(training_args, out)
        else:
            if finished:  # an explicit checkpoint continues into this folder: not finished until it ends
                for name in (FINISHED_MARKER, "all_results.json"):
                    (out / name).unlink(missing_ok=True)
            remove_incomplete_checkpoints(out)
            resume = asked if isinstance(asked, str) else latest_checkpoint(out)
            if asked is True and resume is None:
                raise ConfigError(f"resume_from_checkpoint: true but {out} holds no complete checkpoint")
    if resume is not None:
        path = Path(resume)
        if not path.is_dir() or not is_complete(path):
            raise ConfigError(
                f"resume_from_checkpoint {resume} is not a complete checkpoint (no {STATE_FILE})",
                hint="point it at a checkpoint-N folder written by a previous run",
            )
        if _in_dir(resume, out):
            runlog.trim(out, _step(path))
        elif not wants_more_than(training_args, read_state(path)):
            state = read_state(path)
            asked_for = (f"max_steps {training_args.max_steps}" if training_args.max_steps > 0
                         else f"num_train_epochs {training_args.num_train_epochs:g}")
            raise ConfigError(
                f"resume_from_checkpoint {resume} is at step {state.get('global_step', 0)} "
                f"(epoch {state.get('epoch', 0):g}), which already covers this run ({asked_for}): nothing to train",
                hint="raise max_steps (or num_train_epochs) above what the checkpoint has trained to continue it",
            )
        logger.info("resuming from %s", resume)
    else:
        runlog.remove(out)  # a fresh start must not append to an older run's log
    if fingerprint is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_stamp(out, fingerprint)
    training_args.resume_from_checkpoint = resume
    return resume


def save_model(trainer: Any, cfg: Any) -> None:
    """The trained model or adapter plus tokenizer; a PiSSA adapter converted to LoRA if asked."""
    output_dir = trainer.args.output_dir
    init_dir = os.path.join(output_dir, SavePissaInit.FOLDER)
    if getattr(cfg.finetuning, "pissa_convert", False) and os.path.isdir(init_dir):
        trainer.model.save_pretrained(output_dir, path_initial_model_for_weight_conversion=init_dir)
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(output_dir)
        shutil.rmtree(init_dir, ignore_errors=True)
        logger.info("PiSSA adapter converted to a plain LoRA adapter in %s", output_dir)
    else:
        trainer.save_model()
    save_processor_files(cfg, output_dir)


def save_processor_files(cfg: Any, output_dir: str) -> None:
    """A vision/audio model's processor files (its base folder's) beside the saved model or adapter, so a
    full/freeze output loads as that model again, media processor included (the Trainer saves only the
    tokenizer). Files the save already wrote (the tokenizer's chat template) are kept."""
    try:
        base = resolve(cfg.model).path
    except Exception:  # noqa: BLE001 - the run is saved; a base that no longer resolves has nothing to add
        return
    if not os.path.isdir(base) or not is_multimodal(base):
        return
    for name in PROCESSOR_FILES:
        source, target = os.path.join(base, name), os.path.join(output_dir, name)
        if os.path.isfile(source) and not os.path.exists(target):
            shutil.copyfile(source, target)


def write_model_card(trainer: Any, cfg: Any) -> None:
    """README.md through transformers' own model card (tags say how the model was made)."""
    tags = ["tunery", cfg.finetuning.stage, cfg.finetuning.finetuning_type]
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config:
        kind = getattr(next(iter(peft_config.values())), "peft_type", None)
        tags.append(str(getattr(kind, "value", kind or "lora")).lower())
    kwargs: dict[str, Any] = {"model_name": os.path.basename(os.path.normpath(trainer.args.output_dir)), "tags": tags}
    if "dataset" in inspect.signature(trainer.create_model_card).parameters:  # trl's trainers take no dataset
        kwargs["dataset"] = cfg.data.dataset
    try:
        trainer.create_model_card(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a card is a courtesy; never fail a finished run over it
        logger.warning("model card not written by transformers: %s", exc)
    # peft rewrites the card of an adapter; say how the run was made, in a section of our own.
    section = (
        "\n\n## Trained with Tunery\n\n"
        f"- base model: {cfg.model.model_name_or_path}\n- stage: {cfg.finetuning.stage}\n"
        f"- finetuning type: {cfg.finetuning.finetuning_type}\n- datasets: {cfg.data.dataset}\n\n"
        f"Reproduce with `tunery train {CONFIG_FILE}` (the resolved settings saved beside this card).\n"
    )
    with open(os.path.join(trainer.args.output_dir, "README.md"), "a", encoding="utf-8") as f:
        f.write(section)


def save_results(trainer: Any, cfg: Any, train_metrics: dict[str, Any], plot_keys: tuple[str, ...]) -> None:
    """train_results.json, all_results.json, trainer_state.json, training_args.yaml, card, plots."""
    args = trainer.args
    if not trainer.is_world_process_zero():
        return
    cfg.save(os.path.join(args.output_dir, CONFIG_FILE))
    trainer.save_state()
    write_model_card(trainer, cfg)
    if getattr(cfg.finetuning, "plot_loss", False):
        plot_run(args.output_dir, plot_keys)
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)  # train_results.json: the finished marker, last

