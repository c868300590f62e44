"""Task folders in the public MMLU / C-Eval / CMMLU CSV layouts, the packaged sample tasks, hub errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tunery.errors import ConfigError, DataError
from tunery.evaluation.hub_tasks import normalize_rows, write_csv
from tunery.evaluation.tasks import load_task, parse_task_name, read_questions


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_task_name_splits_into_task_and_split():
    assert parse_task_name("mmlu_test") == ("mmlu", "test")
    assert parse_task_name("ceval_validation") == ("ceval", "validation")
    assert parse_task_name("cmmlu_val") == ("cmmlu", "validation")
    assert parse_task_name("my_task") == ("my_task", "test")
    assert parse_task_name("mmlu_test", "dev") == ("mmlu", "dev")
    with pytest.raises(ConfigError, match="train"):
        parse_task_name("mmlu", "train")


def test_mmlu_csv_without_header(tmp_path):
    path = write_rows(tmp_path / "algebra_test.csv", [["1+1?", "1", "2", "3", "4", "B"], ["Q2", "w", "x", "y", "z", "d"]])
    questions = read_questions(path, "algebra")
    assert [(x.question, x.choices, x.answer, x.row) for x in questions] == [
        ("1+1?", ("1", "2", "3", "4"), "B", 1),
        ("Q2", ("w", "x", "y", "z"), "D", 2),
    ]


def test_ceval_and_cmmlu_headers(tmp_path):
    ceval = write_rows(
        tmp_path / "law_val.csv",
        [["id", "question", "A", "B", "C", "D", "answer", "explanation"], ["0", "问题", "甲", "乙", "丙", "丁", "C", "因为"]],
    )
    cmmlu = write_rows(tmp_path / "arts.csv", [["", "Question", "A", "B", "C", "D", "Answer"], ["0", "题", "1", "2", "3", "4", "A"]])
    assert read_questions(ceval, "law")[0].choices == ("甲", "乙", "丙", "丁")
    assert read_questions(ceval, "law")[0].answer == "C"
    assert read_questions(ceval, "law")[0].row == 2
    assert (read_questions(cmmlu, "arts")[0].question, read_questions(cmmlu, "arts")[0].answer) == ("题", "A")


def test_bad_answer_names_file_row_and_field(tmp_path):
    path = write_rows(tmp_path / "x_test.csv", [["q1", "a", "b", "c", "d", "A"], ["q2", "a", "b", "c", "d", "E"]])
    with pytest.raises(DataError) as err:
        read_questions(path, "x")
    assert err.value.row == 2 and err.value.field == "answer" and err.value.file == str(path)


def make_task(root: Path) -> Path:
    """A two-subject task: MMLU-named files, a mapping with one subject left out, dev + val + test."""
    task = root / "toy"
    (task).mkdir(parents=True)
    (task / "mapping.json").write_text('{"algebra": {"name": "algebra", "category": "STEM"}}', encoding="utf-8")
    for split, folder in (("dev", "dev"), ("val", "val"), ("test", "test")):
        write_rows(task / folder / f"algebra_{split}.csv", [[f"{split} alg {i}", "a", "b", "c", "d", "ABCD"[i]] for i in range(4)])
        write_rows(task / folder / f"poetry_{split}.csv", [[f"{split} poe {i}", "a", "b", "c", "d", "DCBA"[i]] for i in range(3)])
    return task


def test_local_task_with_mapping_shots_and_max_samples(tmp_path):
    make_task(tmp_path)
    task = load_task("toy_validation", str(tmp_path), n_shot=2, max_samples=2)
    assert task.split == "validation"
    assert [(s.key, s.name, s.category) for s in task.subjects] == [
        ("algebra", "algebra", "STEM"),
        ("poetry", "poetry", "Other"),  # not in mapping.json
    ]
    assert [x.question for x in task.subjects[0].questions] == ["val alg 0", "val alg 1"]
    assert [x.question for x in task.subjects[1].shots] == ["dev poe 0", "dev poe 1", "dev poe 2"]
    assert task.num_questions == 4


def test_task_given_as_a_folder(tmp_path):
    folder = make_task(tmp_path)
    task = load_task(str(folder), "nowhere", split="test")
    assert task.folder == folder and task.num_questions == 7


def test_missing_split_and_missing_dev_are_clear(tmp_path):
    folder = make_task(tmp_path)
    for f in (folder / "dev").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no dev split"):
        load_task("toy_test", str(tmp_path), n_shot=5)
    assert load_task("toy_test", str(tmp_path), n_shot=0).num_questions == 7
    with pytest.raises(DataError, match="no 'dev' split"):
        load_task("toy_dev", str(tmp_path))


def test_secret_test_answers_are_refused(tmp_path):
    write_rows(tmp_path / "ce" / "test" / "law_test.csv", [["id", "question", "A", "B", "C", "D", "answer"], ["0", "q", "a", "b", "c", "d", ""]])
    with pytest.raises(DataError, match="validation"):
        load_task("ce_test", str(tmp_path))


def test_packaged_sample_tasks_found_with_default_task_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./evaluation folder here
    for name, lang_subject in (("sample_en_test", "world history"), ("sample_zh_test", "中国历史")):
        task = load_task(name, "evaluation", n_shot=5)
        assert {s.category for s in task.subjects} == {"STEM", "Social Sciences", "Humanities", "Other"}
        assert lang_subject in [s.name for s in task.subjects]
        for subject in task.subjects:
            assert len(subject.questions) == 12 and len(subject.shots) == 5
            # a model that always answers the same letter scores exactly chance
            assert sorted(x.answer for x in subject.questions) == sorted("ABCD" * 3)


def test_unknown_task_lists_the_available_ones(tmp_path):
    with pytest.raises(DataError, match="sample_en") as err:
        load_task("nosuch_test", str(tmp_path))
    assert f"'nosuch' not found in task_dir '{tmp_path}'" in str(err.value)  # names the setting it looked in


def test_hub_benchmark_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load_task("cmmlu_test", str(tmp_path), n_shot=5)
    assert "offline" in str(err.value) and "haonan-li/cmmlu" in str(err.value)


def test_hub_rows_of_both_shapes_become_our_csv(tmp_path):
    mmlu_rows = [{"question": "1+1?", "subject": "x", "choices": ["1", "2", "3", "4"], "answer": 1}]
    ceval_rows = [{"id": 0, "question": "问", "A": "甲", "B": "乙", "C": "丙", "D": "丁", "answer": "D", "explanation": ""}]
    (tmp_path / "test").mkdir()
    write_csv(tmp_path / "test" / "x_test.csv", normalize_rows(mmlu_rows))
    write_csv(tmp_path / "test" / "y_test.csv", normalize_rows(ceval_rows))
    task = load_task(str(tmp_path), "unused")
    assert [(x.question, x.choices, x.answer) for s in task.subjects for x in s.questions] == [
        ("1+1?", ("1", "2", "3", "4"), "B"),
        ("问", ("甲", "乙", "丙", "丁"), "D"),
    ]


def test_hub_parquet_path_writes_a_cached_task(tmp_path, monkeypatch):
    """cais/mmlu path: datasets.load_dataset per subject (faked here: no network), CSVs in the cache."""
    import datasets

    calls = []

    def fake_load_dataset(repo, name=None, split=None):
        calls.append((repo, name, split))
        return [{"question": f"{name} {split}?", "subject": name, "choices": ["w", "x", "y", "z"], "answer": 2}]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task("mmlu_test", str(tmp_path), n_shot=1)
    assert len(task.subjects) == 57 and task.folder == tmp_path / "cache" / "eval_tasks" / "mmlu"
    assert {split for _, _, split in calls} == {"test", "dev"} and calls[0][0] == "cais/mmlu"
    algebra = next(s for s in task.subjects if s.key == "abstract_algebra")
    assert (algebra.category, algebra.questions[0].question, algebra.questions[0].answer) == ("STEM", "abstract_algebra test?", "C")
    assert algebra.shots[0].question == "abstract_algebra dev?"
    monkeypatch.setattr(datasets, "load_dataset", None)  # the second time it comes from the cache
    assert load_task("mmlu_test", str(tmp_path), n_shot=1).num_questions == 57


def test_hub_archive_path_unpacks_the_public_csv_files(tmp_path, monkeypatch):
    """C-Eval/CMMLU path: the repo's zip of CSV folders (faked download), unpacked into the cache."""
    import zipfile

    import huggingface_hub

    archive = tmp_path / "cmmlu.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dev/agronomy.csv", ",Question,A,B,C,D,Answer\n0,农?,a,b,c,d,B\n")
        zf.writestr("test/agronomy.csv", ",Question,A,B,C,D,Answer\n0,农学?,a,b,c,d,D\n1,二?,a,b,c,d,A\n")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, repo_type: seen.append((repo, name, repo_type)) or str(archive))
    task = load_task("cmmlu_test", str(tmp_path), n_shot=5)
    assert seen == [("haonan-li/cmmlu", "cmmlu_v1_0_1.zip", "dataset")]
    (subject,) = task.subjects
    assert (subject.name, subject.category) == ("农学", "Other")
    assert [q.answer for q in subject.questions] == ["D", "A"] and len(subject.shots) == 1


def make_flat_task(root: Path) -> Path:
    """The same two subjects as make_task, with every CSV side by side in one folder (no split folders)."""
    task = root / "flat"
    for split in ("dev", "val", "test"):
        write_rows(task / f"algebra_{split}.csv", [[f"{split} alg {i}", "a", "b", "c", "d", "ABCD"[i]] for i in range(4)])
        write_rows(task / f"high_school_poetry_{split}.csv",
                   [[f"{split} poe {i}", "a", "b", "c", "d", "DCBA"[i]] for i in range(3)])
    write_rows(task / "notes.csv", [["not", "a", "subject"]])  # no split suffix: not read
    return task


def test_flat_folder_of_subject_split_csv_files(tmp_path):
    folder = make_flat_task(tmp_path)
    task = load_task(str(folder), "nowhere", split="test", n_shot=2)
    assert [s.key for s in task.subjects] == ["algebra", "high_school_poetry"]
    assert [s.name for s in task.subjects] == ["algebra", "high school poetry"]
    assert [x.question for x in task.subjects[0].questions] == [f"test alg {i}" for i in range(4)]
    assert [x.question for x in task.subjects[1].shots] == ["dev poe 0", "dev poe 1", "dev poe 2"]
    assert task.num_questions == 7
    by_name = load_task("flat_val", str(tmp_path), max_samples=1)
    assert by_name.split == "validation" and [x.question for s in by_name.subjects for x in s.questions] == \
        ["val alg 0", "val poe 0"]
    assert [x.answer for x in load_task("flat_dev", str(tmp_path)).subjects[1].questions] == ["D", "C", "B"]


def test_flat_folder_missing_split_or_dev_file_is_clear(tmp_path):
    folder = make_flat_task(tmp_path)
    (folder / "high_school_poetry_dev.csv").unlink()
    with pytest.raises(DataError, match="subject 'high_school_poetry' has no dev file") as err:
        load_task(str(folder), "nowhere", n_shot=1)
    assert "high_school_poetry_dev.csv" in err.value.hint
    for path in folder.glob("*_test.csv"):
        path.unlink()
    with pytest.raises(DataError, match="no 'test' split") as err:
        load_task(str(folder), "nowhere")
    assert "<subject>_test.csv" in err.value.hint


def test_nested_split_folder_wins_over_flat_files(tmp_path):
    folder = make_task(tmp_path)
    write_rows(folder / "stray_test.csv", [["q", "a", "b", "c", "d", "A"]])
    assert [s.key for s in load_task(str(folder), "nowhere").subjects] == ["algebra", "poetry"]
