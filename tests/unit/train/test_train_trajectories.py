"""Pinned per-step losses of sft and dpo on the tiny fixture model, through ``tunery train``'s path.

The parity tests (fast path vs plain Trainer, Tunery vs trl) compare two sides; a change that moves
both sides at once (data pipeline, template, collator, loss, trainer settings) passes them. These
runs pin the absolute per-step losses instead: 4 steps, fixed seed, CPU, fp32. A change meant to
alter them (a new default, a library upgrade) must say why and update the literals; print them with
``pytest -s -k trajectory`` (each run prints its losses).
"""

from __future__ import annotations

import json

import pytest

from tests.unit.train_utils import logged_losses, train_config
from tunery.train.workflow import run_stage

QUESTIONS = ["What is the capital of France?", "Write a short poem about the sea.", "Translate good morning.",
             "How are you today?", "What is 1 + 2?", "Tell me about the sky.", "Who are you?", "Name a colour."]
ANSWERS = ["Paris is the capital of France.", "The sea is wide, the sky is blue.", "Bonjour.",
           "I am fine, thank you.", "1 + 2 = 3.", "The sky is blue and wide.", "I am a helpful assistant.",
           "Blue is a colour."]

# Observed on the tiny ChatML fixture (tests/fixtures/tiny_models.py, seed 0) with the settings below;
# identical before and after the stage-registry refactor (torch 2.x CPU, transformers 5.x, trl 1.x).
SFT_LOSSES = [6.282617568969727, 6.276345729827881, 6.242499828338623, 6.176337718963623]
DPO_LOSSES = [0.6931471824645996, 0.6439743041992188, 0.6307559013366699, 0.5816787481307983]


def _dataset_dir(tmp_path):
    rows = [{"instruction": q, "input": "", "output": a} for q, a in zip(QUESTIONS, ANSWERS)]
    pairs = [{"instruction": q, "input": "", "chosen": a, "rejected": "The lazy dog."} for q, a in zip(QUESTIONS, ANSWERS)]
    (tmp_path / "sft.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
    info = {"tiny_sft": {"file_name": "sft.json"}, "tiny_pairs": {"file_name": "pairs.json", "ranking": True,
                                                  "columns": {"chosen": "chosen", "rejected": "rejected"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return tmp_path


def _run(tiny_chatml_model, tmp_path, stage: str, dataset: str) -> list[float]:
    cfg = train_config(tiny_chatml_model, tmp_path / "out", stage=stage, dataset=dataset,
                       dataset_dir=str(_dataset_dir(tmp_path)), template="auto", cutoff_len=64, max_steps=4,
                       per_device_train_batch_size=2, learning_rate=1e-2, lora_rank=8, save_strategy="no",
                       use_cpu=True, overwrite_cache=True)
    run_stage(cfg)
    losses = logged_losses(tmp_path / "out")
    observed = [losses[step] for step in sorted(losses)]
    print(f"{stage} losses: {observed}")
    return observed


@pytest.mark.parametrize(("stage", "dataset", "expected"), [("sft", "tiny_sft", SFT_LOSSES),
                                                            ("dpo", "tiny_pairs", DPO_LOSSES)])
def test_loss_trajectory_is_pinned(tiny_chatml_model, tmp_path, stage, dataset, expected):
    observed = _run(tiny_chatml_model, tmp_path, stage, dataset)
    assert observed == pytest.approx(expected, rel=1e-4), observed
