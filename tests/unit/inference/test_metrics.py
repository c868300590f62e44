"""BLEU/ROUGE and the other scores against values worked out by hand (see docs/metrics.md)."""

from __future__ import annotations

import math

import pytest

from tunery.errors import ConfigError
from tunery.inference.metrics import (
    Scorer,
    accuracy,
    aggregate,
    exact_match,
    parse_metrics,
    score_sample,
    segment,
    token_f1,
)


def test_segment_english_words_and_punctuation():
    assert segment("The capital of France is Paris.") == ["The", "capital", "of", "France", "is", "Paris", "."]


def test_segment_chinese_uses_jieba_words():
    assert segment("中国的首都是北京。") == ["中国", "的", "首都", "是", "北京", "。"]
    assert segment("北京是中国的首都") == ["北京", "是", "中国", "的", "首都"]


def test_identical_texts_score_100():
    scores = score_sample("the cat sat on the mat", "the cat sat on the mat", ["bleu", "rouge"])
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        assert scores[key] == pytest.approx(100.0, abs=1e-4)


def test_english_bleu_rouge_hand_checked():
    # pred: the cat sat on the mat / ref: the cat sat on a mat (6 tokens each, brevity penalty 1)
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3 -> BLEU = (1/12) ** 0.25
    # ROUGE-1 on n-gram sets: 5 of pred's 5, 5 of ref's 6 -> F = 10/11
    # ROUGE-2: 3 shared of 5 and 5 -> 0.6; ROUGE-L: LCS 5 of 6 and 6 -> 5/6
    s = score_sample("the cat sat on the mat", "the cat sat on a mat", ["bleu", "rouge"])
    assert s["bleu-4"] == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-3)
    assert s["rouge-1"] == pytest.approx(100 * 10 / 11, abs=1e-3)
    assert s["rouge-2"] == pytest.approx(60.0, abs=1e-3)
    assert s["rouge-l"] == pytest.approx(100 * 5 / 6, abs=1e-3)


def test_bleu_smoothing_when_no_4gram_matches():
    # precisions 5/6, 3/5, 1/4, 0/3; smoothing method 3 turns the first zero into 1/(2*3)
    s = score_sample("the cat ran on a mat", "the cat sat on a mat", ["bleu"])
    assert s["bleu-4"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25, abs=1e-3)


def test_chinese_bleu_rouge_hand_checked():
    # pred 北京|是|中国|的|首都 (5) / ref 中国|的|首都|是|北京|。 (6)
    # BLEU: precisions 5/5, 2/4, 1/3, 0/2 -> 1/(2*2); brevity penalty exp(1 - 6/5)
    # ROUGE-1 10/11; ROUGE-2 P 2/4 R 2/5 -> 4/9; ROUGE-L LCS 中国的首都 = 3: P 3/5 R 3/6 -> 6/11
    s = score_sample("北京是中国的首都", "中国的首都是北京。", ["bleu", "rouge"])
    expected_bleu = math.exp(1 - 6 / 5) * (1 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25
    assert s["bleu-4"] == pytest.approx(100 * expected_bleu, abs=1e-3)
    assert s["rouge-1"] == pytest.approx(100 * 10 / 11, abs=1e-3)
    assert s["rouge-2"] == pytest.approx(100 * 4 / 9, abs=1e-3)
    assert s["rouge-l"] == pytest.approx(100 * 6 / 11, abs=1e-3)


def test_empty_prediction_scores_zero_not_error():
    s = score_sample("", "some label", ["bleu", "rouge"])
    assert s == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}


def test_exact_match_f1_accuracy():
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("Paris is", "paris") == 0.0
    # pred tokens: the capital is paris / ref: paris -> P 1/4, R 1 -> F1 0.4
    assert token_f1("The capital is Paris.", "Paris") == pytest.approx(0.4)
    assert accuracy("B. Paris", "B") == 1.0
    assert accuracy("A. Lyon", "B") == 0.0


def test_aggregate_is_mean_of_samples():
    assert aggregate([{"a": 10.0, "b": 1.0}, {"a": 30.0}]) == {"a": 20.0, "b": 1.0}


def test_parse_metrics_rejects_unknown_with_hint():
    assert parse_metrics("bleu, exact_match") == ["bleu", "exact_match"]
    assert parse_metrics(None) == ["bleu", "rouge"]
    with pytest.raises(ConfigError, match="unknown metric 'blue'"):
        parse_metrics(["blue"])


def test_custom_metric_from_file(tmp_path):
    plugin = tmp_path / "my_metric.py"
    plugin.write_text("def length_ratio(prediction, label):\n    return len(prediction) / len(label)\n")
    scorer = Scorer(["exact_match"], f"{plugin}:length_ratio")
    assert scorer("abcd", "ab") == {"exact_match": 0.0, "length_ratio": 2.0}


def test_custom_metric_from_module_returning_dict(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "scores.py").write_text(
        "def both(prediction, label):\n    return {'same': float(prediction == label), 'plen': len(prediction)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = Scorer(["accuracy"], "mypkg.scores:both")
    assert scorer("x", "x") == {"accuracy": 100.0, "same": 1.0, "plen": 1.0}


def test_custom_metric_bad_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not name a function"):
        Scorer(None, "no_colon_here")
    with pytest.raises(ConfigError, match="does not exist"):
        Scorer(None, f"{tmp_path}/missing.py:f")
    plugin = tmp_path / "m.py"
    plugin.write_text("def bad(p, l):\n    return 'oops'\n")
    with pytest.raises(ConfigError, match="returned 'oops'"):
        Scorer(None, f"{plugin}:bad")("a", "b")
