"""Shared data and helpers for the preference/RL stage tests: an easy-to-learn preference.

Every prompt prefers the same short reply (CHOSEN) over another (REJECTED), so a tiny model learns
the preference in a few steps; prompts are rendered with the tokenizer's own chat template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is the capital of France?", "Write a short poem.", "Translate good morning.", "How are you today?",
    "What is 1 + 2?", "Tell me about the sea.", "Who are you?", "Answer the question.",
]
CHOSEN = "Hello, thank you.<|im_end|>\n"
REJECTED = "The lazy dog.<|im_end|>\n"


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    out = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def pairwise_dataset(tokenizer: Any) -> Any:
    """prompt_ids / chosen_ids / rejected_ids rows, the columns Tunery's pairwise processor writes."""
    from datasets import Dataset

    chosen = tokenizer.encode(CHOSEN, add_special_tokens=False)
    rejected = tokenizer.encode(REJECTED, add_special_tokens=False)
    return Dataset.from_list([
        {"prompt_ids": prompt_ids(tokenizer, q), "chosen_ids": chosen, "rejected_ids": rejected} for q in QUESTIONS
    ])


def kto_dataset(tokenizer: Any) -> Any:
    """prompt_ids / completion_ids / label rows: CHOSEN is desirable, REJECTED undesirable."""
    from datasets import Dataset

    rows = []
    for i, q in enumerate(QUESTIONS):
        good = i % 2 == 0
        reply = tokenizer.encode(CHOSEN if good else REJECTED, add_special_tokens=False)
        rows.append({"prompt_ids": prompt_ids(tokenizer, q), "completion_ids": reply, "label": good})
    return Dataset.from_list(rows)


def config(model_path: Path, output_dir: Path, **overrides: Any) -> Any:
    """A RunConfig for a few fast CPU steps on a tiny model."""
    from tunery.config import parse_config

    raw = {
        "model_name_or_path": str(model_path), "output_dir": str(output_dir), "do_train": True,
        "finetuning_type": "lora", "lora_rank": 8, "max_steps": 8, "learning_rate": 1e-2,
        "per_device_train_batch_size": 8, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "disable_gradient_checkpointing": True, "seed": 7, "dataloader_num_workers": 0, "disable_tqdm": True,
        "cutoff_len": 128, "use_cpu": True,
    }
    raw.update(overrides)
    if raw.get("stage") in ("ppo", "grpo") and not raw.get("reward_model") and not raw.get("reward_funcs"):
        # Tests hand build_trainer their own scorer; a config must still name a reward source to parse
        # (config rules ppo_needs_reward_model / grpo_needs_rewards). This API is never called.
        raw.update(reward_model="http://127.0.0.1:9/unused", reward_model_type="api")
    return parse_config("train", raw)


def sequence_logps(model: Any, prompt: list[int], reply: list[int]) -> float:
    """Sum of the log-probabilities of ``reply`` after ``prompt`` under ``model``."""
    import torch

    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
    return float(logps[len(prompt) - 1:].sum())


def mean_margin(model: Any, dataset: Any) -> float:
    """Mean chosen-minus-rejected log-prob margin over the pairs."""
    margins = [sequence_logps(model, r["prompt_ids"], r["chosen_ids"]) - sequence_logps(model, r["prompt_ids"], r["rejected_ids"])
               for r in dataset]
    return sum(margins) / len(margins)


def logged(trainer: Any, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]
