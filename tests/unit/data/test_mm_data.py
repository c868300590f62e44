"""LLaMA-Factory's multimodal data format: media columns, placeholders, paths, and what data check reports."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from tests.fixtures import tiny_llava as llava_fixtures
from tunery.data.converters import InvalidExample, convert_alpaca, convert_openai, convert_sharegpt
from tunery.data.dataset_info import DatasetAttr, get_dataset_attrs, parse_dataset_attr
from tunery.data.loader import load_dataset_records
from tunery.data.media import MediaSettings, fit_pixels, load_audio, load_image, resolve_item

mllm_dir = llava_fixtures.mllm_dir  # the shared fixture (tests/fixtures/tiny_llava.py)


def _attr(formatting: str, data_dir: str, media_dir: str | None = None, **columns) -> DatasetAttr:
    entry = {"file_name": "x.json", "formatting": formatting, "columns": columns}
    if formatting == "sharegpt":
        entry["tags"] = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    attr = parse_dataset_attr("x", entry, data_dir)
    attr.media_dir = media_dir
    return attr


@pytest.fixture
def media_root(tmp_path, mllm_dir):
    """A dataset folder with one image (a.jpg) and a separate media folder with another (b.jpg)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "media").mkdir()
    shutil.copy(mllm_dir / "mllm_demo_data" / "1.jpg", tmp_path / "data" / "a.jpg")
    shutil.copy(mllm_dir / "mllm_demo_data" / "2.jpg", tmp_path / "media" / "b.jpg")
    return tmp_path


def test_sharegpt_row_keeps_images_resolved_against_dataset_dir(media_root):
    data = str(media_root / "data")
    attr = _attr("sharegpt", data, messages="messages", images="images")
    row = {"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "A cat."}],
           "images": ["a.jpg"]}
    record = convert_sharegpt(row, attr)
    assert record["images"] == [os.path.join(data, "a.jpg")]
    assert record["videos"] is None and record["audios"] is None
    assert record["messages"][0]["content"] == "<image>What is it?"


def test_media_dir_is_where_relative_paths_start(media_root):
    attr = _attr("alpaca", str(media_root / "data"), str(media_root / "media"), images="images")
    record = convert_alpaca({"instruction": "<image>Describe", "output": "A photo.", "images": "b.jpg"}, attr)
    assert record["images"] == [os.path.join(str(media_root / "media"), "b.jpg")]


def test_openai_row_with_images_column(media_root):
    attr = _attr("openai", str(media_root / "data"), messages="messages", images="images")
    row = {"messages": [{"role": "user", "content": "<image><image>Same?"}, {"role": "assistant", "content": "Yes."}],
           "images": ["a.jpg", "a.jpg"]}
    assert convert_openai(row, attr)["images"] == [os.path.join(str(media_root / "data"), "a.jpg")] * 2


def test_openai_image_part_is_refused_not_dropped(media_root):
    attr = _attr("openai", str(media_root / "data"), messages="messages")
    row = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.jpg"}},
                                                     {"type": "text", "text": "What?"}]},
                        {"role": "assistant", "content": "A cat."}]}
    with pytest.raises(InvalidExample, match="image_url' content part") as err:
        convert_openai(row, attr)
    assert err.value.field == "messages"


def test_placeholder_count_must_match_media_count(media_root):
    attr = _attr("sharegpt", str(media_root / "data"), messages="messages", images="pics")
    row = {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Me."}],
           "pics": ["a.jpg", "a.jpg"]}
    with pytest.raises(InvalidExample, match=r"1 <image> placeholder\(s\) in the messages but 2 images") as err:
        convert_sharegpt(row, attr)
    assert err.value.field == "pics"  # the dataset's own column


def test_missing_media_file_is_an_invalid_row(media_root):
    attr = _attr("sharegpt", str(media_root / "data"), messages="messages", images="images")
    row = {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Me."}],
           "images": ["nope.jpg"]}
    with pytest.raises(InvalidExample, match="image 1 file not found: nope.jpg") as err:
        convert_sharegpt(row, attr)
    assert err.value.field == "images"


def test_mllm_demo_loads_as_it_is(mllm_dir):
    (attr,) = get_dataset_attrs("mllm_demo", str(mllm_dir))
    records, report = load_dataset_records(attr, "sft")
    assert report.skipped == 0 and len(records) == 6
    for record in records:
        n = sum(m["content"].count("<image>") for m in record["messages"])
        assert n == len(record["images"]) and all(os.path.isfile(p) for p in record["images"])


def _check_cli(tmp_path, rows, extra_files=()):
    """Run `tunery data check` on a dataset of ``rows`` (sharegpt + images) and return (rc, stdout)."""
    import subprocess

    (tmp_path / "dataset_info.json").write_text(json.dumps({"mm": {
        "file_name": "mm.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    (tmp_path / "mm.json").write_text(json.dumps(rows))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tunery", "data", "check", "--dataset", "mm", "--dataset_dir",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_data_check_names_file_row_and_field_for_missing_unreadable_and_miscounted(tmp_path, mllm_dir):
    shutil.copy(mllm_dir / "mllm_demo_data" / "1.jpg", tmp_path / "ok.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    turn = [{"role": "assistant", "content": "Fine."}]
    rows = [
        {"messages": [{"role": "user", "content": "<image>ok"}, *turn], "images": ["ok.jpg"]},
        {"messages": [{"role": "user", "content": "<image>gone"}, *turn], "images": ["gone.jpg"]},
        {"messages": [{"role": "user", "content": "<image>broken"}, *turn], "images": ["broken.jpg"]},
        {"messages": [{"role": "user", "content": "no placeholder"}, *turn], "images": ["ok.jpg"]},
    ]
    rc, out = _check_cli(tmp_path, rows)
    file = str(tmp_path / "mm.json")
    assert f"{file} row 1 field 'images': image 1 file not found: gone.jpg" in out
    assert f"{file} row 2 field 'images': image 1 cannot be read as an image ({tmp_path / 'broken.jpg'})" in out
    assert (f"{file} row 3 field 'images': 0 <image> placeholder(s) in the messages but 1 image; "
            "they must match one to one") in out
    assert "row 0" not in out and "rows: 4, valid: 1, invalid: 3" in out
    assert rc != 0


def test_fit_pixels_scales_into_the_range_keeping_aspect():
    from PIL import Image

    big = fit_pixels(Image.new("RGB", (400, 100)), max_pixels=10_000, min_pixels=100)
    assert big.size[0] * big.size[1] <= 10_000 and abs(big.size[0] / big.size[1] - 4) < 0.1
    small = fit_pixels(Image.new("L", (4, 2)), max_pixels=10_000, min_pixels=800)
    assert small.size[0] * small.size[1] >= 800 and small.mode == "RGB"
    same = fit_pixels(Image.new("RGB", (50, 50)), max_pixels=10_000, min_pixels=100)
    assert same.size == (50, 50)


def test_image_max_pixels_applies_to_loaded_images(mllm_dir):
    image = load_image(str(mllm_dir / "mllm_demo_data" / "1.jpg"), MediaSettings(image_max_pixels=64 * 64))
    assert image.size[0] * image.size[1] <= 64 * 64


def test_wav_audio_is_resampled_to_audio_sampling_rate(tmp_path):
    import wave

    import numpy as np

    path = tmp_path / "tone.wav"
    samples = (np.sin(np.linspace(0, 200, 8000)) * 20000).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(samples.tobytes())
    audio = load_audio(str(path), MediaSettings(audio_sampling_rate=16000))
    assert audio.dtype == np.float32 and len(audio) == 16000 and float(np.abs(audio).max()) <= 1.0


def test_resolve_item_keeps_urls_and_absolute_paths(tmp_path):
    assert resolve_item("https://x/y.png", str(tmp_path)) == "https://x/y.png"
    assert resolve_item("/abs/a.png", str(tmp_path)) == "/abs/a.png"
    assert resolve_item("not-there.png", str(tmp_path)) == "not-there.png"
