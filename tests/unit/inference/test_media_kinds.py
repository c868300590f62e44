"""Media at inference are loaded and encoded as in training (image_max_pixels, video_maxlen,
audio_sampling_rate), and video and audio reach the model from chat, predict and the engine."""

from __future__ import annotations

import base64
import io
import json
import wave

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from tunery.config import parse_config
from tunery.data.collator import MediaCollator, PaddedCollator
from tunery.data.media import MediaEncoder, MediaSettings
from tunery.data.processors import OK, ProcessSettings, process_batch
from tunery.data.template import get_template
from tunery.errors import ConfigError, DataError
from tunery.inference import load_engine
from tunery.model.multimodal import load_processor


def write_wav(path, seconds: float = 1.0, rate: int = 8000) -> str:
    """A mono 16-bit WAV tone (8 kHz unless told: audio_sampling_rate resamples it)."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.sin(np.linspace(0, 300, int(seconds * rate))) * 9000).astype(np.int16).tobytes())
    return str(path)


def write_frames(folder, count: int = 4, size: int = 56):
    """A video as a folder of frame images."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (size, size), (40 * i, 100, 200 - 40 * i)).save(folder / f"{i:03d}.png")
    return folder


def engine_for(path, **settings):
    cfg = parse_config("chat", {"model_name_or_path": str(path), "do_sample": False, "max_new_tokens": 3, **settings})
    return cfg, load_engine(cfg)


def training_encoding(path, cfg, record: dict) -> tuple[int, dict]:
    """(media tokens, collated batch) of ``record`` through training's own pipeline (sft) with cfg's settings."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    media = MediaEncoder(load_processor(path), MediaSettings.from_model_args(cfg.model))
    full = {"tools": None, "chosen": None, "rejected": None, "kto_tag": None, "images": None, "videos": None,
            "audios": None, "_source": {"file": "f", "row": 0}, **record}
    out = process_batch({k: [v] for k, v in full.items()}, stage="sft", tokenizer=tokenizer,
                        template=get_template("auto", tokenizer), settings=ProcessSettings(cutoff_len=8192), media=media)
    assert out["_status"] == [OK], out["_error"]
    row = {k: v[0] for k, v in out.items() if not k.startswith("_")}
    batch = MediaCollator(PaddedCollator(tokenizer.pad_token_id or 0), media)([row])
    return media.count_media_tokens(row["input_ids"]), batch


def test_image_max_pixels_fits_the_image_before_the_processor_as_in_training(tiny_llava_next, tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100), (200, 30, 30)).save(big)
    cfg, engine = engine_for(tiny_llava_next, image_max_pixels=2048)
    seen = []
    image_processor_cls = type(engine.processor.image_processor)
    original = image_processor_cls.__call__

    def spy(self, images, *args, **kwargs):
        seen.extend(im.size for im in (images if isinstance(images, list) else [images]))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(image_processor_cls, "__call__", spy)
    prompt, extra = engine.prompt_inputs([{"role": "user", "content": "What is it?", "images": [str(big)]}])
    assert seen and all(w * h <= 2048 and (w, h) == (64, 32) for w, h in seen)  # 200x100 scaled down, aspect kept
    tokens, batch = training_encoding(tiny_llava_next, cfg, {
        "messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "Red."}],
        "images": [str(big)]})
    assert engine.media.count_media_tokens(prompt) == tokens
    assert np.array_equal(extra["pixel_values"].cpu().numpy(), batch["pixel_values"].numpy())
    assert extra["image_sizes"].tolist() == batch["image_sizes"].tolist() == [[32, 64]]  # (height, width)


def test_image_max_pixels_sets_the_image_token_count_of_qwen2_vl_as_in_training(tiny_vlm_factory, tmp_path):
    path = tiny_vlm_factory("qwen2_vl")  # skipped where torchvision is missing
    image = tmp_path / "sq.png"
    Image.new("RGB", (224, 224), (10, 200, 10)).save(image)
    counts = []
    for max_pixels in (56 * 56, 768 * 768):
        cfg, engine = engine_for(path, image_max_pixels=max_pixels)
        prompt, extra = engine.prompt_inputs([{"role": "user", "content": "What is it?", "images": [str(image)]}])
        tokens, batch = training_encoding(path, cfg, {
            "messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "Green."}],
            "images": [str(image)]})
        assert engine.media.count_media_tokens(prompt) == tokens
        assert extra["image_grid_thw"].tolist() == batch["image_grid_thw"].tolist()
        counts.append(tokens)
    assert counts[0] == 4 and counts[1] > counts[0]  # 56x56 -> 2x2 merged patches; bigger image -> more tokens


def test_audio_reaches_qwen2_audio_resampled_as_in_training(tiny_qwen2_audio, tmp_path):
    wav = write_wav(tmp_path / "tone.wav", seconds=1.0, rate=8000)
    cfg, engine = engine_for(tiny_qwen2_audio)
    messages = [{"role": "user", "content": "What is said?", "audios": [wav]}]
    prompt, extra = engine.prompt_inputs(messages)
    tokens, batch = training_encoding(tiny_qwen2_audio, cfg, {
        "messages": [{"role": "user", "content": "<audio>What is said?"}, {"role": "assistant", "content": "Hi."}],
        "audios": [wav]})
    assert engine.media.count_media_tokens(prompt) == tokens > 0
    assert int(extra["feature_attention_mask"].sum()) == int(batch["feature_attention_mask"].sum()) == 100  # 1 s
    reply = engine.chat(messages)[0]
    assert reply.completion_tokens >= 1 and reply.prompt_tokens == len(prompt)
    assert "".join(engine.stream_chat(messages)) == reply.text
    # the same audio as a data URL (what the API's input_audio part becomes) gives the same prompt
    data_url = "data:audio/wav;base64," + base64.b64encode(open(wav, "rb").read()).decode()
    assert engine.prompt_inputs([{"role": "user", "content": "What is said?", "audios": [data_url]}])[0] == prompt


def test_a_kind_the_model_cannot_take_is_one_clear_error(tiny_llava, tiny_qwen2_audio, tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    _, llava = engine_for(tiny_llava)
    with pytest.raises(ConfigError, match=r"llava \(llava\) takes no audio: it reads image only"):
        llava.chat([{"role": "user", "content": "hi", "audios": [wav]}])
    _, audio = engine_for(tiny_qwen2_audio)
    png = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(png)
    with pytest.raises(ConfigError, match=r"takes no image: it reads audio only"):
        audio.chat([{"role": "user", "content": "hi", "images": [str(png)]}])


def test_a_text_model_refuses_audio_naming_the_kind(tiny_chatml_model, tmp_path):
    _, engine = engine_for(tiny_chatml_model)
    with pytest.raises(ConfigError, match="takes no audios: it is a text model"):
        engine.chat([{"role": "user", "content": "hi", "audios": [write_wav(tmp_path / "a.wav")]}])


def test_video_frames_reach_qwen2_vl_with_video_maxlen_as_in_training(tiny_vlm_factory, tmp_path):
    path = tiny_vlm_factory("qwen2_vl")  # skipped where torchvision is missing
    frames = write_frames(tmp_path / "clip", count=6)
    counts = []
    for maxlen in (2, 6):
        cfg, engine = engine_for(path, video_maxlen=maxlen)
        messages = [{"role": "user", "content": "What happens?", "videos": [str(frames)]}]
        prompt, extra = engine.prompt_inputs(messages)
        frame_list = json.dumps([str(p) for p in sorted(frames.iterdir())])
        tokens, batch = training_encoding(path, cfg, {
            "messages": [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "A."}],
            "videos": [frame_list]})
        assert engine.media.count_media_tokens(prompt) == tokens
        assert extra["video_grid_thw"].tolist() == batch["video_grid_thw"].tolist()
        assert extra["video_grid_thw"].tolist()[0][0] == maxlen // 2  # frames in temporal patches of 2
        counts.append(tokens)
        if maxlen == 2:
            reply = engine.chat(messages)[0]
            assert reply.completion_tokens >= 1 and reply.prompt_tokens == len(prompt)
    assert counts[1] == 3 * counts[0]


def test_chat_session_video_and_audio_flags_and_repl_commands(tiny_qwen2_audio, tmp_path):
    from tunery.cli.chat import ChatSession, interactive, pop_options

    own, rest = pop_options(["--audio", "a.wav", "--video", "clip", "--query", "hi", "--do_sample", "false"])
    assert own == {"audio": "a.wav", "video": "clip", "query": "hi"} and rest == ["--do_sample", "false"]
    wav = write_wav(tmp_path / "a.wav")
    frames = write_frames(tmp_path / "clip", count=2)
    _, engine = engine_for(tiny_qwen2_audio)
    out = io.StringIO()
    session = ChatSession(engine, out=out)
    stdin = io.StringIO(f"/audio {wav}\n/video {frames}\n/audio /no/such.wav\n/video\nclear\n"
                        f"/audio {wav}\nWhat is said?\nexit\n")
    interactive(session, stdin=stdin)
    text = out.getvalue()
    assert f"Audio attached: {wav}" in text and f"Video attached: {frames}" in text
    assert "No such audio file: /no/such.wav" in text and "No such video file: (none given)" in text
    assert session.history[0] == {"role": "user", "content": "What is said?", "audios": [wav]}  # clear dropped the video
    assert session.history[1]["role"] == "assistant" and session.pending == {"images": [], "videos": [], "audios": []}


def test_predict_reads_the_audios_column(tiny_qwen2_audio, tmp_path):
    from tunery.inference.predict import run_predict

    (tmp_path / "media").mkdir()
    write_wav(tmp_path / "media" / "1.wav")
    rows = [{"messages": [{"role": "user", "content": "<audio>What is said?"},
                          {"role": "assistant", "content": "Good morning."}], "audios": ["1.wav"]},
            {"messages": [{"role": "user", "content": "<audio>Again?"}, {"role": "assistant", "content": "Yes."}],
             "audios": ["gone.wav"]}]
    (tmp_path / "audio.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"audio_demo": {
        "file_name": "audio.json", "formatting": "sharegpt", "columns": {"messages": "messages", "audios": "audios"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    base = {"model_name_or_path": str(tiny_qwen2_audio), "dataset": "audio_demo", "dataset_dir": str(tmp_path),
            "media_dir": str(tmp_path / "media"), "output_dir": str(tmp_path / "pred"), "max_new_tokens": 3,
            "do_sample": False}
    results = run_predict(parse_config("predict", {**base, "max_samples": 1}), progress=False)
    assert results["predict_samples"] == 1
    row = json.loads((tmp_path / "pred" / "generated_predictions.jsonl").read_text().splitlines()[0])
    assert row["label"] == "Good morning." and row["prompt"].count("<|AUDIO|>") > 0  # the audio expanded
    # the second row's file is missing: skipped as in training (listed), or with strict: true an error naming it
    assert run_predict(parse_config("predict", {**base, "output_dir": str(tmp_path / "p2")}),
                       progress=False)["predict_samples"] == 1
    with pytest.raises(DataError) as info:
        run_predict(parse_config("predict", {**base, "output_dir": str(tmp_path / "p3"), "strict": True}),
                    progress=False)
    assert "row 1" in str(info.value) and "audios" in str(info.value) and "gone.wav" in str(info.value)


@pytest.mark.slow  # three `tunery chat` processes (torch + transformers imports each)
def test_tunery_chat_audio_and_video_flags(tiny_qwen2_audio, tiny_llava, tmp_path):
    import subprocess
    import sys

    wav = write_wav(tmp_path / "a.wav")
    frames = write_frames(tmp_path / "clip", count=2)

    def chat(model, *flags):
        return subprocess.run([sys.executable, "-m", "tunery", "chat", "--model_name_or_path", str(model),
                               "--max_new_tokens", "3", "--do_sample", "false", "--query", "What is it?", *flags],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    ok = chat(tiny_qwen2_audio, "--audio", wav)
    assert ok.returncode == 0, ok.stderr
    for flags, needle in ((["--audio", wav], "llava (llava) takes no audio"),
                          (["--video", str(frames)], "llava (llava) takes no video")):
        refused = chat(tiny_llava, *flags)
        assert refused.returncode == 2 and needle in refused.stderr and "Traceback" not in refused.stderr


def test_media_features_follow_the_model_dtype(tiny_llava, tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(png)
    _, engine = engine_for(tiny_llava)
    engine.model.to(torch.bfloat16)  # as a GPU run loads it (on the CPU the loader keeps float32)
    prompt, extra = engine.prompt_inputs([{"role": "user", "content": "What is it?", "images": [str(png)]}])
    assert engine.model.dtype == extra["pixel_values"].dtype == torch.bfloat16
    reply = engine.chat([{"role": "user", "content": "What is it?", "images": [str(png)]}])[0]
    assert reply.completion_tokens >= 1


def test_chat_refuses_media_the_model_cannot_take_before_loading_it(tiny_chatml_model, tiny_llava, tmp_path,
                                                                    monkeypatch):
    import tunery.inference as inference
    from tunery.cli import chat

    def load_engine_must_not_run(cfg):
        raise AssertionError("the model was loaded before the media were checked")

    monkeypatch.setattr(inference, "load_engine", load_engine_must_not_run)
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png)
    wav = write_wav(tmp_path / "a.wav")
    with pytest.raises(ConfigError, match=r"takes no images: it is a text model"):
        chat.main(["--model_name_or_path", str(tiny_chatml_model), "--image", str(png), "--query", "hi"])
    with pytest.raises(ConfigError, match=r"\(llava\) takes no audio: it reads image only"):
        chat.main(["--model_name_or_path", str(tiny_llava), "--audio", str(wav), "--query", "hi"])
