"""The few-shot prompt text is exactly the format docs/eval.md documents (en and zh, 0 and 5 shots)."""

from __future__ import annotations

import pytest

from tunery.errors import ConfigError
from tunery.evaluation.prompts import build_prompt, select_shots
from tunery.evaluation.tasks import Question


def q(text: str, choices: tuple[str, ...], answer: str = "A") -> Question:
    return Question(subject="s", question=text, choices=choices, answer=answer)


QUESTION_EN = q("What is 2 + 2?", ("3", "4", "5", "6"), "B")
SHOTS_EN = [q(f"Shot {i}?", (f"a{i}", f"b{i}", f"c{i}", f"d{i}"), "ABCDAB"[i]) for i in range(6)]
QUESTION_ZH = q("中国的首都是哪座城市？", ("上海", "北京", "广州", "南京"), "B")
SHOTS_ZH = [q(f"例题{i}？", (f"甲{i}", f"乙{i}", f"丙{i}", f"丁{i}"), "DCBAD"[i]) for i in range(5)]


def test_zero_shot_english_prompt_is_exact():
    assert build_prompt("elementary mathematics", [], QUESTION_EN, "en") == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n"
        "\n"
        "What is 2 + 2?\n"
        "A. 3\n"
        "B. 4\n"
        "C. 5\n"
        "D. 6\n"
        "Answer:"
    )


def test_five_shot_english_prompt_is_exact():
    prompt = build_prompt("algebra", select_shots(SHOTS_EN, QUESTION_EN, 5), QUESTION_EN, "en")
    shots = "".join(
        f"Shot {i}?\nA. a{i}\nB. b{i}\nC. c{i}\nD. d{i}\nAnswer: {'ABCDA'[i]}\n\n" for i in range(5)
    )
    assert prompt == (
        "The following are multiple choice questions (with answers) about algebra.\n\n"
        + shots
        + "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    )
    assert "Shot 5?" not in prompt  # only the first n_shot dev questions


def test_zero_shot_chinese_prompt_is_exact():
    assert build_prompt("地理", [], QUESTION_ZH, "zh") == (
        "以下是关于地理的单项选择题，请直接给出正确答案的选项。\n"
        "\n"
        "中国的首都是哪座城市？\n"
        "A. 上海\n"
        "B. 北京\n"
        "C. 广州\n"
        "D. 南京\n"
        "答案："
    )


def test_five_shot_chinese_prompt_is_exact():
    prompt = build_prompt("地理", select_shots(SHOTS_ZH, QUESTION_ZH, 5), QUESTION_ZH, "zh")
    shots = "".join(f"例题{i}？\nA. 甲{i}\nB. 乙{i}\nC. 丙{i}\nD. 丁{i}\n答案：{'DCBAD'[i]}\n\n" for i in range(5))
    assert prompt == (
        "以下是关于地理的单项选择题，请直接给出正确答案的选项。\n\n"
        + shots
        + "中国的首都是哪座城市？\nA. 上海\nB. 北京\nC. 广州\nD. 南京\n答案："
    )


def test_a_dev_question_is_never_its_own_shot():
    shots = select_shots(SHOTS_EN, SHOTS_EN[1], 3)
    assert [s.question for s in shots] == ["Shot 0?", "Shot 2?", "Shot 3?"]


def test_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError, match="fr"):
        build_prompt("x", [], QUESTION_EN, "fr")
