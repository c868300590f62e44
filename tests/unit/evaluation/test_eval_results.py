"""Accuracy per subject, per category (micro averages) and overall, on a hand-made result set."""

from __future__ import annotations

import json

import pytest

from tunery.evaluation.results import aggregate, format_table, write_results


def records():
    # algebra (STEM): 3/4, physics (STEM): 0/2, law (Humanities): 1/1, poetry (custom "Arts"): 1/3
    spec = [("algebra", "STEM", [1, 1, 1, 0]), ("physics", "STEM", [0, 0]), ("law", "Humanities", [1]),
            ("poetry", "Arts", [0, 1, 0])]
    return [
        {"subject": s, "subject_name": s.title(), "category": c, "correct": bool(x)}
        for s, c, marks in spec
        for x in marks
    ]


def test_category_and_average_accuracies():
    results = aggregate(records())
    assert results["num_questions"] == 10 and results["correct"] == 5
    assert results["average"] == pytest.approx(50.0)
    assert list(results["categories"]) == ["STEM", "Humanities", "Arts"]  # canonical order, then others
    assert results["categories"]["STEM"] == {"accuracy": pytest.approx(50.0), "correct": 3, "total": 6}
    assert results["categories"]["Humanities"]["accuracy"] == pytest.approx(100.0)
    assert results["categories"]["Arts"]["accuracy"] == pytest.approx(100 / 3)
    assert results["subjects"]["physics"] == {
        "name": "Physics", "category": "STEM", "correct": 0, "total": 2, "accuracy": 0.0
    }
    assert list(results["subjects"]) == ["algebra", "law", "physics", "poetry"]


def test_table_and_files(tmp_path):
    results = aggregate(records())
    table = format_table(results)
    lines = table.splitlines()
    assert lines[2].split() == ["Average", "50.00", "5/10"]
    assert lines[3].split() == ["STEM", "50.00", "3/6"]
    assert any(line.split() == ["Physics", "(STEM)", "0.00", "0/2"] for line in lines)
    write_results(tmp_path, results, table, records())
    assert json.loads((tmp_path / "results.json").read_text())["categories"]["STEM"]["correct"] == 3
    assert (tmp_path / "results.log").read_text() == table + "\n"
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[0] == {"subject": "algebra", "subject_name": "Algebra", "category": "STEM", "correct": True}


def test_table_aligns_chinese_subject_names():
    from tunery.evaluation.results import _width

    rows = [{"subject": "a", "subject_name": "中国历史", "category": "Humanities", "correct": True},
            {"subject": "b", "subject_name": "geography", "category": "Other", "correct": False}]
    lines = format_table(aggregate(rows)).splitlines()
    ends = {_width(line) for line in lines if "%" not in line and line.strip("-")}
    assert len(ends) == 1  # every row is as wide on screen as the header
