"""Batch prediction: generate a reply for every example of a dataset and score it against the label.

``tunery predict cfg.yaml`` and ``tunery train --do_predict --predict_with_generate`` both end in
:func:`run_predict`. Outputs (in ``output_dir``): ``generated_predictions.jsonl`` (prompt, predict,
label, scores per sample), ``predict_results.json`` and ``all_results.json`` (corpus scores as
``predict_<metric>``, runtime, samples/s).

Why not ``Seq2SeqTrainer.predict``: it pads on the right for decoder-only models unless told
otherwise, cannot shrink a batch after an out-of-memory error, and returns ids we would decode and
cut at the end-of-turn token ourselves anyway; the engine already does all of that.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunery import runlog
from tunery.data import load_records
from tunery.data.media import KINDS, SINGULAR
from tunery.errors import ConfigError, DataError, ResourceError
from tunery.inference.backends import load_engine
from tunery.inference.engine import Engine, Response
from tunery.inference.media import attach_record_media
from tunery.inference.metrics import Scorer, aggregate
from tunery.logging import get_logger

if TYPE_CHECKING:
    from tunery.config import RunConfig

logger = get_logger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"
RESULTS_FILE = "predict_results.json"
ALL_RESULTS_FILE = "all_results.json"


def setting(cfg: RunConfig, name: str, default: Any = None) -> Any:
    """A setting that may live in any group (``metrics``, ``compute_metrics`` are not placed yet)."""
    for group in ("finetuning", "data", "generation", "evaluation", "training"):
        value = getattr(getattr(cfg, group, None), name, None)
        if value is not None:
            return value
    return cfg.raw.get(name, default) if isinstance(cfg.raw, dict) else default


def split_record(record: dict) -> tuple[list[dict], str]:
    """(prompt messages, label): the label is the final assistant reply, when the record has one."""
    messages = list(record.get("messages") or [])
    if messages and messages[-1].get("role") in ("assistant", "function_call"):
        return messages[:-1], str(messages[-1].get("content") or "")
    return messages, ""


def prediction_records(cfg: RunConfig) -> list[dict]:
    """Records of ``eval_dataset`` (LLaMA-Factory's --do_predict), else of ``dataset``."""
    which = "eval_dataset" if cfg.data.eval_dataset else "dataset"  # one is set: checked by parse_config
    records = load_records(cfg, stage="unsupervised", which=which)
    if not records:
        raise DataError(f"{which} '{getattr(cfg.data, which)}' has no usable examples")
    return records


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate_all(engine: Engine, prompts: list[list[int]], batch_size: int, progress: bool = True,
                 on_progress: Any = None, on_reply: Callable[[int, Response], None] | None = None,
                 extras: list[dict | None] | None = None, **gen: Any) -> list[Response]:
    """One reply per prompt, in input order, in batches that halve after an out-of-memory error.

    Prompts run longest first: batches hold similar lengths (less padding, and short prompts finish
    together), and a batch too big for memory fails at the start of the run rather than after an
    hour. ``on_reply(index, reply)`` is called for each reply as its batch finishes (``index`` into
    ``prompts``); ``on_progress(done)`` after each batch. The progress bar counts replies and shows
    generated tokens, tokens/s and the time left. ``extras[i]``: the processor inputs of a prompt
    with images (multimodal model), generated on its own.
    """
    from tqdm.auto import tqdm

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[Response | None] = [None] * len(prompts)
    size, done, tokens = max(1, int(batch_size)), 0, 0
    start = time.perf_counter()
    with tqdm(total=len(prompts), desc="Predicting", unit="reply", disable=not progress) as bar:
        while done < len(order):
            chunk = order[done : done + size]
            try:
                if extras is not None and any(extras[i] is not None for i in chunk):
                    replies = [engine.generate_media(prompts[i], extras[i], **gen, num_return_sequences=1)[0]
                               if extras[i] is not None else
                               engine.batch_generate([prompts[i]], **gen, num_return_sequences=1)[0] for i in chunk]
                else:
                    replies = engine.batch_generate([prompts[i] for i in chunk], **gen, num_return_sequences=1)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                _free_memory()
                if size == 1:
                    raise ResourceError(
                        "out of memory while generating one sample at a time",
                        hint="lower max_new_tokens or cutoff_len, or load the model in 4 bit (quantization_bit: 4)",
                    ) from exc
                size = max(1, size // 2)
                logger.warning("out of memory: retrying with batch size %d", size)
                continue
            for i, reply in zip(chunk, replies):
                results[i] = reply
                tokens += int(reply.completion_tokens or 0)
                if on_reply is not None:
                    on_reply(i, reply)
            done += len(chunk)
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{tokens} tokens, {tokens / elapsed:.1f} tokens/s" if elapsed > 0 else f"{tokens} tokens",
                                refresh=False)
            bar.update(len(chunk))
            if on_progress is not None:
                on_progress(done)
    return results  # type: ignore[return-value]


def encode_prompts(engine: Engine, records: list[dict], cutoff_len: int,
                   extras: list[dict | None] | None = None) -> tuple[list[list[int]], list[str]]:
    """Prompt ids (the last ``cutoff_len`` tokens, so the generation prompt survives) and labels.

    A record with ``images``/``videos``/``audios`` is encoded by the model's processor (as training
    encodes it); its processor inputs are appended to ``extras`` (None for the other records) and its
    prompt is never cut (the media tokens must stay). A row the model cannot read (a missing file, a
    kind the model does not take) is a DataError naming file, row and field.
    """
    prompts, labels, cut = [], [], 0
    for record in records:
        messages, label = split_record(record)
        messages = attach_record_media(messages, record)
        try:
            ids, extra = engine.prompt_inputs(messages, record.get("tools"))
        except (ConfigError, DataError) as exc:
            src = record.get("_source") or {}
            present = [kind for kind in KINDS if record.get(kind)]
            field = (getattr(exc, "field", None) or next((k for k in present if SINGULAR[k] in exc.message), None)
                     or (present[0] if present else "messages"))
            raise DataError(exc.message, file=src.get("file"), row=src.get("row"), field=field, hint=exc.hint) from exc
        if extra is None and cutoff_len and len(ids) > cutoff_len:
            ids, cut = ids[-cutoff_len:], cut + 1
        prompts.append(ids)
        labels.append(label)
        if extras is not None:
            extras.append(extra)
    if cut:
        logger.warning("%d prompt(s) longer than cutoff_len=%d kept only their last tokens", cut, cutoff_len)
    return prompts, labels


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_outputs(output_dir: str, rows: list[dict], results: dict[str, float]) -> None:
    """generated_predictions.jsonl, predict_results.json, and all_results.json (merged with earlier results)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (PREDICTIONS_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out / PREDICTIONS_FILE)  # a reader never sees half a file
    _write_json(out / RESULTS_FILE, results)
    all_path = out / ALL_RESULTS_FILE
    merged: dict = {}
    if all_path.is_file():
        try:
            merged = json.loads(all_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            merged = {}
    merged.update(results)
    _write_json(all_path, merged)


def read_partial(path: Path, prompt_texts: list[str]) -> dict[int, dict]:
    """Rows an interrupted run already wrote to ``path``: ``{index: row}`` for rows whose ``index``
    names a prompt with the same text (a finished file has no ``index`` and gives nothing)."""
    if not path.is_file():
        return {}
    done: dict[int, dict] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
            index = row.pop("index", None) if isinstance(row, dict) else None
            if isinstance(index, int) and 0 <= index < len(prompt_texts) and row.get("prompt") == prompt_texts[index]:
                done[index] = row
    return done


def run_predict(cfg: RunConfig, engine: Engine | None = None, *, metrics: Any = None,
                compute_metrics: str | None = None, progress: bool = True) -> dict[str, float]:
    """Predict over the dataset, write the output files, return the corpus results.

    ``engine`` lets the training workflow pass the model it just trained (wrapped in a
    HuggingFaceEngine) instead of loading it again. Each reply is appended to
    generated_predictions.jsonl (with its ``index``) as soon as its batch finishes, so an
    interrupted run keeps what it did; run again, it generates only the rows still missing. When
    all are done the file is rewritten in dataset order, without ``index``.
    """
    scorer = Scorer(metrics if metrics is not None else setting(cfg, "metrics"),
                    compute_metrics if compute_metrics is not None else setting(cfg, "compute_metrics"))
    records = prediction_records(cfg)
    if engine is None:
        engine = load_engine(cfg)
    extras: list[dict | None] = []
    prompts, labels = encode_prompts(engine, records, int(cfg.data.cutoff_len), extras)
    gen: dict[str, Any] = {}
    if cfg.data.eval_num_beams:
        gen["num_beams"] = cfg.data.eval_num_beams
    batch_size = int(getattr(cfg.training, "per_device_eval_batch_size", 8) or 8)
    start = time.perf_counter()
    out = Path(cfg.training.output_dir)
    if not (out / "training_args.yaml").is_file():  # a training run in the same folder wrote its own
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(str(out / "training_args.yaml"))
    prompt_texts = [engine.tokenizer.decode(ids, skip_special_tokens=False) for ids in prompts]
    pred_path = out / PREDICTIONS_FILE
    rows: dict[int, dict] = read_partial(pred_path, prompt_texts)
    per_sample: dict[int, dict[str, float]] = {i: dict(row.get("scores") or {}) for i, row in rows.items()}
    todo = [i for i in range(len(prompts)) if i not in rows]
    if rows:
        logger.info("%d of %d predictions are already in %s (an interrupted run): generating the other %d "
                    "(delete the file to start over)", len(rows), len(prompts), pred_path, len(todo))
    limit = engine.generate_kwargs(gen).get("max_new_tokens")
    logger.info("generating %d replies in batches of %d, up to %s new tokens each", len(todo), batch_size, limit)

    writer, already = runlog.ProgressWriter(out, len(prompts), "predict"), len(rows)
    with pred_path.open("a" if rows else "w", encoding="utf-8") as fh:
        def keep(position: int, reply: Response) -> None:
            index = todo[position]
            scores = scorer(reply.text, labels[index]) if labels[index] else {}
            per_sample[index] = scores
            rows[index] = {"prompt": prompt_texts[index], "predict": reply.text, "label": labels[index],
                           "scores": {k: round(v, 4) for k, v in scores.items()}}
            fh.write(json.dumps({**rows[index], "index": index}, ensure_ascii=False) + "\n")
            fh.flush()

        try:
            generate_all(engine, [prompts[i] for i in todo], batch_size, progress=progress, on_reply=keep,
                         extras=[extras[i] for i in todo] if any(e is not None for e in extras) else None,
                         on_progress=lambda done: writer(already + done), **gen)
        except KeyboardInterrupt:
            logger.warning("interrupted: %d of %d predictions are saved in %s; run the same command again to "
                           "generate the rest", len(rows), len(prompts), pred_path)
            raise
    runtime = time.perf_counter() - start
    ordered = [rows[i] for i in range(len(prompts))]
    results = {f"predict_{k}": round(v, 4)
               for k, v in aggregate([per_sample[i] for i in range(len(prompts))]).items()}
    results.update(
        predict_samples=len(prompts),
        predict_runtime=round(runtime, 4),
        predict_samples_per_second=round(len(prompts) / runtime, 3) if runtime > 0 else 0.0,
    )
    if not any(labels):
        logger.warning("no example has a reference reply: predictions were written without scores")
    write_outputs(cfg.training.output_dir, ordered, results)
    logger.info("wrote %d predictions to %s", len(ordered), os.path.join(cfg.training.output_dir, PREDICTIONS_FILE))
    return results
