"""Text-generation scores: BLEU-4, ROUGE-1/2/L, exact match, token F1, accuracy, plug-ins.

Every score is computed per sample (so generated_predictions.jsonl can show each sample's own
scores) and the corpus score is the mean of the sample scores, times 100. Definitions are in
docs/metrics.md; keep both in step.

Why by hand around the libraries: nltk and rouge-chinese score token lists, but neither segments
Chinese nor chooses between word and character tokens; that choice, the empty-text edge cases and
the plug-in loading are Tunery's.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable

from tunery.errors import ConfigError, require
from tunery.plugins import load_callable

BUILTIN_METRICS = ("bleu", "rouge", "exact_match", "f1", "accuracy")
DEFAULT_METRICS = ("bleu", "rouge")

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】…")

SampleScores = dict[str, float]


def segment(text: str) -> list[str]:
    """Words of ``text``: jieba for text with CJK characters, words and punctuation otherwise."""
    if _CJK.search(text):
        jieba = require("jieba", "Chinese segmentation for BLEU/ROUGE", "metrics")
        jieba.setLogLevel(60)  # jieba logs its dictionary loading at INFO on every first call
        return [tok for tok in jieba.lcut(text) if tok.strip()]
    return _WORD.findall(text)


def bleu4(prediction: list[str], reference: list[str]) -> float:
    """Sentence BLEU-4 with nltk's smoothing method 3 (NIST), so short texts do not drop to 0."""
    if not prediction or not reference:
        return 0.0
    require("nltk", "BLEU scores", "metrics")
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return float(sentence_bleu([reference], prediction, smoothing_function=SmoothingFunction().method3))


def rouge_f(prediction: list[str], reference: list[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 from rouge-chinese (n-gram sets, summary-level LCS)."""
    if not prediction or not reference:
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    rouge_chinese = require("rouge_chinese", "ROUGE scores", "metrics", package="rouge-chinese")
    # rouge-chinese splits its input on spaces, so tokens must not contain any.
    hyp = " ".join(tok.replace(" ", "_") for tok in prediction)
    ref = " ".join(tok.replace(" ", "_") for tok in reference)
    scores = rouge_chinese.Rouge().get_scores(hyp, ref)[0]
    return {name: float(scores[name]["f"]) for name in ("rouge-1", "rouge-2", "rouge-l")}


def _normalize(text: str) -> list[str]:
    """Lower-cased tokens without punctuation, for exact match, F1 and accuracy."""
    return [tok.lower() for tok in segment(text) if tok not in _PUNCT]


def exact_match(prediction: str, label: str) -> float:
    return float(_normalize(prediction) == _normalize(label))


def token_f1(prediction: str, label: str) -> float:
    """SQuAD-style F1 over normalized tokens (counted with multiplicity)."""
    pred, ref = _normalize(prediction), _normalize(label)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def accuracy(prediction: str, label: str) -> float:
    """1 when the prediction starts with the label (normalized): "B. Paris" is right for label "B"."""
    pred, ref = _normalize(prediction), _normalize(label)
    return float(bool(ref) and pred[: len(ref)] == ref)


def score_sample(prediction: str, label: str, metrics: Iterable[str]) -> SampleScores:
    """The chosen builtin scores of one sample, each in [0, 100]."""
    metrics = list(metrics)
    out: SampleScores = {}
    if "bleu" in metrics or "rouge" in metrics:
        pred_tokens, ref_tokens = segment(prediction), segment(label)
        if "bleu" in metrics:
            out["bleu-4"] = bleu4(pred_tokens, ref_tokens) * 100
        if "rouge" in metrics:
            out.update({k: v * 100 for k, v in rouge_f(pred_tokens, ref_tokens).items()})
    if "exact_match" in metrics:
        out["exact_match"] = exact_match(prediction, label) * 100
    if "f1" in metrics:
        out["f1"] = token_f1(prediction, label) * 100
    if "accuracy" in metrics:
        out["accuracy"] = accuracy(prediction, label) * 100
    return out


def parse_metrics(value: str | list[str] | None) -> list[str]:
    """``metrics`` setting (comma string or list) -> checked list of builtin names."""
    if value is None:
        return list(DEFAULT_METRICS)
    names = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    unknown = [n for n in names if n not in BUILTIN_METRICS]
    if unknown:
        raise ConfigError(
            f"unknown metric '{unknown[0]}' in 'metrics'",
            hint=f"choose among {', '.join(BUILTIN_METRICS)}; for your own, use compute_metrics: file.py:function",
        )
    return names


CustomMetric = Callable[[str, str], "float | dict[str, float]"]


def load_custom_metric(spec: str) -> tuple[str, CustomMetric]:
    """``path/to/file.py:function`` or ``package.module:function`` -> (name, callable)."""
    return load_callable(spec, "compute_metrics")


def call_custom_metric(name: str, func: CustomMetric, prediction: str, label: str) -> SampleScores:
    """Run a plug-in on one sample; a number is reported under the function's name, a dict as is."""
    try:
        value = func(prediction, label)
    except Exception as exc:
        raise ConfigError(f"compute_metrics function '{name}' failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    try:
        return {name: float(value)}
    except (TypeError, ValueError):
        raise ConfigError(
            f"compute_metrics function '{name}' returned {value!r}", hint="return a number or a dict of numbers"
        ) from None


def aggregate(per_sample: list[SampleScores]) -> dict[str, float]:
    """Mean of each score over the samples that have it."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for scores in per_sample:
        for key, value in scores.items():
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


class Scorer:
    """Builtin metrics plus an optional plug-in, applied to one sample at a time."""

    def __init__(self, metrics: str | list[str] | None = None, compute_metrics: str | None = None) -> None:
        self.metrics = parse_metrics(metrics)
        self.custom = load_custom_metric(compute_metrics) if compute_metrics else None

    def __call__(self, prediction: str, label: str) -> SampleScores:
        scores = score_sample(prediction, label, self.metrics)
        if self.custom is not None:
            scores.update(call_custom_metric(*self.custom, prediction, label))
        return scores
