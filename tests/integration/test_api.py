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
import torch
import uvicorn

from tests.unit.scripted_model import script_model
from tunery.api.app import ServerLimits, create_app
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


# -- limits, cancellation and batching ------------------------------------------------------------

def wait_until(condition, seconds=60.0):
    """Poll ``condition`` (bounded wait; no assertion on how fast)."""
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def looping_engine(tiny_chatml_model):
    """Greedily says ' Paris is Paris is ...' and never ends its turn; each forward pass sleeps ``delay[0]`` s."""
    engine = load_engine(parse_config("api", {"model_name_or_path": str(tiny_chatml_model), "do_sample": False}))
    tok = engine.tokenizer
    words = [tok.convert_tokens_to_ids(t) for t in tok.tokenize(" Paris is")]
    script_model(engine.model, [engine.prompt_ids(QUESTION)[-1], *words])
    with torch.no_grad():
        engine.model.lm_head.weight[words[0], len(words)] = 10.0  # after ' is' comes ' Paris' again
    engine.delay = [0.0]
    engine.model.register_forward_hook(lambda *_: time.sleep(engine.delay[0]))
    return engine


def serve(engine, **limits):
    return LiveServer(create_app(engine, limits=ServerLimits(**limits)))


def cancelled_rows(app):
    return [tokens for reason, tokens in app.state.batcher.history if reason == "cancelled"]


def test_stream_disconnect_cancels_and_the_next_request_is_served(looping_engine):
    looping_engine.delay[0] = 0.02  # 400 tokens would take 8 s or more
    app = create_app(looping_engine, limits=ServerLimits())
    with LiveServer(app) as url:
        with httpx.Client(timeout=60) as http:
            body = {"model": "m", "messages": QUESTION, "stream": True, "max_tokens": 400}
            with http.stream("POST", f"{url}/v1/chat/completions", json=body) as res:
                first = next(line for line in res.iter_lines() if '"content": " Paris"' in line)
                assert first.startswith("data: ")  # the reply is streaming; leave after its first word
        # the client is gone: its generation stops
        wait_until(lambda: cancelled_rows(app))
        assert cancelled_rows(app)[0] < 400
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        res = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=3)
        assert res.choices[0].message.content == " Paris is Paris" and res.choices[0].finish_reason == "length"


def test_non_streaming_client_timeout_cancels_its_generation(looping_engine):
    looping_engine.delay[0] = 0.02
    app = create_app(looping_engine, limits=ServerLimits())
    with LiveServer(app) as url:
        impatient = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=1.0)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model="m", messages=QUESTION, max_tokens=400)
        wait_until(lambda: cancelled_rows(app))
        assert cancelled_rows(app)[0] < 400
        looping_engine.delay[0] = 0.0
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        assert client.chat.completions.create(model="m", messages=QUESTION, max_tokens=2).usage.completion_tokens == 2


def test_max_tokens_is_capped_by_the_server_and_the_context(looping_engine):
    looping_engine.delay[0] = 0.0
    with serve(looping_engine, max_tokens=5) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        res = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=1_000_000_000)
        assert res.choices[0].finish_reason == "length" and res.usage.completion_tokens == 5
        streamed = list(client.chat.completions.create(model="m", messages=QUESTION, max_tokens=1_000_000_000,
                                                       stream=True, stream_options={"include_usage": True}))
        assert streamed[-1].usage.completion_tokens == 5
    with serve(looping_engine, max_tokens=100_000) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
        res = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=1_000_000_000)
        room = looping_engine.context_length - res.usage.prompt_tokens
        assert res.choices[0].finish_reason == "length" and res.usage.completion_tokens == room
        assert res.usage.total_tokens == looping_engine.context_length


def test_prompt_longer_than_the_context_is_400(paris_engine, base_url):
    long = [{"role": "user", "content": "1 2 3 4 5 6 7 8 9 10 " * 60}]
    assert len(paris_engine.prompt_ids(long)) > paris_engine.context_length
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=long)
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    assert "maximum context length is 512 tokens" in err.value.message
    for stream in (True, False):
        raw = httpx.post(f"{base_url}/v1/chat/completions", json={"messages": long, "stream": stream}, timeout=60)
        assert raw.status_code == 400 and raw.json()["error"]["code"] == "context_length_exceeded"


def test_request_body_limit_is_413(paris_engine):
    with serve(paris_engine, max_body_bytes=4096) as url:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 10_000}]}).encode()
        res = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"},
                         timeout=60)
        assert res.status_code == 413 and res.json()["error"]["code"] == "request_too_large"
        chunked = httpx.post(f"{url}/v1/chat/completions", content=iter([body[:3000], body[3000:]]),
                             headers={"content-type": "application/json"}, timeout=60)
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413
        small = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": QUESTION}, timeout=60)
        assert small.status_code == 200 and small.json()["choices"][0]["message"]["content"] == " Paris is"


def test_concurrent_requests_share_one_batch_with_one_at_a_time_outputs(tiny_chatml_model):
    engine = load_engine(parse_config("api", {"model_name_or_path": str(tiny_chatml_model), "do_sample": False}))
    convs = [QUESTION, [{"role": "user", "content": "Write a short poem about the sea and the sky, please."}],
             [{"role": "user", "content": "1 2 3"}], [{"role": "user", "content": "def add(a, b):"}]]
    expected = [engine.chat(c, max_new_tokens=10)[0] for c in convs]
    app = create_app(engine, limits=ServerLimits(max_batch_size=4, batch_window_ms=5000))
    with LiveServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)

        def ask(i):
            if i % 2:
                chunks = client.chat.completions.create(model="m", messages=convs[i], max_tokens=10, stream=True)
                return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return client.chat.completions.create(model="m", messages=convs[i], max_tokens=10).choices[0].message.content

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(4)))
    assert answers == [r.text for r in expected]
    assert app.state.batcher.stats["largest_batch"] == 4 and app.state.batcher.stats["batches"] == 1


def test_server_limits_from_env():
    assert ServerLimits.from_env({}) == ServerLimits()
    limits = ServerLimits.from_env({"API_MAX_BATCH_SIZE": "1", "API_MAX_TOKENS": "64", "API_MAX_BODY_BYTES": "1000",
                                    "API_BATCH_WINDOW_MS": "0"})
    assert (limits.max_batch_size, limits.max_tokens, limits.max_body_bytes, limits.batch_window_ms) == (1, 64, 1000, 0)
    with pytest.raises(ConfigError, match="API_MAX_BATCH_SIZE"):
        ServerLimits.from_env({"API_MAX_BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="API_MAX_TOKENS"):
        ServerLimits.from_env({"API_MAX_TOKENS": "lots"})
