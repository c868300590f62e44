"""Images in chat, predict and the engine: loading refs, placing them, generating through the processor."""

from __future__ import annotations

import base64
import io
import json
import shutil

import pytest
import torch
from PIL import Image

from tunery.config import parse_config
from tunery.data.media import MediaSettings, load_image, with_model_tokens
from tunery.errors import ConfigError, DataError
from tunery.inference import load_engine
from tunery.inference.engine import GenerationJob
from tunery.inference.media import attach_record_media, media_record, resolve_ref

IMAGE_TOKENS = 16  # the tiny LLaVA: 32x32 image, patch 8


@pytest.fixture(scope="module")
def red_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (40, 30), (220, 10, 10)).save(path)
    return path


@pytest.fixture(scope="module")
def llava_engine(tiny_llava):
    return load_engine(parse_config("chat", {"model_name_or_path": str(tiny_llava), "do_sample": False,
                                             "max_new_tokens": 6}))


def _data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _load(ref, media_dir=None):
    return load_image(resolve_ref(ref, "images", media_dir), MediaSettings())


def test_load_image_from_path_file_url_data_url_and_relative_media_dir(red_png, tmp_path):
    for ref in (str(red_png), red_png.as_uri(), _data_url(red_png)):
        image = _load(ref)
        assert image.size == (40, 30) and image.mode == "RGB" and image.getpixel((0, 0)) == (220, 10, 10)
    assert _load("red.png", media_dir=red_png.parent).size == (40, 30)


@pytest.mark.parametrize("ref, needle", [
    ("https://example.com/cat.png", "offline"),
    ("/nonexistent/cat.png", "not found"),
    ("data:image/png,notbase64", "base64"),
])
def test_load_image_refusals(ref, needle):
    with pytest.raises(ConfigError, match=needle):
        _load(ref)


def test_unreadable_image_file_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="cannot read image"):
        _load(str(bad))


def test_media_record_puts_media_at_their_markers(red_png):
    messages = [{"role": "user", "content": "look <image> and then", "images": [str(red_png), str(red_png)]}]
    record = media_record(messages)
    assert record["messages"][0]["content"] == "<image>look <image> and then"  # the unmarked image goes first
    assert record["images"] == [str(red_png)] * 2 and record["videos"] == [] and record["audios"] == []
    with pytest.raises(ConfigError, match="2 <image> markers but 1 images"):
        media_record([{"role": "user", "content": "<image><image>", "images": [str(red_png)]}])
    with pytest.raises(ConfigError, match="2 <image> markers but 1 images"):  # a marker in a message without one
        media_record([{"role": "user", "content": "a", "images": [str(red_png)]},
                      {"role": "user", "content": "<image>b"}])


def test_media_record_reads_a_video_folder_as_its_frames(tmp_path):
    for name in ("b.png", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    record = media_record([{"role": "user", "content": "what happens?", "videos": [str(tmp_path)]}])
    assert json.loads(record["videos"][0]) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert record["messages"][0]["content"] == "<video>what happens?"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no frame images"):
        media_record([{"role": "user", "content": "x", "videos": [str(tmp_path / "empty")]}])


def test_attach_record_media_follows_markers_over_the_conversation():
    messages = [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "A."},
                {"role": "user", "content": "And<image>? <audio>"}]
    out = attach_record_media(messages, {"images": ["a.jpg", "b.jpg"], "audios": ["c.wav"]})
    assert out[0]["images"] == ["a.jpg"] and "images" not in out[1] and out[2]["images"] == ["b.jpg"]
    assert out[2]["audios"] == ["c.wav"] and "audios" not in out[0]
    assert attach_record_media(messages[:1], {"images": []}) == messages[:1]


def test_engine_encodes_images_with_the_processor_and_generates_like_the_model(llava_engine, red_png):
    engine = llava_engine
    messages = [{"role": "user", "content": "What is in this picture?", "images": [str(red_png)]}]
    prompt, extra = engine.prompt_inputs(messages)
    image_id = engine.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert prompt.count(image_id) == IMAGE_TOKENS
    assert tuple(extra["pixel_values"].shape) == (1, 3, 32, 32)
    # encoded as training encodes it: the chat template's text (the image marker first, in the processor's
    # own token) through the processor with the image; the same inputs to model.generate give the same tokens
    text = engine.template.render_text(
        with_model_tokens([{"role": "user", "content": "<image>What is in this picture?"}], engine.processor),
        add_generation_prompt=True)
    direct = engine.processor(text=[text], images=[Image.open(red_png).convert("RGB")], add_special_tokens=False,
                              return_tensors="pt")
    assert direct["input_ids"][0].tolist() == prompt
    assert torch.equal(direct["pixel_values"], extra["pixel_values"])
    with torch.no_grad():
        out = engine.model.generate(**direct, max_new_tokens=6, do_sample=False,
                                    eos_token_id=engine.stop_token_ids(), pad_token_id=engine.tokenizer.pad_token_id)
    expected = engine.tokenizer.decode(
        [t for t in out[0, len(prompt):].tolist() if t not in engine.stop_token_ids()], skip_special_tokens=True)
    reply = engine.chat(messages)[0]
    assert reply.text == expected and reply.prompt_tokens == len(prompt)
    stream = engine.stream_chat(messages)
    assert "".join(stream) == expected
    # a text-only prompt still goes the tokenizer's way (no pixel inputs)
    assert engine.prompt_inputs([{"role": "user", "content": "hi"}])[1] is None


def test_generate_rows_serves_image_and_text_jobs_together(llava_engine, red_png):
    engine = llava_engine
    image_msgs = [{"role": "user", "content": "What is in this picture?", "images": [str(red_png)]}]
    prompt, extra = engine.prompt_inputs(image_msgs)
    jobs = [GenerationJob(prompt, {}, extra=extra), GenerationJob(engine.prompt_ids([{"role": "user", "content": "hi"}]))]
    engine.generate_rows(jobs)
    assert jobs[0].future.result()[0].text == engine.chat(image_msgs)[0].text
    assert jobs[1].future.result()[0].text == engine.chat([{"role": "user", "content": "hi"}])[0].text


def test_a_text_model_refuses_images(tiny_chatml_model, red_png):
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "max_new_tokens": 2}))
    with pytest.raises(ConfigError, match="takes no images"):
        engine.chat([{"role": "user", "content": "hi", "images": [str(red_png)]}])


def test_chat_session_image_flag_and_repl_command(llava_engine, red_png):
    from tunery.cli.chat import ChatSession, interactive

    out = io.StringIO()
    session = ChatSession(llava_engine, out=out)
    stdin = io.StringIO(f"/image {red_png}\nWhat is this?\n/image /no/such.png\nexit\n")
    interactive(session, stdin=stdin)
    text = out.getvalue()
    assert f"Image attached: {red_png}" in text and "No such image file: /no/such.png" in text
    assert session.history[0]["images"] == [str(red_png.resolve())]
    assert session.history[0]["content"] == "What is this?" and session.history[1]["role"] == "assistant"
    assert session.pending_images == []


def test_predict_reads_the_images_column(tiny_llava, reference_dir, tmp_path):
    from tunery.inference.predict import run_predict

    data = reference_dir / "lf" / "data"
    cfg = parse_config("predict", {"model_name_or_path": str(tiny_llava), "dataset": "mllm_demo",
                                   "dataset_dir": str(data), "output_dir": str(tmp_path / "pred"),
                                   "max_samples": 2, "max_new_tokens": 3, "do_sample": False})
    results = run_predict(cfg, progress=False)
    assert results["predict_samples"] == 2
    rows = [json.loads(line) for line in (tmp_path / "pred" / "generated_predictions.jsonl").read_text().splitlines()]
    first = json.loads((data / "mllm_demo.json").read_text())[0]
    assert rows[0]["prompt"].count("<image>") == IMAGE_TOKENS * len(first["images"])  # every image expanded
    assert rows[0]["label"] == first["messages"][-1]["content"]


def test_predict_names_the_row_of_a_missing_image(tiny_llava, reference_dir, tmp_path):
    from tunery.inference.predict import run_predict

    shutil.copy(reference_dir / "lf" / "data" / "mllm_demo.json", tmp_path / "mllm_demo.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mllm_demo": {
        "file_name": "mllm_demo.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    cfg = parse_config("predict", {"model_name_or_path": str(tiny_llava), "dataset": "mllm_demo",
                                   "dataset_dir": str(tmp_path), "output_dir": str(tmp_path / "pred"),
                                   "max_samples": 1, "max_new_tokens": 2})
    with pytest.raises(DataError, match="(?i)not found|missing|no such") as info:
        run_predict(cfg, progress=False)
    assert "images" in str(info.value)


@pytest.mark.parametrize("family, token, count", [
    ("gemma3", "<image_soft_token>", 4), ("mllama", "<|image|>", 1), ("llava_next", "<image>", None),
    ("qwen2_vl", "<|image_pad|>", 4), ("qwen2_5_vl", "<|image_pad|>", 4),
])
def test_engine_answers_an_image_for_each_family(family, token, count, tiny_vlm_factory, tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (56, 56), (20, 120, 200)).save(path)
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(tiny_vlm_factory(family)),
                                               "do_sample": False, "max_new_tokens": 4}))
    messages = [{"role": "user", "content": "What is in this picture?", "images": [str(path)]}]
    prompt, extra = engine.prompt_inputs(messages)
    own = count if count is not None else engine.processor._get_num_multimodal_tokens(
        image_sizes=[[56, 56]])["num_image_tokens"][0]
    assert prompt.count(engine.processor.tokenizer.convert_tokens_to_ids(token)) == own
    assert "pixel_values" in extra
    reply = engine.chat(messages)[0]
    assert reply.completion_tokens >= 1 and reply.prompt_tokens == len(prompt)
    assert "".join(engine.stream_chat(messages)) == reply.text


@pytest.mark.slow  # two `tunery chat` processes (torch + transformers imports each)
def test_tunery_chat_image_flag(tiny_llava, red_png, tmp_path):
    import subprocess
    import sys

    from tunery.cli.chat import pop_options

    own, rest = pop_options(["--image", "x.png", "--query", "hi", "--do_sample", "false"])
    assert own == {"image": "x.png", "query": "hi"} and rest == ["--do_sample", "false"]
    base = [sys.executable, "-m", "tunery", "chat", "--model_name_or_path", str(tiny_llava), "--max_new_tokens", "3",
            "--do_sample", "false", "--query", "What is this?"]
    ok = subprocess.run(base + ["--image", str(red_png)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(base + ["--image", "nope.png"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert missing.returncode == 2
    assert "image file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_predict_refuses_video_rows_for_an_image_model_by_name(llava_engine):
    from tunery.inference.predict import encode_prompts

    record = {"messages": [{"role": "user", "content": "<video>What happens?"}], "videos": ["clip.mp4"],
              "_source": {"file": "v.json", "row": 3}}
    with pytest.raises(DataError, match=r"llava \(llava\) takes no video: it reads image only") as info:
        encode_prompts(llava_engine, [record], 512)
    assert "v.json" in str(info.value) and "3" in str(info.value)
