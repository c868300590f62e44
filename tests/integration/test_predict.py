"""Batch prediction: files written, hand-checked scores (Chinese too), OOM fallback, plug-in metrics, CLI."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from tests.unit.scripted_model import script_model
from tunery.cli.main import main as tunery_main
from tunery.config import parse_config
from tunery.errors import ResourceError
from tunery.inference import load_engine
from tunery.inference.predict import generate_all, run_predict

ROWS = [
    {"instruction": "中国的首都是哪里？", "input": "", "output": "中国的首都是北京。"},
    {"instruction": "Say it again.", "input": "北京", "output": "北京是中国的首都"},
    {"instruction": "No reference here.", "input": "", "output": "London"},
]


@pytest.fixture()
def dataset_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo.json").write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"demo": {"file_name": "demo.json"}}), encoding="utf-8")
    return data


def _cfg(model_dir, dataset_dir, out, **extra):
    raw = {"model_name_or_path": str(model_dir), "eval_dataset": "demo", "dataset_dir": str(dataset_dir),
           "output_dir": str(out), "do_sample": False, "max_new_tokens": 8, "per_device_eval_batch_size": 2,
           "report_to": "none", **extra}
    return parse_config("predict", raw)


@pytest.fixture()
def beijing_engine(tiny_chatml_model, dataset_dir, tmp_path):
    """Engine whose model always answers 北京是中国的首都 and then <|im_end|>."""
    engine = load_engine(_cfg(tiny_chatml_model, dataset_dir, tmp_path / "unused"))
    tok = engine.tokenizer
    last = engine.prompt_ids([{"role": "user", "content": "x"}])[-1]
    script_model(engine.model, [last, *tok.encode("北京是中国的首都"), tok.convert_tokens_to_ids("<|im_end|>")])
    return engine


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_files_and_hand_checked_scores(tiny_chatml_model, dataset_dir, tmp_path, beijing_engine):
    out = tmp_path / "out"
    out.mkdir()
    (out / "all_results.json").write_text(json.dumps({"train_loss": 1.5}))  # written earlier by training
    cfg = _cfg(tiny_chatml_model, dataset_dir, out)
    results = run_predict(cfg, engine=beijing_engine, metrics=["bleu", "rouge", "exact_match"], progress=False)

    rows = _read_jsonl(out / "generated_predictions.jsonl")
    assert [r["predict"] for r in rows] == ["北京是中国的首都"] * 3
    assert [r["label"] for r in rows] == [r["output"] for r in ROWS]
    assert rows[0]["prompt"].endswith("<|im_start|>user\n中国的首都是哪里？<|im_end|>\n<|im_start|>assistant\n")
    # row 0: values worked out in tests/unit/inference/test_metrics.py::test_chinese_bleu_rouge_hand_checked
    bleu0 = 100 * math.exp(1 - 6 / 5) * (1 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25
    assert rows[0]["scores"]["bleu-4"] == pytest.approx(bleu0, abs=1e-3)
    assert rows[0]["scores"]["rouge-1"] == pytest.approx(100 * 10 / 11, abs=1e-3)
    assert rows[0]["scores"]["rouge-l"] == pytest.approx(100 * 6 / 11, abs=1e-3)
    assert rows[1]["scores"] == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0,
                                 "exact_match": 100.0}
    assert rows[2]["scores"] == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "exact_match": 0.0}
    progress = _read_jsonl(out / "trainer_log.jsonl")  # the run log the web UI follows
    assert progress[-1]["current_steps"] == progress[-1]["total_steps"] == 3
    assert progress[-1]["stage"] == "predict" and progress[-1]["percentage"] == 100.0

    assert results["predict_bleu-4"] == pytest.approx((bleu0 + 100) / 3, abs=1e-3)
    assert results["predict_rouge-2"] == pytest.approx((100 * 4 / 9 + 100) / 3, abs=1e-3)
    assert results["predict_exact_match"] == pytest.approx(100 / 3, abs=1e-3)
    assert results["predict_samples"] == 3 and results["predict_samples_per_second"] > 0
    assert json.loads((out / "predict_results.json").read_text()) == results
    merged = json.loads((out / "all_results.json").read_text())
    assert merged["train_loss"] == 1.5 and merged["predict_rouge-l"] == results["predict_rouge-l"]


def test_custom_metric_plugin(tiny_chatml_model, dataset_dir, tmp_path, beijing_engine):
    plugin = tmp_path / "plug.py"
    plugin.write_text("def starts_with_beijing(prediction, label):\n    return float(label.startswith('北京'))\n")
    cfg = _cfg(tiny_chatml_model, dataset_dir, tmp_path / "o")
    results = run_predict(cfg, engine=beijing_engine, metrics=["f1"], compute_metrics=f"{plugin}:starts_with_beijing",
                          progress=False)
    assert results["predict_starts_with_beijing"] == pytest.approx(1 / 3, abs=1e-4)
    assert "predict_bleu-4" not in results
    rows = _read_jsonl(tmp_path / "o" / "generated_predictions.jsonl")
    assert [r["scores"]["starts_with_beijing"] for r in rows] == [0.0, 1.0, 0.0]


class _OomAbove:
    """Wraps an engine: batches larger than ``limit`` fail the way CUDA does when memory runs out."""

    def __init__(self, engine, limit):
        self.engine, self.limit, self.sizes = engine, limit, []

    def batch_generate(self, prompts, **gen):
        self.sizes.append(len(prompts))
        if len(prompts) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.engine.batch_generate(prompts, **gen)


def test_out_of_memory_halves_the_batch(tiny_chatml_model, dataset_dir, tmp_path, caplog):
    engine = load_engine(_cfg(tiny_chatml_model, dataset_dir, tmp_path))
    prompts = [engine.prompt_ids([{"role": "user", "content": w}]) for w in ("a", "bb cc", "dd ee ff", "g", "hh")]
    expected = [r.text for r in generate_all(engine, prompts, batch_size=1, progress=False)]
    flaky = _OomAbove(engine, limit=2)
    with caplog.at_level(logging.WARNING, logger="tunery"):
        got = generate_all(flaky, prompts, batch_size=8, progress=False)
    assert [r.text for r in got] == expected  # same replies, in input order
    assert flaky.sizes[:3] == [5, 4, 2] and max(flaky.sizes[3:]) <= 2
    assert "retrying with batch size 2" in caplog.text
    with pytest.raises(ResourceError, match="one sample at a time"):
        generate_all(_OomAbove(engine, limit=0), prompts, batch_size=4, progress=False)


def test_tunery_predict_cli(tiny_chatml_model, dataset_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = tunery_main(["predict", "--model_name_or_path", str(tiny_chatml_model), "--eval_dataset", "demo",
                      "--dataset_dir", str(dataset_dir), "--output_dir", str(out), "--do_sample", "false",
                      "--max_new_tokens", "6", "--per_device_eval_batch_size", "2", "--report_to", "none"])
    assert rc == 0
    results = json.loads((out / "predict_results.json").read_text())
    for key in ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_runtime",
                "predict_samples_per_second"):
        assert key in results
    assert "predict_bleu-4 = " in capsys.readouterr().out
    rows = _read_jsonl(out / "generated_predictions.jsonl")
    assert len(rows) == 3 and all(set(r) == {"prompt", "predict", "label", "scores"} for r in rows)

    # the same run one sample at a time gives the same greedy predictions (left padding is exact)
    rc = tunery_main(["predict", "--model_name_or_path", str(tiny_chatml_model), "--eval_dataset", "demo",
                      "--dataset_dir", str(dataset_dir), "--output_dir", str(tmp_path / "one"), "--do_sample", "false",
                      "--max_new_tokens", "6", "--per_device_eval_batch_size", "1", "--report_to", "none"])
    assert rc == 0
    assert [r["predict"] for r in _read_jsonl(tmp_path / "one" / "generated_predictions.jsonl")] == \
        [r["predict"] for r in rows]


def test_predict_without_dataset_is_a_clear_error(tiny_chatml_model, tmp_path, capsys):
    rc = tunery_main(["predict", "--model_name_or_path", str(tiny_chatml_model), "--output_dir", str(tmp_path)])
    assert rc == 2
    assert "prediction needs a dataset" in capsys.readouterr().err


class _InterruptAfter:
    """Wraps an engine: the second batch is cut off by Ctrl-C (KeyboardInterrupt) before it returns."""

    def __init__(self, engine, batches):
        self.engine, self.batches, self.calls = engine, batches, 0
        self.tokenizer = engine.tokenizer

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def batch_generate(self, prompts, **gen):
        self.calls += 1
        if self.calls > self.batches:
            raise KeyboardInterrupt
        return self.engine.batch_generate(prompts, **gen)


def test_predictions_are_written_as_they_finish_and_a_rerun_continues(tiny_chatml_model, dataset_dir, tmp_path,
                                                                      beijing_engine):
    out = tmp_path / "out"
    cfg = _cfg(tiny_chatml_model, dataset_dir, out, per_device_eval_batch_size=2)
    flaky = _InterruptAfter(beijing_engine, batches=1)
    with pytest.raises(KeyboardInterrupt):
        run_predict(cfg, engine=flaky, metrics=["exact_match"], progress=False)
    kept = _read_jsonl(out / "generated_predictions.jsonl")
    assert len(kept) == 2  # the first batch (the two longest prompts) survived the interrupt
    assert all(r["predict"] == "北京是中国的首都" and "index" in r for r in kept)
    assert not (out / "predict_results.json").exists()
    first_indexes = {r["index"] for r in kept}

    counting = _InterruptAfter(beijing_engine, batches=99)
    results = run_predict(cfg, engine=counting, metrics=["exact_match"], progress=False)
    assert counting.calls == 1  # only the missing row was generated
    rows = _read_jsonl(out / "generated_predictions.jsonl")
    assert [r["label"] for r in rows] == [r["output"] for r in ROWS]  # dataset order again, no index
    assert all(set(r) == {"prompt", "predict", "label", "scores"} for r in rows)
    assert [r["scores"]["exact_match"] for r in rows] == [0.0, 100.0, 0.0]
    assert results["predict_samples"] == 3 and results["predict_exact_match"] == pytest.approx(100 / 3, abs=1e-3)
    assert len(first_indexes) == 2
    progress = _read_jsonl(out / "trainer_log.jsonl")
    assert progress[-1]["current_steps"] == 3


def test_a_finished_file_is_not_taken_for_an_interrupted_run(tiny_chatml_model, dataset_dir, tmp_path, beijing_engine):
    out = tmp_path / "out"
    cfg = _cfg(tiny_chatml_model, dataset_dir, out)
    run_predict(cfg, engine=beijing_engine, metrics=["exact_match"], progress=False)
    counting = _InterruptAfter(beijing_engine, batches=99)
    run_predict(cfg, engine=counting, metrics=["exact_match"], progress=False)
    assert counting.calls == 2  # all three rows again, in batches of two
    assert len(_read_jsonl(out / "generated_predictions.jsonl")) == 3
