"""The exact few-shot prompt text (documented in docs/eval.md; tests pin it character for character).

English follows the original MMLU layout; Chinese the C-Eval/CMMLU one. Shots are the first
``n_shot`` dev questions of the same subject, in file order, each followed by its answer letter; the
question to score ends with the bare answer cue, so the next token is the letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunery.errors import ConfigError
from tunery.evaluation.tasks import LETTERS, Question


@dataclass(frozen=True)
class PromptStyle:
    header: str  # first paragraph; {subject} is the subject's display name
    answer_cue: str  # ends every question; the answer letter follows it
    letter_separator: str  # between the cue and the letter in a plain-text prompt


STYLES = {
    "en": PromptStyle(
        header="The following are multiple choice questions (with answers) about {subject}.",
        answer_cue="Answer:",
        letter_separator=" ",
    ),
    "zh": PromptStyle(
        header="以下是关于{subject}的单项选择题，请直接给出正确答案的选项。",
        answer_cue="答案：",
        letter_separator="",
    ),
}


def get_style(lang: str) -> PromptStyle:
    if lang not in STYLES:
        raise ConfigError(f"unknown prompt language '{lang}'", hint=f"set lang to one of: {', '.join(STYLES)}")
    return STYLES[lang]


def format_question(question: Question, style: PromptStyle, *, with_answer: bool) -> str:
    """Question, one ``X. choice`` line per choice, the answer cue (and the gold letter for a shot)."""
    lines = [question.question]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, question.choices)]
    cue = style.answer_cue
    if with_answer:
        cue += f"{style.letter_separator}{question.answer}"
    lines.append(cue)
    return "\n".join(lines)


def select_shots(shots: Sequence[Question], question: Question, n_shot: int) -> list[Question]:
    """The first ``n_shot`` dev questions, never the scored question itself (when evaluating dev)."""
    picked = [s for s in shots if (s.question, s.choices) != (question.question, question.choices)]
    return picked[:n_shot]


def build_prompt(subject_name: str, shots: Sequence[Question], question: Question, lang: str) -> str:
    """Header, the shots with answers, then the question; paragraphs separated by a blank line."""
    style = get_style(lang)
    blocks = [style.header.format(subject=subject_name)]
    blocks += [format_question(shot, style, with_answer=True) for shot in shots]
    blocks.append(format_question(question, style, with_answer=False))
    return "\n\n".join(blocks)
