"""``tunery data check|preview|render`` on the reference datasets and a tiny ChatML model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tunery.cli.main import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))


def lf_data(reference_dir) -> str:
    return str(reference_dir / "lf" / "data")


def test_render_prints_exactly_the_chat_template_text(tmp_path, tiny_chatml_model):
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "2+2?"}]
    (tmp_path / "m.json").write_text(json.dumps(messages))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "tunery", "data", "render", "--template", "auto",
                          "--model_name_or_path", str(tiny_chatml_model), "--messages", str(tmp_path / "m.json"),
                          "--add_generation_prompt"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = AutoTokenizer.from_pretrained(tiny_chatml_model).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert out.stdout == expected


def test_render_bad_messages_file_is_a_user_error(tmp_path, tiny_chatml_model, capsys):
    (tmp_path / "m.json").write_text("{not json")
    code = main(["data", "render", "--model_name_or_path", str(tiny_chatml_model), "--messages",
                 str(tmp_path / "m.json")])
    assert code == 2 and "cannot read the messages" in capsys.readouterr().err


def test_check_reports_invalid_rows_and_length_stats(tmp_path, tiny_chatml_model, capsys):
    rows = [{"instruction": "What is the capital of France?", "output": "Paris."},
            {"instruction": "", "output": "orphan"},
            {"instruction": "Hello " * 50, "output": "Hi"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "d.json"}}))
    code = main(["data", "check", "--dataset_dir", str(tmp_path), "--model_name_or_path", str(tiny_chatml_model),
                 "--cutoff_len", "64", "--json"])
    assert code == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["name"], report["status"], report["total"], report["valid"], report["invalid"]) == \
        ("mine", "invalid_rows", 3, 2, 1)
    assert report["problems"][0]["row"] == 1 and report["problems"][0]["field"] == "instruction"
    assert report["problems"][0]["file"].endswith("d.json")
    lengths = report["lengths"]
    assert lengths["count"] == 2 and lengths["cut"] == 1 and lengths["share_cut"] == 0.5
    assert lengths["max"] > 64 >= lengths["p50"]


def test_check_all_reference_entries(reference_dir, capsys):
    code = main(["data", "check", "--dataset_dir", lf_data(reference_dir), "--max_samples", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "alpaca_en_demo (file:alpaca_en_demo.json): ok" in out
    assert "dpo_en_demo (file:dpo_en_demo.json): ok" in out
    assert "alpaca_en (hf_hub:llamafactory/alpaca_en): skipped" in out
    assert out.strip().endswith("all datasets valid")


def test_preview_gives_the_reason_check_gives_for_a_failed_row(tiny_chatml_model, tmp_path, capsys):
    (tmp_path / "img.json").write_text(json.dumps([{"instruction": "Describe <image>", "output": "A cat.",
                                                    "images": ["cat.png"]}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"img": {"file_name": "img.json", "columns": {
        "prompt": "instruction", "response": "output", "images": "images"}}}))
    Image.new("RGB", (8, 8), "red").save(tmp_path / "cat.png")  # the file exists: the model is what fails
    args = ["--dataset", "img", "--dataset_dir", str(tmp_path), "--model_name_or_path", str(tiny_chatml_model)]
    assert main(["data", "check", *args]) == 1
    check = capsys.readouterr().out
    reason = ("the example has images, but the model has no processor for them (a text-only model): the images "
              "would be silently left out")
    assert f"row 0 field 'images': {reason}" in check
    assert main(["data", "preview", *args]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith(f"0 tokens, 0 trained, failed: {reason} (field 'images') ===")


def test_preview_marks_trained_spans(reference_dir, tiny_chatml_model, capsys):
    code = main(["data", "preview", "--dataset", "identity", "--dataset_dir", lf_data(reference_dir),
                 "--model_name_or_path", str(tiny_chatml_model), "--num", "2", "--json"])
    assert code == 0
    previews = json.loads(capsys.readouterr().out)
    assert len(previews) == 2
    first = previews[0]
    assert first["text"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi")
    assert first["marked_text"].endswith("[[" + first["text"].split("<|im_start|>assistant\n")[-1].rstrip("\n")
                                         + "]]\n")
    assert len(first["input_ids"]) == len(first["labels"]) == first["num_tokens"]
    assert first["num_trained"] == sum(1 for x in first["labels"] if x != -100) > 0

    code = main(["data", "preview", "--dataset", "dpo_en_demo", "--dataset_dir", lf_data(reference_dir),
                 "--model_name_or_path", str(tiny_chatml_model), "--num", "1", "--stage", "dpo"])
    out = capsys.readouterr().out
    assert code == 0 and "(chosen)" in out and "(rejected)" in out and "[[" in out


def test_check_applies_the_training_truncation_policy(tmp_path, tiny_chatml_model, capsys):
    """FR2-04: a long prompt with a short reply is truncated (not dropped) and check says so, per row count."""
    rows = [{"instruction": "Read this: " + "the ferry leaves at noon. " * 30, "input": "When does it leave?",
             "output": "At noon."},
            {"instruction": "Say yes.", "output": "Yes."}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"ferry": {"file_name": "d.json"}}))
    code = main(["data", "check", "--dataset", "ferry", "--dataset_dir", str(tmp_path), "--model_name_or_path",
                 str(tiny_chatml_model), "--cutoff_len", "48", "--json"])
    assert code == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["total"], report["valid"], report["invalid"]) == (2, 2, 0)
    assert (report["truncated"], report["dropped"]) == (1, 0)
    assert report["lengths"]["cut"] == 1 and report["lengths"]["truncated"] == 1
    assert "training truncates 1 rows" in report["message"]


def test_check_reports_tools_the_template_cannot_show_and_counts_add_up(tmp_path, tiny_chatml_model, capsys):
    """FR2-06: tool schemas on a template without tool support make the row invalid; valid = rows - invalid."""
    tools = json.dumps([{"name": "set_alarm", "description": "Set an alarm",
                         "parameters": {"type": "object", "properties": {"at": {"type": "string"}}}}])
    rows = [{"conversations": [{"from": "human", "value": "Wake me at 7."},
                               {"from": "gpt", "value": "I will set it."}], "tools": tools},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "tools": ""}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"alarm": {
        "file_name": "d.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}}}))
    argv = ["data", "check", "--dataset", "alarm", "--dataset_dir", str(tmp_path), "--model_name_or_path",
            str(tiny_chatml_model), "--template", "auto"]
    assert main([*argv, "--json"]) == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["total"], report["valid"], report["invalid"]) == (2, 1, 1)
    (problem,) = report["problems"]
    assert problem["row"] == 0 and problem["field"] == "tools"
    assert "no tool support" in problem["reason"] and "template: qwen" in problem["reason"]
    # a builtin with a tool format renders the schemas: nothing to report
    assert main([*argv[:-1], "qwen", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["total"], report["valid"], report["invalid"]) == (2, 2, 0)


@pytest.fixture
def tokenizer_only(tmp_path, tiny_chatml_model):
    """The tiny model's tokenizer files alone: no config.json, no weights."""
    import shutil

    folder = tmp_path / "tokenizer-only"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_chatml_model / name).exists():
            shutil.copy(tiny_chatml_model / name, folder / name)
    assert not (folder / "config.json").exists()
    return folder


def test_data_commands_need_only_the_tokenizer_files(tmp_path, reference_dir, tiny_chatml_model, tokenizer_only,
                                                     capsys):
    """check, preview and render give the same answers from a tokenizer-only folder as from the model folder."""
    data = ["--dataset", "identity", "--dataset_dir", lf_data(reference_dir)]
    outputs = []
    for model in (tiny_chatml_model, tokenizer_only):
        assert main(["data", "check", *data, "--model_name_or_path", str(model), "--json"]) == 0
        check = json.loads(capsys.readouterr().out)
        assert main(["data", "preview", *data, "--model_name_or_path", str(model), "--num", "1", "--json"]) == 0
        preview = json.loads(capsys.readouterr().out)
        (tmp_path / "m.json").write_text(json.dumps([{"role": "user", "content": "Hi"}]))
        assert main(["data", "render", "--model_name_or_path", str(model), "--messages", str(tmp_path / "m.json"),
                     "--add_generation_prompt"]) == 0
        render = capsys.readouterr().out
        outputs.append((check[0]["lengths"], preview[0]["input_ids"], render))
    assert outputs[0] == outputs[1]
    assert outputs[1][2].startswith("<|im_start|>") and outputs[1][1]
