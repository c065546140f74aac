"""rf-serve vs llama-cpp-python's own OpenAI server on the same model, requests and client.

Starts both servers on the trained default model (one llama.cpp thread each, the same
context size), then sends the same streamed chat requests to each, interleaved round by
round, with one client and with four concurrent clients, through one raw SSE client
(httpx). Greedy, 128 tokens at most, repeat penalty off on both. rf-serve runs with
--policy continue so a false positive on a benign prompt cannot shorten its replies (the
guard does the same work either way). Prints decode tokens/s, aggregate tokens/s and time
to first token per server and the rf-serve/llama-cpp-python ratios. Needs the server extra
and llama-cpp-python's server dependencies (`pip install 'llama-cpp-python[server]'`). Run:
python bench/serve.py [--rounds N] [--threads N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from rfsdk import default_model

PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a bicycle works, part by part.",
    "List twenty facts about the ocean, one per line.",
    "Describe a walk through a busy market in the morning.",
]
N_CTX = 4096


@dataclass
class Server:
    name: str
    url: str
    model: str
    process: subprocess.Popen


@dataclass
class Sample:
    ttft_s: float
    tokens: int
    decode_s: float
    total_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, command: list[str], port: int, model: str) -> Server:
    log = open(Path(tempfile.gettempdir()) / f"bench-serve-{name}.log", "wb")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, f"http://127.0.0.1:{port}/v1", model, process)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{name} exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(server.url + "/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    sys.exit(f"{name} did not start within 180 s; see {log.name}")


def stream(server: Server, prompt: str, max_tokens: int) -> Sample:
    """One streamed request; every SSE chunk with content counts as one token."""
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "seed": 1,
    }
    sent = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                last = time.perf_counter()
                first = first or last
                tokens += 1
    end = time.perf_counter()
    if first is None:
        return Sample(end - sent, 0, 0.0, end - sent)
    return Sample(first - sent, tokens, last - first, end - sent)


def run_batch(server: Server, clients: int, max_tokens: int) -> tuple[list[Sample], float]:
    """``clients`` requests at once (PROMPTS in turn); the samples and the wall time of the batch."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients if clients > 1 else len(PROMPTS))]
    started = time.perf_counter()
    if clients == 1:
        samples = [stream(server, p, max_tokens) for p in prompts]
    else:
        with ThreadPoolExecutor(clients) as pool:
            samples = list(pool.map(lambda p: stream(server, p, max_tokens), prompts))
    return samples, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    info = default_model()
    path = str(info.path)
    print(f"model: {info.description}\n  {path}", flush=True)
    rf_port, llama_port = free_port(), free_port()
    servers = [
        start("rf-serve", [sys.executable, "-m", "rfsdk.cli.serve", "-m", path, "--port", str(rf_port),
                           "--threads", str(args.threads), "--n-ctx", str(N_CTX), "--policy", "continue",
                           "--log-level", "warning"], rf_port, Path(path).stem),
        start("llama-cpp-python", [sys.executable, "-m", "llama_cpp.server", "--model", path, "--port", str(llama_port),
                                   "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                                   "--n_ctx", str(N_CTX), "--interrupt_requests", "False"], llama_port, path),
    ]
    try:
        for server in servers:  # warm-up: load pages, fill caches
            stream(server, PROMPTS[0], 8)
        results: dict[tuple[str, int], list[tuple[list[Sample], float]]] = {}
        for round_ in range(args.rounds):
            for clients in (1, 4):
                for server in servers if round_ % 2 == 0 else servers[::-1]:
                    results.setdefault((server.name, clients), []).append(run_batch(server, clients, args.max_tokens))
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=30)
    report(results, [s.name for s in servers])


def report(results: dict, names: list[str]) -> None:
    print("\n| clients | server | decode tok/s (median) | aggregate tok/s | TTFT ms (median) | tokens | vs llama-cpp-python tok/s | TTFT +ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for clients in (1, 4):
        figures = {}
        for name in names:
            batches = results[(name, clients)]
            samples = [s for batch, _ in batches for s in batch]
            decode = statistics.median((s.tokens - 1) / s.decode_s for s in samples if s.tokens > 1 and s.decode_s > 0)
            aggregate = sum(s.tokens for s in samples) / sum(wall for _, wall in batches)
            ttft_ms = 1000 * statistics.median(s.ttft_s for s in samples)
            figures[name] = (decode, aggregate, ttft_ms, sum(s.tokens for s in samples))
        base = figures[names[1]]
        for name in names:
            decode, aggregate, ttft_ms, tokens = figures[name]
            print(f"| {clients} | {name} | {decode:.1f} | {aggregate:.1f} | {ttft_ms:.1f} | {tokens} | "
                  f"{aggregate / base[1]:.3f} | {ttft_ms - base[2]:+.1f} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
