"""SmolLM2-135M-Instruct on Tunery's sample task: the accuracy (and every probability) is the same run
to run, because scoring reads next-token probabilities instead of sampling an answer."""

from __future__ import annotations

import json

import pytest

from tunery.config import parse_config
from tunery.evaluation.workflow import run_eval


@pytest.mark.slow
def test_sample_task_accuracy_is_reproducible(smollm2_path, tmp_path):
    def run(name):
        cfg = parse_config("eval", {
            "model_name_or_path": str(smollm2_path), "task": "sample_en_test", "template": "fewshot",
            "n_shot": 5, "batch_size": 8, "seed": 42, "save_dir": str(tmp_path / name),
        })
        results = run_eval(cfg)
        rows = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        return results, rows

    first, rows1 = run("run1")
    second, rows2 = run("run2")
    assert first["num_questions"] == 48
    assert first["average"] == second["average"]
    assert first["categories"] == second["categories"]
    assert [r["token_probabilities"] for r in rows1] == [r["token_probabilities"] for r in rows2]
    # the letters are the model's real answer tokens: they hold most of the next-token mass
    assert min(sum(r["token_probabilities"].values()) for r in rows1) > 0.5
    assert rows1[0]["prompt"].count("Answer:") == 6
