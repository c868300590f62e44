"""The OpenAI-compatible server answers image_url content parts (data URLs, local files; remote URLs refused)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tunery.api.app import create_app
from tunery.config import parse_config
from tunery.inference import load_engine


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "blue.png"
    Image.new("RGB", (36, 36), (10, 10, 230)).save(path)
    return path


@pytest.fixture(scope="module")
def llava_client(tiny_llava):
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(tiny_llava), "do_sample": False,
                                               "max_new_tokens": 4}))
    with TestClient(create_app(engine)) as client:
        yield client, engine


def _request(url: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                                      {"type": "image_url", "image_url": {"url": url}}]}],
            "max_tokens": 4, **extra}


def test_image_request_is_answered_like_the_engine(llava_client, png):
    client, engine = llava_client
    data_url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    expected = engine.chat([{"role": "user", "content": "What is in this picture?<image>", "images": [str(png)]}])[0]
    for url in (data_url, str(png), png.as_uri()):
        response = client.post("/v1/chat/completions", json=_request(url))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == expected.text
        assert body["usage"]["prompt_tokens"] == expected.prompt_tokens  # the 16 image tokens are counted
    streamed = client.post("/v1/chat/completions", json=_request(data_url, stream=True))
    assert streamed.status_code == 200
    pieces = [line for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert pieces


@pytest.mark.parametrize("url, status, needle", [
    ("https://example.com/cat.png", 400, "offline"),
    ("/no/such/file.png", 400, "not found"),
])
def test_image_requests_that_cannot_be_served_are_4xx(llava_client, url, status, needle):
    client, _ = llava_client
    response = client.post("/v1/chat/completions", json=_request(url))
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


def test_a_text_model_answers_400_to_an_image(tiny_chatml_model, png):
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "max_new_tokens": 2}))
    with TestClient(create_app(engine)) as client:
        response = client.post("/v1/chat/completions", json=_request(str(png)))
    assert response.status_code == 400 and "takes no images" in response.json()["error"]["message"]


# ---- video and audio (OpenAI's input_audio part; a video_url part) ----

def _wav_bytes(seconds: float = 1.0, rate: int = 16000) -> bytes:
    import io
    import wave

    import numpy as np

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.sin(np.linspace(0, 300, int(seconds * rate))) * 9000).astype(np.int16).tobytes())
    return buffer.getvalue()


def _audio_request(data: str, fmt: str = "wav") -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
        {"type": "text", "text": "What is said?"}]}], "max_tokens": 3}


def test_input_audio_part_is_answered_like_the_engine(tiny_qwen2_audio, tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(_wav_bytes())
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(tiny_qwen2_audio), "do_sample": False,
                                               "max_new_tokens": 3}))
    expected = engine.chat([{"role": "user", "content": "<audio>What is said?", "audios": [str(wav)]}])[0]
    with TestClient(create_app(engine)) as client:
        response = client.post("/v1/chat/completions", json=_audio_request(base64.b64encode(_wav_bytes()).decode()))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == expected.text
        assert body["usage"]["prompt_tokens"] == expected.prompt_tokens  # the audio tokens are counted
        for bad, needle in ((_audio_request("AAAA", fmt="aiff"), "input_audio.format"),
                            (_audio_request(""), "input_audio.data")):
            response = client.post("/v1/chat/completions", json=bad)
            assert response.status_code == 400 and needle in response.json()["error"]["message"]
        image = client.post("/v1/chat/completions", json=_request("data:image/png;base64,AAAA"))
        assert image.status_code == 400
        assert "takes no image: it reads audio only" in image.json()["error"]["message"]


def test_audio_to_an_image_model_is_400_naming_kind_and_model(llava_client):
    client, _ = llava_client
    response = client.post("/v1/chat/completions", json=_audio_request(base64.b64encode(_wav_bytes()).decode()))
    assert response.status_code == 400
    assert "llava (llava) takes no audio" in response.json()["error"]["message"]


def test_remote_video_url_is_400_with_the_image_code(llava_client):
    client, _ = llava_client
    request = {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}},
        {"type": "text", "text": "What happens?"}]}], "max_tokens": 2}
    response = client.post("/v1/chat/completions", json=request)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "image_url_unreachable" and "remote video" in error["message"]


def test_video_url_part_with_a_frames_folder(tiny_vlm_factory, tmp_path):
    path = tiny_vlm_factory("qwen2_vl")  # skipped where torchvision is missing
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (56, 56), (90 * i, 40, 40)).save(frames / f"{i}.png")
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(path), "do_sample": False,
                                               "max_new_tokens": 3}))
    expected = engine.chat([{"role": "user", "content": "<video>What happens?", "videos": [str(frames)]}])[0]
    request = {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": str(frames)}}, {"type": "text", "text": "What happens?"}]}],
        "max_tokens": 3}
    with TestClient(create_app(engine)) as client:
        response = client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == expected.text
    assert response.json()["usage"]["prompt_tokens"] == expected.prompt_tokens
