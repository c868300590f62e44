"""``--dry_run true`` and ``tunery estimate``: resolve model and data, return what the run would do
(``Plan.lines()``), train nothing. Both commands call :func:`build_plan`, so they print the same figures
for the same config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunery.data import IGNORE_INDEX, get_dataset, skipped_lines
from tunery.data.processors import stage_kind
from tunery.data.template import get_template
from tunery.model.loader import load_tokenizer
from tunery.train.estimate import (
    DataShape,
    Estimate,
    assumed_shape,
    checkpointing_for_run,
    estimate_run,
    machine_rates,
    parallelism,
    steps_for,
)
from tunery.train.media import MEDIA_STAGES, media_encoder


@dataclass(frozen=True)
class TokenCounts:
    """Token counts of a tokenized training set, read from the stage's own columns.

    ``tokens``: every token the trained sequences hold (rm/dpo/orpo/simpo: chosen + rejected, each
    with its prompt; ppo/grpo: the prompts); ``trained``: the tokens with a loss (labels: the
    replies; ppo/grpo: 0, their replies are generated); ``prompt``: prompt tokens; ``longest``:
    the longest sequence; ``sequences``: trained sequences per example (2 for pairwise rows).
    """

    examples: int = 0
    tokens: int = 0
    trained: int = 0
    prompt: int = 0
    longest: int = 0
    sequences: int = 1


def _label_count(labels: Any) -> int:
    return sum(1 for t in labels if t != IGNORE_INDEX)


def count_tokens(dataset: Any, stage: str) -> TokenCounts:
    """Counts of ``dataset`` as tokenized for ``stage`` (see :class:`TokenCounts`); zeros when unsized."""
    if dataset is None or not hasattr(dataset, "__len__"):
        return TokenCounts()
    kind = stage_kind(stage)
    examples = tokens = trained = prompt = longest = 0
    for row in dataset:
        examples += 1
        if kind == "pairwise":
            sides = [(row["chosen_input_ids"], row["chosen_labels"]), (row["rejected_input_ids"], row["rejected_labels"])]
            prompt += len(row["prompt_ids"])
        elif kind == "unsupervised":  # ppo/grpo prompts: the replies are generated during training
            sides = [(row["input_ids"], [])]
            prompt += len(row["input_ids"])
        else:
            sides = [(row["input_ids"], row.get("labels") or [])]
            if kind == "kto":
                prompt += len(row["prompt_ids"])
        for ids, labels in sides:
            tokens += len(ids)
            longest = max(longest, len(ids))
            trained += _label_count(labels) if kind != "unsupervised" else 0
    return TokenCounts(examples=examples, tokens=tokens, trained=trained, prompt=prompt, longest=longest,
                       sequences=2 if kind == "pairwise" else 1)


def shape_of(counts: TokenCounts) -> DataShape:
    """The estimate's view of the data: mean tokens per example (all its trained sequences together)."""
    n = max(counts.examples, 1)
    return DataShape(sequence_tokens=counts.tokens / n, prompt_tokens=counts.prompt / n, longest=counts.longest,
                     examples=counts.examples, trained_tokens=counts.trained / n)


@dataclass
class Plan:
    """What a training run would do: data counts, optimizer steps, and the memory/time :class:`Estimate`.

    ``counts`` is None when no dataset is set (``tunery estimate`` without data: rows assumed at
    cutoff_len).
    """

    stage: str
    finetuning_type: str
    model: str
    examples: int
    eval_examples: int
    tokens: int
    trained_tokens: int
    steps: int | None
    skipped: int
    truncated: int
    reply_cut: int
    estimate: Estimate
    counts: TokenCounts | None = None
    cutoff_len: int = 0
    notes: list[str] = field(default_factory=list)
    skipped_rows: list[str] = field(default_factory=list)  # count, first rows, where the full list is

    def data_lines(self) -> list[str]:
        if self.counts is None:
            return [f"assuming every row is cutoff_len={self.cutoff_len} tokens (set dataset: for real counts)"]
        out = [
            f"examples after filtering: {self.examples:,} train, {self.eval_examples:,} eval "
            f"({self.skipped} skipped as invalid, {self.reply_cut} dropped: no room for a reply, "
            f"{self.truncated} truncated)",
            *self.skipped_rows,
        ]
        kind = stage_kind(self.stage)
        if kind == "pairwise":
            out.append(f"tokens: {self.tokens:,} in the training set (chosen + rejected sequences, each with its "
                       f"prompt), {self.trained_tokens:,} of them trained on (the replies)")
        elif kind == "unsupervised":
            out.append(f"tokens: {self.tokens:,} prompt tokens in the training set; the trained replies are "
                       "generated during training")
        else:
            out.append(f"tokens: {self.tokens:,} in the training set, {self.trained_tokens:,} of them trained on "
                       "(labels)")
        return out

    def lines(self) -> list[str]:
        out = [f"plan: stage {self.stage}, finetuning_type {self.finetuning_type}, model {self.model}",
               *self.data_lines()]
        if self.steps is not None:
            out.append(f"optimizer steps: {self.steps:,}")
        return out + self.estimate.lines(self.steps) + self.notes


def _notes(cfg: Any) -> list[str]:
    notes = []
    if cfg.finetuning.stage in ("ppo", "grpo"):
        notes.append("generated replies are counted at max_new_tokens each: time and memory are upper bounds")
    t = cfg.training
    if getattr(t, "use_ray", False):
        notes.append(f"runs through Ray Train (use_ray): Ray starts {t.ray_num_workers} worker process(es), no "
                     "torchrun; memory is per worker's device, steps count all workers' batches, and the time "
                     "assumes workers as fast as this machine")
    return notes


def build_plan(cfg: Any, *, flops: float | None = None, bandwidth: float | None = None) -> Plan:
    """The plan of ``cfg``: from the tokenized data when ``dataset`` is set, else rows at cutoff_len.

    ``flops``/``bandwidth``: the machine's rates (default: measured once per process,
    :func:`tunery.train.estimate.machine_rates`). Raises what loading the tokenizer/data raises.
    """
    ft, args = cfg.finetuning, cfg.training
    if flops is None:
        flops, bandwidth = machine_rates()
    par = parallelism(cfg)
    model = str(cfg.model.model_name_or_path)
    if not cfg.data.dataset:
        estimate = estimate_run(cfg, shape=assumed_shape(cfg), flops=flops, bandwidth=bandwidth, par=par)
        steps = int(args.max_steps) if args.max_steps and args.max_steps > 0 else None
        return Plan(stage=ft.stage, finetuning_type=ft.finetuning_type, model=model, examples=0, eval_examples=0,
                    tokens=0, trained_tokens=0, steps=steps, skipped=0, truncated=0, reply_cut=0, estimate=estimate,
                    cutoff_len=cfg.data.cutoff_len, notes=_notes(cfg))
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    media = media_encoder(cfg) if ft.stage in MEDIA_STAGES else None  # a VLM's processor: media tokens count
    data = get_dataset(cfg, tokenizer, template, ft.stage, media=media)
    counts = count_tokens(data.train_dataset, ft.stage)
    evaluation = data.eval_dataset
    eval_examples = len(evaluation) if evaluation is not None and hasattr(evaluation, "__len__") else 0
    steps = steps_for(counts.examples, args, stage=ft.stage, devices=par.devices, finetuning=ft)
    shape = shape_of(counts) if counts.examples else assumed_shape(cfg)
    # Training plans checkpointing for text runs only (train/sft.py); a media run checkpoints every layer.
    checkpointing = checkpointing_for_run(cfg, shape) if media is None else None
    estimate = estimate_run(cfg, shape=shape, flops=flops, bandwidth=bandwidth, par=par,
                            checkpointed_layers=checkpointing.checkpointed if checkpointing else None)
    notes = _notes(cfg) + ([checkpointing.describe()] if checkpointing else [])
    return Plan(stage=ft.stage, finetuning_type=ft.finetuning_type, model=model, examples=counts.examples,
                eval_examples=eval_examples, tokens=counts.tokens, trained_tokens=counts.trained, steps=steps,
                skipped=data.stats.skipped_invalid, truncated=data.stats.truncated, reply_cut=data.stats.reply_cut,
                estimate=estimate, counts=counts, notes=notes,
                skipped_rows=skipped_lines(data.stats))
