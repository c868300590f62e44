"""Every point of docs/tutorial.md's "Known differences" list, checked against the code.

When one of these fails, the behaviour changed: update the list in docs/tutorial.md (and the matching
sentence in docs/tutorial_zh.md) together with the test. The slow end-to-end versions of the tutorial's
commands live in test_seed_tutorial.py; these stay small (config parsing, the tiny model).
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import pytest
import torch
import trl

from tests.integration.test_seed_tutorial import tunery_logs
from tunery.cli.main import main as tunery
from tunery.config import ModelArguments, load_config
from tunery.data.template import get_template
from tunery.errors import ConfigError
from tunery.inference.metrics import BUILTIN_METRICS, parse_metrics
from tunery.model.loader import load_tokenizer
from tunery.train.stages import STAGES
from tunery.webui.runner import RunManager

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "tunery"
DOC = (REPO / "docs" / "tutorial.md").read_text(encoding="utf-8")




def refused(command: str, tokens: list[str], tmp_path: Path, capsys) -> str:
    """Run ``tunery command tokens``; assert exit 2 with one error line and nothing written; return the line."""
    out = tmp_path / "out"
    code = tunery([command, *tokens, "--output_dir", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tunery: error:")]
    assert code == 2 and len(errors) == 1, err
    assert "Traceback" not in err
    assert not out.exists()
    return errors[0]


def test_the_doc_lists_the_differences_checked_here():
    section = DOC[DOC.index("## Known differences"):]
    for phrase in ("refused, not ignored", "`shift_attn`", "Adam-mini, BAdam, Muon and the DFT, ASFT and EAFT losses are supported", "`--do_train False` alone is an error",
                   "Tunery's own PPO loop", "kto_pair", "left unset means `auto`", "without a GPU train in fp32",
                   "`scores`", "`llamaboard_config.yaml` is never written", "fetched from the Hugging Face Hub"):
        assert phrase in section, phrase
    assert "xfail" not in section  # every point is true today


# --- Features Tunery does not have are refused, not ignored ------------------------------------
@pytest.mark.parametrize("key,feature", [
    ("mixture_of_depths", "Mixture-of-Depths"), ("use_kt", "KTransformers"),
])
def test_lf_features_tunery_lacks_are_refused(key, feature, tmp_path, capsys):
    value = "true"
    line = refused("train", [f"--{key}", value], tmp_path, capsys)
    assert f"'{key}: {value}' cannot be honoured" in line and feature.lower() in line.lower(), line


@pytest.mark.parametrize("key", ["enable_liger_kernel", "fp8", "pure_bf16", "loftq_init", "use_unsloth", "use_unsloth_gc"])
def test_cuda_only_features_are_refused_without_cuda(key, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = refused("train", [f"--{key}", "true"], tmp_path, capsys)
    assert f"{key} needs CUDA (" in line, line
    assert "`fp8 needs CUDA (...)`" in DOC


def test_oft_shift_attn_and_llama_pro_are_read(tmp_path):
    cfg, _ = load_config("train", ["--finetuning_type", "oft", "--oft_block_size", "16", "--shift_attn", "true",
                                   "--use_llama_pro", "true", "--dataset", "d", "--output_dir", str(tmp_path)])
    assert cfg.finetuning.finetuning_type == "oft" and cfg.finetuning.oft.oft_block_size == 16
    assert cfg.model.shift_attn is True and cfg.finetuning.use_llama_pro is True


@pytest.mark.parametrize("method", ["bnb", "bitsandbytes", "hqq", "eetq", "gptq", "awq"])
def test_quantization_methods_tunery_reads(method, tmp_path):
    cfg, _ = load_config("train", ["--quantization_method", method, "--dataset", "d", "--output_dir", str(tmp_path)])
    assert cfg.model.quantization.quantization_method == ("bnb" if method == "bitsandbytes" else method)


def test_aqlm_is_refused(tmp_path, capsys):
    line = refused("train", ["--quantization_method", "aqlm", "--dataset", "d"], tmp_path, capsys)
    assert "'quantization_method' got 'aqlm'" in line


# --- Not implemented, not refused yet ------------------------------------------------------------
# --- --do_train False alone is an error ----------------------------------------------------------
def test_do_train_false_alone_is_refused(tmp_path, capsys):
    line = refused("train", ["--do_train", "False", "--dataset", "d"], tmp_path, capsys)
    assert "nothing to do: do_train is false and neither do_eval nor do_predict is set" in line


@pytest.mark.parametrize("flag", ["--do_eval", "--do_predict"])
def test_do_train_false_with_eval_or_predict_is_accepted(flag, tmp_path):
    cfg, _ = load_config("train", ["--do_train", "False", flag, "True", "--eval_dataset", "d",
                                   "--output_dir", str(tmp_path)])
    assert not cfg.training.do_train


# --- ppo is Tunery's own, needs a reward model; kto_pair refused ---------------------------------
def test_ppo_is_tunerys_own_stage():
    assert not hasattr(trl, "PPOTrainer")  # nothing to stand on in trl 1.x
    assert "ppo" in STAGES and type(STAGES["ppo"]).__module__ == "tunery.train.ppo"


def test_ppo_without_reward_model_is_refused(tmp_path, capsys):
    line = refused("train", ["--stage", "ppo", "--dataset", "d"], tmp_path, capsys)
    assert "stage ppo needs a reward_model" in line


def test_ppo_with_reward_model_is_accepted(tmp_path):
    cfg, _ = load_config("train", ["--stage", "ppo", "--reward_model", "saves/rm", "--dataset", "d",
                                   "--output_dir", str(tmp_path)])
    assert cfg.finetuning.stage == "ppo"


def test_kto_pair_is_refused(tmp_path, capsys):
    line = refused("train", ["--stage", "dpo", "--pref_loss", "kto_pair", "--dataset", "d"], tmp_path, capsys)
    assert "pref_loss kto_pair was removed from trl" in line


# --- template: unset means auto; a mismatching builtin is reported ------------------------------
def test_template_unset_means_auto_and_mismatch_is_reported(tiny_chatml_model):
    tok = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_chatml_model)))
    with tunery_logs() as logs:
        assert get_template(None, tok).name == "auto"
        get_template("llama3", tok)
    warnings = [r.getMessage() for r in logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "template 'llama3' renders differently from this tokenizer's own chat template" in warnings[0]
    assert "<|im_start|>" in warnings[0]  # the difference is shown
    assert warnings[0].count("renders differently") == 1  # the sentence once, then the diff


def test_template_unset_without_a_chat_template_means_default(tiny_chatml_model):
    tok = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_chatml_model)))
    tok.chat_template = None
    assert get_template(None, tok).name == "default"


# --- fp16/bf16 without a GPU ---------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without a GPU")
@pytest.mark.parametrize("flag", ["fp16", "bf16"])
def test_half_precision_without_gpu_trains_in_fp32(flag, tmp_path):
    with tunery_logs() as logs:
        cfg, _ = load_config("train", [f"--{flag}", "True", "--dataset", "d", "--output_dir", str(tmp_path)])
    assert not cfg.training.fp16 and not cfg.training.bf16
    assert any(f"{flag} requested but no GPU is present: training in fp32 instead" in r.getMessage() for r in logs)


# --- prediction scores every sample; metrics chosen and plugged in -------------------------------
def test_builtin_metrics_and_unknown_metric():
    assert set(BUILTIN_METRICS) >= {"bleu", "rouge", "exact_match", "f1", "accuracy"}
    assert parse_metrics("bleu,rouge,exact_match,f1,accuracy") == ["bleu", "rouge", "exact_match", "f1", "accuracy"]
    with pytest.raises(ConfigError, match="unknown metric 'foo'"):
        parse_metrics("bleu,foo")


def test_predict_writes_per_sample_scores_and_no_llamaboard_config(tiny_chatml_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": "1 千米等于多少米？", "input": "", "output": "1000 米"},
            {"instruction": "Say hi", "input": "", "output": "hi"}]
    (data / "qa.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.json"}}), encoding="utf-8")
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text("def label_len(prediction, label):\n    return {'label_len': float(len(label))}\n")
    out = tmp_path / "predict"
    code = tunery(["predict", "--model_name_or_path", str(tiny_chatml_model), "--dataset_dir", str(data),
                   "--eval_dataset", "qa", "--output_dir", str(out), "--max_new_tokens", "2",
                   "--metrics", "bleu,rouge,f1", "--compute_metrics", f"{plugin}:label_len"])
    assert code == 0
    lines = (out / "generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    got = [json.loads(line) for line in lines]
    assert [r["label"] for r in got] == ["1000 米", "hi"]
    for row in got:
        assert {"prompt", "predict", "label", "scores"} <= set(row)
        assert set(row["scores"]) == {"bleu-4", "rouge-1", "rouge-2", "rouge-l", "f1", "label_len"}
    assert [r["scores"]["label_len"] for r in got] == [len("1000 米"), 2.0]
    results = json.loads((out / "predict_results.json").read_text())
    assert results["predict_label_len"] == pytest.approx((len("1000 米") + 2) / 2)
    assert (out / "training_args.yaml").is_file()
    assert not (out / "llamaboard_config.yaml").exists()


def test_nothing_writes_llamaboard_config_and_the_webui_writes_training_args():
    assert [p for p in SRC.rglob("*.py") if "llamaboard_config" in p.read_text()] == []
    assert inspect.signature(RunManager.start).parameters["config_name"].default == "training_args.yaml"


# --- benchmark data comes from the Hub; sample tasks ship with Tunery ---------------------------
@pytest.mark.parametrize("task,name", [("mmlu_test", "mmlu"), ("ceval_validation", "ceval"), ("cmmlu_test", "cmmlu")])
def test_benchmarks_offline_are_one_clear_error(task, name, tiny_chatml_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    code = tunery(["eval", "--model_name_or_path", str(tiny_chatml_model), "--template", "fewshot", "--task", task,
                   "--n_shot", "5", "--save_dir", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tunery: error:")]
    assert code == 2 and len(errors) == 1, err
    assert f"task '{name}' is not on this machine and the hub is offline" in errors[0]
    assert "CSV" in err  # the hint says where to put the files
    assert not (tmp_path / "eval").exists()


def test_sample_tasks_ship_with_tunery():
    for name in ("sample_en", "sample_zh"):
        folder = SRC / "resources" / "eval_tasks" / name
        assert (folder / "mapping.json").is_file()
        assert list((folder / "test").glob("*.csv")) and list((folder / "dev").glob("*.csv"))
