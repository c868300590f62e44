"""The run log (trainer_log.jsonl): one owner for its name, rows, reading and trimming."""

from __future__ import annotations

import json

from tunery import runlog


def test_append_read_trim_remove(tmp_path):
    out = tmp_path / "run"
    for step in (1, 2, 3):
        runlog.append(out, {**runlog.progress_record(step, 3, 10.0 * step), "loss": 1.0 / step})
    (out / runlog.LOG_FILE).open("a").write('{"current_steps": 4, "tot')  # a writer is mid-line
    rows = runlog.read(out)
    assert [r["current_steps"] for r in rows] == [1, 2, 3]
    assert rows[0] == {"current_steps": 1, "total_steps": 3, "percentage": 33.33, "elapsed_time": "0:00:10",
                       "remaining_time": "0:00:20", "loss": 1.0}
    assert set(runlog.PROGRESS_FIELDS) <= set(rows[-1])
    runlog.trim(out, 2)
    assert [json.loads(line)["current_steps"] for line in (out / "trainer_log.jsonl").read_text().splitlines()] == [1, 2]
    runlog.remove(out)
    assert runlog.read(out) == [] and not (out / "trainer_log.jsonl").exists()


def test_format_seconds_and_empty_progress():
    assert runlog.format_seconds(3725.9) == "1:02:05" and runlog.format_seconds(-5) == "0:00:00"
    assert runlog.progress_record(0, 0, 0.0)["percentage"] == 0.0


def test_only_runlog_names_the_file():
    """Every writer and reader goes through tunery.runlog: no other module spells the file name."""
    from pathlib import Path

    src = Path(runlog.__file__).parent
    spelled = [p.relative_to(src).as_posix() for p in src.rglob("*.py")
               if '"trainer_log.jsonl"' in p.read_text(encoding="utf-8")]
    assert spelled == ["runlog.py"]
