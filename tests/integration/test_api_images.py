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
