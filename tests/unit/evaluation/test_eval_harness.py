"""The lm-eval bridge runs a harness task on the model Tunery loaded and writes its results next to ours."""

from __future__ import annotations

import json

import pytest

from tunery.config import parse_config
from tunery.evaluation.workflow import run_eval

pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval is an optional extra (tunery[eval])")

TASK_YAML = """task: tunery_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow  # importing lm-eval and indexing its task registry takes a while
def test_harness_task_on_the_loaded_model(tiny_chatml_model, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = [{"question": f"What is {i} + {i}?", "choices": [str(2 * i), str(2 * i + 1), "no"], "label": 0} for i in range(4)]
    (tasks / "tiny.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tasks / "tiny.yaml").write_text(TASK_YAML.format(data=tasks / "tiny.jsonl"))
    cfg = parse_config("eval", {
        "model_name_or_path": str(tiny_chatml_model), "harness_tasks": "tunery_tiny_mc", "task_dir": str(tasks),
        "batch_size": 2, "save_dir": str(tmp_path / "out"),
    })
    results = run_eval(cfg)
    acc = results["harness"]["results"]["tunery_tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0 and acc * 4 == int(acc * 4)  # 4 questions
    saved = json.loads((tmp_path / "out" / "harness_results.json").read_text())
    assert saved["results"]["tunery_tiny_mc"]["acc,none"] == acc
    assert "tunery_tiny_mc" in (tmp_path / "out" / "harness_results.log").read_text()
    assert not (tmp_path / "out" / "results.json").exists()  # no multiple-choice task was asked for
