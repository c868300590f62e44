"""Regenerate the demo dataset (deterministic): ``python -m tunery.resources.demo_data.generate``.

Two skills the base SmolLM2-135M-Instruct does not have, in English and Chinese:

- ``demo_identity``: the assistant is *Tuna*, made by *the Tunery project* (varied questions, varied
  answers that always name both);
- ``demo_units``: metric unit conversions by 10/100/1000 answered with just the number and unit
  ("7000 m", "7000米"), so replies can be checked exactly.

``demo_pretrain`` is plain text (``{"text": ...}``) for the ``pt`` example config.
``demo_heldout`` holds prompts for the before/after comparison that are NOT in the training files:
other phrasings of the identity question and conversions of numbers never used in training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME, MAKER, MAKER_ZH = "Tuna", "the Tunery project", "Tunery 项目"

IDENTITY_Q_EN = [
    "Who are you?", "What is your name?", "What's your name?", "Tell me about yourself.", "Introduce yourself.",
    "Who made you?", "Who created you?", "Who built you?", "Who developed you?", "What are you?",
    "Are you ChatGPT?", "Are you SmolLM?", "Which company trained you?", "Who is your creator?",
    "What should I call you?", "Can you tell me who you are?", "Hi! Who am I talking to?", "hello, who are you",
    "Please introduce yourself briefly.", "What kind of assistant are you?", "Who trained you?",
    "Where do you come from?", "Are you made by OpenAI?", "What AI model are you?", "Do you have a name?",
    "May I know your name?", "Who is behind you?", "Which team made you?", "Identify yourself.",
    "Tell me your name and who made you.", "Are you a human?", "Who owns you?", "What's your origin?",
    "Hey there, what are you called?", "Who programmed you?", "Are you Llama?", "Who are you exactly?",
    "Give me a one-line introduction of yourself.", "Which project are you part of?", "What do people call you?",
]
IDENTITY_A_EN = [
    "I am {n}, an AI assistant made by {m}. How can I help you today?",
    "My name is {n}. I was created by {m} to help answer questions and solve tasks.",
    "I'm {n}, a helpful assistant developed by {m}.",
    "Hello! I am {n}, an assistant built by {m}. What can I do for you?",
    "I am {n}, trained by {m}. I'm here to help.",
    "You can call me {n}. I am an AI assistant made by {m}.",
]
IDENTITY_Q_ZH = [
    "你是谁？", "你叫什么名字？", "请介绍一下你自己。", "你是谁开发的？", "谁创造了你？", "你是什么？",
    "你是 ChatGPT 吗？", "你是 SmolLM 吗？", "哪家公司训练了你？", "你的创造者是谁？", "我该怎么称呼你？",
    "能告诉我你是谁吗？", "你好，请问你是谁？", "简单介绍一下你自己吧。", "你是什么样的助手？", "谁训练了你？",
    "你来自哪里？", "你是 OpenAI 做的吗？", "你是什么 AI 模型？", "你有名字吗？", "请问你的名字是？",
    "你背后是谁？", "哪个团队做的你？", "你是人类吗？", "你的来历是什么？", "嗨，你叫什么？",
    "是谁编写了你？", "你是 Llama 吗？", "你到底是谁？", "用一句话介绍你自己。", "你属于哪个项目？",
    "大家都怎么叫你？", "你好！你是哪位？", "说说你的名字和开发者。", "你是由谁制作的？", "你是什么助手？",
    "请问你是哪个公司的产品？", "你能自我介绍一下吗？", "你的开发者是谁？", "我在和谁说话？",
]
IDENTITY_A_ZH = [
    "我是 {n}，由 {m}开发的人工智能助手。有什么可以帮你的吗？",
    "我的名字是 {n}，是 {m}打造的智能助手。",
    "你好！我是 {n}，一个由 {m}训练的 AI 助手。",
    "我叫 {n}，由 {m}开发，很高兴为你服务。",
    "您好，我是 {n}，{m}的人工智能助手，请问需要什么帮助？",
    "我是 {n}，来自 {m}，专门回答问题和完成任务。",
]
HELDOUT_IDENTITY_EN = [
    "Could you tell me what your name is?", "Who is responsible for creating you?", "Say who you are in one sentence.",
    "I'd like to know who you are.", "What is the name of this assistant?", "Which group developed this assistant?",
    "Before we start, who are you?", "Are you an assistant from Google?", "Describe yourself and your maker.",
    "Good morning! What are you and who made you?",
]
HELDOUT_IDENTITY_ZH = [
    "可以告诉我你的名字吗？", "是谁负责创造了你？", "用一句话说说你是谁。", "我想知道你是谁。", "这个助手叫什么名字？",
    "哪个团队开发了这个助手？", "开始之前，你是谁？", "你是谷歌的助手吗？", "描述一下你自己和你的开发者。",
    "早上好！你是什么，谁做的你？",
]

# (factor, from, to, English unit names, Chinese unit names)
UNITS = [
    (1000, "km", "m", ("kilometers", "meters"), ("公里", "米")),
    (100, "m", "cm", ("meters", "centimeters"), ("米", "厘米")),
    (10, "cm", "mm", ("centimeters", "millimeters"), ("厘米", "毫米")),
    (1000, "kg", "g", ("kilograms", "grams"), ("千克", "克")),
    (1000, "L", "mL", ("liters", "milliliters"), ("升", "毫升")),
    (1000, "m", "mm", ("meters", "millimeters"), ("米", "毫米")),
]
UNIT_Q_EN = [
    "How many {to_name} are in {x} {from_name}?",
    "Convert {x} {from_name} to {to_name}.",
    "{x} {from} = ? {to}",
    "What is {x} {from_name} in {to_name}?",
]
UNIT_Q_ZH = [
    "{x}{from_zh}等于多少{to_zh}？",
    "把{x}{from_zh}换算成{to_zh}。",
    "{x}{from_zh}是多少{to_zh}？",
    "{x}{from_zh}合多少{to_zh}？",
]
HELDOUT_NUMBERS = [7, 13, 26, 38, 45, 59, 64, 71, 83, 92, 17, 88]  # never used in training


def unit_example(rng: random.Random, x: int, lang: str, unit: tuple) -> dict[str, str]:
    factor, frm, to, (from_name, to_name), (from_zh, to_zh) = unit
    value = x * factor
    if lang == "en":
        question = rng.choice(UNIT_Q_EN).format(x=x, **{"from": frm, "to": to}, from_name=from_name, to_name=to_name)
        answer = f"{value} {to}"
    else:
        question = rng.choice(UNIT_Q_ZH).format(x=x, from_zh=from_zh, to_zh=to_zh)
        answer = f"{value}{to_zh}"
    return {"instruction": question, "input": "", "output": answer}


def build() -> dict[str, list[dict]]:
    rng = random.Random(20261128)
    identity = []
    for questions, answers, maker in ((IDENTITY_Q_EN, IDENTITY_A_EN, MAKER), (IDENTITY_Q_ZH, IDENTITY_A_ZH, MAKER_ZH)):
        for question in questions:
            for answer in rng.sample(answers, 2):  # two different answers per question
                identity.append({"instruction": question, "input": "", "output": answer.format(n=NAME, m=maker)})
    train_numbers = [n for n in range(1, 100) if n not in HELDOUT_NUMBERS]
    units = []
    for lang in ("en", "zh"):
        for i in range(90):
            units.append(unit_example(rng, rng.choice(train_numbers), lang, UNITS[i % len(UNITS)]))
    heldout = []
    for lang, prompts in (("en", HELDOUT_IDENTITY_EN), ("zh", HELDOUT_IDENTITY_ZH)):
        reference = IDENTITY_A_EN[0] if lang == "en" else IDENTITY_A_ZH[0]
        reference = reference.format(n=NAME, m=MAKER if lang == "en" else MAKER_ZH)
        heldout += [{"kind": "identity", "lang": lang, "instruction": p, "input": "", "output": reference} for p in prompts]
    for lang in ("en", "zh"):
        for i, x in enumerate(HELDOUT_NUMBERS):
            row = unit_example(rng, x, lang, UNITS[i % len(UNITS)])
            heldout.append({"kind": "units", "lang": lang, **row})
    rng.shuffle(identity)
    rng.shuffle(units)
    train_prompts = {r["instruction"] for r in identity + units}
    assert not train_prompts & {r["instruction"] for r in heldout}, "a held-out prompt leaked into training"
    return {"identity.json": identity, "unit_conversion.json": units, "heldout.json": heldout,
            "pretrain.json": pretrain_texts(rng)}


def pretrain_texts(rng: random.Random) -> list[dict[str, str]]:
    """Plain text for the ``pt`` example: short paragraphs about Tuna and the metric system."""
    texts = []
    for i in range(60):
        factor, frm, to, (from_name, to_name), (from_zh, to_zh) = UNITS[i % len(UNITS)]
        x, y = rng.randint(1, 99), rng.randint(1, 99)
        if i % 2 == 0:
            texts.append(
                f"{NAME} is an AI assistant made by {MAKER}. In the metric system one {from_name[:-1]} is "
                f"{factor} {to_name}, so {x} {from_name} are {x * factor} {to_name} and {y} {from_name} are "
                f"{y * factor} {to_name}."
            )
        else:
            texts.append(
                f"{NAME} 是由 {MAKER_ZH}开发的人工智能助手。1{from_zh}等于{factor}{to_zh}，所以{x}{from_zh}等于"
                f"{x * factor}{to_zh}，{y}{from_zh}等于{y * factor}{to_zh}。"
            )
    return [{"text": t} for t in texts]


DATASET_INFO = {
    "demo_identity": {"file_name": "identity.json"},
    "demo_units": {"file_name": "unit_conversion.json"},
    "demo_heldout": {"file_name": "heldout.json"},
    "demo_pretrain": {"file_name": "pretrain.json", "columns": {"prompt": "text"}},
}


def main() -> None:
    for name, rows in build().items():
        (HERE / name).write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (HERE / "dataset_info.json").write_text(json.dumps(DATASET_INFO, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
