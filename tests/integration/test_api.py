"""The OpenAI-compatible server, driven by the official ``openai`` client over loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn

from tests.unit.scripted_model import script_model
from tunery.api.app import create_app
from tunery.api.server import bind_address
from tunery.config import parse_config
from tunery.errors import ConfigError
from tunery.inference import load_engine
from tunery.inference.engine import Engine, Response, TextStream

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ScriptedReplyEngine(Engine):
    """Real tokenizer and template, fixed reply text: for replies a random model cannot produce."""

    def __init__(self, base: Engine, template, reply: str):
        super().__init__(base.tokenizer, template, base.generating_args, "scripted")
        self.reply, self.prompts = reply, []

    def batch_generate(self, prompts, **gen):
        self.prompts.extend(prompts)
        return [Response(self.reply, len(p), 7, "stop") for p in prompts]

    def stream_generate(self, prompt, **gen):
        return TextStream(iter([self.reply]), len(prompt))


@pytest.fixture(scope="module")
def paris_engine(tiny_chatml_model):
    engine = load_engine(parse_config("api", {"model_name_or_path": str(tiny_chatml_model), "do_sample": False}))
    tok = engine.tokenizer
    last = engine.prompt_ids([{"role": "user", "content": "x"}])[-1]
    script_model(engine.model, [last, *tok.encode(" Paris is"), tok.convert_tokens_to_ids("<|im_end|>")])
    return engine


@pytest.fixture(scope="module")
def base_url(paris_engine):
    with LiveServer(create_app(paris_engine, model_name="tiny-paris")) as url:
        yield url


@pytest.fixture()
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_plain_completion(client, paris_engine):
    assert [m.id for m in client.models.list().data] == ["tiny-paris"]
    res = client.chat.completions.create(model="tiny-paris", messages=QUESTION, temperature=0, max_tokens=20)
    choice = res.choices[0]
    assert choice.message.content == " Paris is" and choice.finish_reason == "stop"
    assert res.usage.prompt_tokens == len(paris_engine.prompt_ids(QUESTION))
    assert res.usage.completion_tokens == 3 and res.usage.total_tokens == res.usage.prompt_tokens + 3


def test_max_tokens_stop_and_n(client):
    short = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=1)
    assert short.choices[0].message.content == " Paris" and short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 1
    cut = client.chat.completions.create(model="m", messages=QUESTION, stop=[" is"], temperature=0)
    assert cut.choices[0].message.content == " Paris" and cut.choices[0].finish_reason == "stop"
    two = client.chat.completions.create(model="m", messages=QUESTION, n=2, temperature=0, top_p=0.9)
    assert [c.index for c in two.choices] == [0, 1]
    assert {c.message.content for c in two.choices} == {" Paris is"}


def test_streaming(client, base_url):
    chunks = list(client.chat.completions.create(model="m", messages=QUESTION, stream=True, temperature=0,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " Paris is"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage.completion_tokens == 3
    raw = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "m", "messages": QUESTION, "stream": True},
                     timeout=60)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_tool_call_round_trip(paris_engine):
    from tunery.data.template import get_template

    engine = ScriptedReplyEngine(paris_engine, get_template("qwen", paris_engine.tokenizer),
                                 '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    with LiveServer(create_app(engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        res = client.chat.completions.create(model="scripted", messages=QUESTION, tools=[WEATHER_TOOL])
        choice = res.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        assert "get_weather" in engine.tokenizer.decode(engine.prompts[-1])  # the schema reached the prompt

        follow = [*QUESTION, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
        client.chat.completions.create(model="scripted", messages=follow, tools=[WEATHER_TOOL])
        prompt = engine.tokenizer.decode(engine.prompts[-1])
        assert '{"sky": "sunny"}' in prompt and prompt.count("get_weather") >= 2

        chunks = list(client.chat.completions.create(model="scripted", messages=QUESTION, tools=[WEATHER_TOOL],
                                                     stream=True))
        streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert streamed[0].function.name == "get_weather"


def test_tools_refused_when_the_template_has_none(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=QUESTION, tools=[WEATHER_TOOL])
    assert "does not support tools" in str(err.value)


def test_api_key_required(paris_engine):
    with LiveServer(create_app(paris_engine, api_key="s3cret")) as url:
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="m", messages=QUESTION)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        raw = httpx.get(f"{url}/v1/models")
        assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="m", messages=QUESTION).choices[0].message.content == " Paris is"


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 422, "JSON"),
    (b"[1, 2]", 422, ""),
    ({"model": "m"}, 422, "messages"),
    ({"model": "m", "messages": []}, 422, "messages"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, 422, "role"),
    ({"model": "m", "messages": QUESTION, "temperature": -1}, 422, "temperature"),
    ({"model": "m", "messages": QUESTION, "max_tokens": "many"}, 422, "max_tokens"),
    ({"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message"),
    ({"model": "m", "messages": [*QUESTION, {"role": "system", "content": "late"}]}, 400, "system"),
    ({"model": "m", "messages": QUESTION, "stream": True, "n": 2}, 400, "n = 1"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "image_url"),
])
def test_malformed_requests_get_json_errors(base_url, body, status, needle):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    res = httpx.post(f"{base_url}/v1/chat/completions", timeout=60, **kwargs)
    assert res.status_code == status
    assert needle in res.json()["error"]["message"]


def test_malformed_request_through_the_client(client):
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="m", messages=QUESTION, top_p=5)


def test_eight_concurrent_requests_are_queued(client, paris_engine):
    def ask(i):
        if i % 2:
            stream = client.chat.completions.create(model="m", messages=QUESTION, stream=True, max_tokens=10)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return client.chat.completions.create(model="m", messages=QUESTION, max_tokens=10).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert answers == [" Paris is"] * 8
    assert not paris_engine.lock.locked()


def test_bind_address_defaults_and_checks():
    assert bind_address({}) == ("127.0.0.1", 8000)
    assert bind_address({"API_HOST": "0.0.0.0", "API_PORT": "9001"}) == ("0.0.0.0", 9001)
    with pytest.raises(ConfigError, match="API_PORT"):
        bind_address({"API_PORT": "eighty"})


def test_tunery_api_command(tiny_chatml_model):
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_KEY": "k3y", "API_MODEL_NAME": "served"}
    env.pop("API_HOST", None)
    proc = subprocess.Popen([sys.executable, "-m", "tunery", "api", "--model_name_or_path", str(tiny_chatml_model),
                             "--max_new_tokens", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                res = httpx.get(url, headers={"Authorization": "Bearer k3y"})
                break
            except httpx.ConnectError:
                assert time.time() < deadline, "tunery api did not start"
                time.sleep(0.5)
        assert res.json()["data"][0]["id"] == "served"
        assert httpx.get(url).status_code == 401
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k3y", max_retries=0)
        res = client.chat.completions.create(model="served", messages=QUESTION)
        assert res.usage.completion_tokens <= 4
    finally:
        proc.terminate()
        proc.wait(timeout=30)
