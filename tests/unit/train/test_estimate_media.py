"""The plan of a vision-language run reads its language model's sizes; the plan's own work logs nothing twice."""

from __future__ import annotations

import logging

from tests.fixtures import tiny_llava as llava_fixtures
from tests.unit.train_utils import train_config

llava4 = llava_fixtures.llava4  # the shared fixture (tests/fixtures/tiny_llava.py)
mllm_dir = llava_fixtures.mllm_dir

FLOPS, BANDWIDTH = 1e11, 1e10  # fixed machine rates: no measuring


def _plan(cfg):
    from tunery.train.dry_run import build_plan

    return build_plan(cfg, flops=FLOPS, bandwidth=BANDWIDTH)


def test_vlm_estimate_counts_the_language_models_layers(llava4, tmp_path):
    """LLaVA nests its text sizes under text_config (2 layers, hidden 64, intermediate 128): the estimate
    used to read 0 layers and 0 hidden size there, so activations were 0 and the checkpointing plan said
    "0 of 0 layers"."""
    from tunery.train.estimate import estimate_run

    cfg = train_config(llava4, tmp_path / "o", disable_gradient_checkpointing=False)
    est = estimate_run(cfg, flops=FLOPS, bandwidth=BANDWIDTH)
    assert est.layers == 2 and est.checkpointed_layers == 2
    assert est.activations > 0 and est.layer_activations > 0 and est.logits > 0


def test_media_dry_run_has_no_checkpointing_plan_training_would_not_follow(llava4, mllm_dir, tmp_path):
    """Training checkpoints every layer of a media run (train/sft.py skips the plan): the dry run says the same."""
    cfg = train_config(llava4, tmp_path / "o", dataset="mllm_demo", dataset_dir=str(mllm_dir), template="auto",
                       cutoff_len=512, overwrite_cache=True, disable_gradient_checkpointing=False, dry_run=True)
    plan = _plan(cfg)
    text = "\n".join(plan.lines())
    assert plan.examples == 6
    assert "gradient checkpointing on" not in text
    assert plan.estimate.checkpointed_layers == plan.estimate.layers == 2


def test_text_dry_run_logs_the_adapter_setup_once(tiny_chatml_model, tmp_path):
    """The checkpointing plan and the estimate each rebuild a weightless model with the adapter: the LoRA
    and parameter lines were printed three times by one dry run (and by each training run)."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("red", "blue", "green", "white")]
    (data / "words.json").write_text(json.dumps(rows), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"words": {"file_name": "words.json"}}), encoding="utf-8")
    cfg = train_config(tiny_chatml_model, tmp_path / "o", dataset="words", dataset_dir=str(data), template="auto",
                       cutoff_len=64, disable_gradient_checkpointing=False, dry_run=True)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    adapter_logger = logging.getLogger("tunery.model.adapter")
    adapter_logger.addHandler(handler)
    try:
        plan = _plan(cfg)
    finally:
        adapter_logger.removeHandler(handler)
    assert any("gradient checkpointing on" in line for line in plan.lines())  # the plan did run
    assert sum(m.startswith("LoRA rank") for m in messages) == 1, messages
    assert sum(m.startswith("trainable params") for m in messages) == 1, messages
    assert adapter_logger.level == logging.NOTSET  # quieted only for the plan's own estimates
