"""``tunery eval`` end to end on a tiny model: files written, chat-template prompts, a LoRA adapter
changes the scores, clear errors for lm-eval missing and an already used save_dir."""

from __future__ import annotations

import json
import sys

import pytest

from tunery.cli.main import main as cli_main
from tunery.config import parse_config
from tunery.errors import DependencyError, ResourceError
from tunery.evaluation.workflow import run_eval


def config(model, save_dir, **extra):
    raw = {"model_name_or_path": str(model), "task": "sample_en_test", "n_shot": 1, "batch_size": 8,
           "max_samples": 2, "template": "fewshot", "save_dir": str(save_dir), **extra}
    return parse_config("eval", raw)


def predictions(folder):
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def test_cli_writes_results_log_and_predictions(tiny_chatml_model, tmp_path, capsys):
    save = tmp_path / "out"
    code = cli_main(["eval", "--model_name_or_path", str(tiny_chatml_model), "--task", "sample_zh_test", "--lang", "zh",
                     "--n_shot", "2", "--max_samples", "3", "--template", "fewshot", "--save_dir", str(save)])
    assert code == 0
    results = json.loads((save / "results.json").read_text(encoding="utf-8"))
    assert results["num_questions"] == 12  # 4 subjects x max_samples 3
    assert set(results["categories"]) == {"STEM", "Social Sciences", "Humanities", "Other"}
    assert results["settings"]["template"] == "fewshot" and results["settings"]["n_shot"] == 2
    assert (save / "results.log").read_text(encoding="utf-8").splitlines()[2].startswith("Average")
    assert "Average" in capsys.readouterr().out
    progress = [json.loads(line) for line in (save / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert progress[-1]["current_steps"] == progress[-1]["total_steps"] == 12 and progress[-1]["stage"] == "eval"
    assert progress[-1]["percentage"] == 100.0
    rows = predictions(save)
    assert len(rows) == 12
    first = rows[0]
    assert first["prompt"].startswith("以下是关于中国历史的单项选择题") and first["prompt"].endswith("答案：")
    assert first["prompt"].count("答案：") == 3  # two shots with answers, then the question
    assert set(first["choices"]) == {"A", "B", "C", "D"} and first["gold"] in "ABCD"
    assert first["predicted"] == max(first["probabilities"], key=first["probabilities"].get)
    assert first["correct"] == (first["predicted"] == first["gold"])
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(r["correct"] for r in rows) == results["correct"]


def test_chat_template_wraps_the_prompt_as_a_user_turn(tiny_chatml_model, tmp_path):
    run_eval(config(tiny_chatml_model, tmp_path / "chat", template="auto"))
    first = predictions(tmp_path / "chat")[0]
    assert first["prompt"].startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
    )
    assert first["prompt"].endswith("Answer:<|im_end|>\n<|im_start|>assistant\n")
    settings = json.loads((tmp_path / "chat" / "results.json").read_text())["settings"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    assert [tokenizer.decode([i]) for i in settings["letter_token_ids"]] == ["A", "B", "C", "D"]


def test_same_scores_twice_and_a_lora_adapter_changes_them(tiny_chatml_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_chatml_model, dtype=torch.float32)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))  # random B: a trained-looking adapter
    lora.save_pretrained(tmp_path / "adapter")

    run_eval(config(tiny_chatml_model, tmp_path / "base1"))
    run_eval(config(tiny_chatml_model, tmp_path / "base2"))
    run_eval(config(tiny_chatml_model, tmp_path / "tuned", adapter_name_or_path=str(tmp_path / "adapter")))
    base1, base2, tuned = (predictions(tmp_path / n) for n in ("base1", "base2", "tuned"))
    assert [r["token_probabilities"] for r in base1] == [r["token_probabilities"] for r in base2]
    assert [r["prompt"] for r in tuned] == [r["prompt"] for r in base1]
    relative_change = [
        max(abs(a / b - 1) for a, b in zip(t["token_probabilities"].values(), r["token_probabilities"].values()))
        for t, r in zip(tuned, base1)
    ]
    assert min(relative_change) > 0.01
    assert json.loads((tmp_path / "tuned" / "results.json").read_text())["settings"]["adapters"] == [
        str(tmp_path / "adapter")
    ]
    # the adapter run scores what the peft model itself predicts
    lora.eval()
    tuned_first = tuned[0]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    ids = tokenizer(tuned_first["prompt"])["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(lora(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    letters = json.loads((tmp_path / "tuned" / "results.json").read_text())["settings"]["letter_token_ids"]
    assert list(tuned_first["token_probabilities"].values()) == pytest.approx(probs[letters].tolist(), abs=1e-5)


def test_missing_lm_eval_is_a_dependency_error(tiny_chatml_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(DependencyError) as err:
        run_eval(config(tiny_chatml_model, tmp_path / "h", task=None, harness_tasks="arc_easy"))
    assert "tunery[eval]" in str(err.value)


def test_used_save_dir_is_refused_before_loading(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ResourceError, match="save_dir"):
        run_eval(config("/nonexistent/model", tmp_path))


def test_nothing_to_evaluate_is_a_config_error():
    from tunery.errors import ConfigError

    with pytest.raises(ConfigError, match="nothing to evaluate"):
        run_eval(parse_config("eval", {"model_name_or_path": "x"}))
    with pytest.raises(ConfigError, match="n_shot"):
        run_eval(parse_config("eval", {"model_name_or_path": "x", "task": "sample_en_test", "n_shot": -1}))


def test_a_two_choice_question_is_decided_among_its_own_letters():
    from tunery.evaluation.scorer import LetterScores
    from tunery.evaluation.tasks import Question
    from tunery.evaluation.workflow import _record

    question = Question(subject="s", question="yes or no?", choices=("yes", "no"), answer="B")
    score = LetterScores(token_probs=[0.1, 0.3, 0.5, 0.1], choice_probs=[0.1, 0.3, 0.5, 0.1], predicted=2)
    request = {"question": question, "subject": "s", "subject_name": "s", "category": "Other", "n_shot": 0,
               "prompt": "p"}
    rec = _record(request, score, "ABCD")
    assert rec["predicted"] == "B" and rec["correct"] is True
    assert rec["probabilities"] == {"A": 0.25, "B": 0.75}


def test_default_system_replaces_the_chat_templates_own(tiny_chatml_model):
    from transformers import AutoTokenizer

    from tunery.config import DataArguments
    from tunery.evaluation.encoding import make_encoder
    from tunery.evaluation.prompts import get_style

    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    encoder = make_encoder("auto", tokenizer, DataArguments(default_system="Answer with one letter."), get_style("en"))
    text, ids = encoder.encode("Q?\nAnswer:")
    assert text == ("<|im_start|>system\nAnswer with one letter.<|im_end|>\n<|im_start|>user\nQ?\nAnswer:<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    plain = make_encoder("fewshot", tokenizer, DataArguments(), get_style("en"))
    assert plain.encode("Q?\nAnswer:") == ("Q?\nAnswer:", tokenizer("Q?\nAnswer:")["input_ids"])
    assert plain.letter_separator == " " and encoder.letter_separator == ""
