"""``--dry_run true``: resolve model and data, return what the run would do (``Plan.lines()``), train nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunery.data import IGNORE_INDEX, get_dataset, skipped_lines
from tunery.data.template import get_template
from tunery.model.loader import load_tokenizer
from tunery.train.estimate import Estimate, estimate_run, measured_matmul_flops, steps_for


@dataclass
class Plan:
    stage: str
    finetuning_type: str
    model: str
    examples: int
    eval_examples: int
    tokens: int
    trained_tokens: int
    steps: int
    skipped: int
    truncated: int
    reply_cut: int
    estimate: Estimate
    notes: list[str] = field(default_factory=list)
    skipped_rows: list[str] = field(default_factory=list)  # count, first rows, where the full list is

    def lines(self) -> list[str]:
        out = [
            f"plan: stage {self.stage}, finetuning_type {self.finetuning_type}, model {self.model}",
            f"examples after filtering: {self.examples:,} train, {self.eval_examples:,} eval "
            f"({self.skipped} skipped as invalid, {self.reply_cut} dropped: reply beyond cutoff_len, "
            f"{self.truncated} truncated)",
            f"tokens: {self.tokens:,} in the training set, {self.trained_tokens:,} of them trained on (labels)",
            *self.skipped_rows,
            f"optimizer steps: {self.steps:,}",
        ]
        return out + self.estimate.lines(self.steps) + self.notes


def _count_tokens(dataset: Any) -> tuple[int, int, int]:
    """(all tokens, label tokens, longest row) of a tokenized dataset."""
    if dataset is None or not hasattr(dataset, "__len__"):
        return 0, 0, 0
    tokens = trained = longest = 0
    has_labels = "labels" in dataset.column_names
    for row in dataset:
        ids = row.get("input_ids") or row.get("chosen_input_ids") or []
        tokens += len(ids)
        longest = max(longest, len(ids))
        if has_labels:
            trained += sum(1 for t in row["labels"] if t != IGNORE_INDEX)
    return tokens, trained, longest


def build_plan(cfg: Any) -> Plan:
    stage = cfg.finetuning.stage
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template or "auto", tokenizer, cfg.data)
    data = get_dataset(cfg, tokenizer, template, stage)
    train = data.train_dataset
    examples = len(train) if train is not None and hasattr(train, "__len__") else 0
    evaluation = data.eval_dataset
    eval_examples = len(evaluation) if evaluation is not None and hasattr(evaluation, "__len__") else 0
    tokens, trained, longest = _count_tokens(train)
    args = cfg.training
    steps = steps_for(examples, args)
    per_step = max(args.per_device_train_batch_size, 1) * max(args.gradient_accumulation_steps, 1)
    mean = tokens / examples if examples else cfg.data.cutoff_len
    estimate = estimate_run(cfg, tokens_per_step=int(per_step * max(mean, 1)), longest_row=longest,
                            flops=measured_matmul_flops())
    return Plan(stage=stage, finetuning_type=cfg.finetuning.finetuning_type, model=str(cfg.model.model_name_or_path),
                examples=examples, eval_examples=eval_examples, tokens=tokens, trained_tokens=trained, steps=steps,
                skipped=data.stats.skipped_invalid, truncated=data.stats.truncated,
                reply_cut=data.stats.reply_cut, estimate=estimate, skipped_rows=skipped_lines(data.stats))
