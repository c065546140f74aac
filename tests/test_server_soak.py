"""Soak: 500 mixed requests on one rf-serve (demo model), with random disconnects and bad bodies.

Every good reply must be exactly the expected one (nothing lost, mixed up or cut), every bad
body must get its 4xx, and the server must still answer at the end; its RSS growth is
printed (``pytest -s``) and bounded. ``--long`` (or RFSDK_LONG_TESTS=1) sends 5,000.
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from server_process import Server, rf_serve

from rfsdk import DEFAULT_REFUSAL
from rfsdk.demo_model import DEMO_BENIGN_REPLY, DEMO_ENDLESS_PIECE, DEMO_ENDLESS_PREFILL, DEMO_TRIGGER_WORD

MODEL = "demo"
CLIENTS = 4
MAX_RSS_GROWTH_MB = 64
BAD_BODIES = [
    b"{not json",
    b"[]",
    json.dumps({"model": MODEL, "messages": []}).encode(),
    json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}).encode(),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": ""}]}).encode(),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3}).encode(),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "warm"}).encode(),
    json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "\ud800"}]}).encode(),
    b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
    b'{"model": "demo", "seed": ' + b"9" * 5000 + b"}",
]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _post(client: httpx.Client, server: Server, body: dict) -> dict:
    response = client.post(server.url + "/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _stream_text(client: httpx.Client, server: Server, body: dict) -> tuple[str, str]:
    text, finish = "", None
    with client.stream("POST", server.url + "/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        choice = json.loads(line[6:])["choices"][0]
        text += choice["delta"].get("content") or ""
        finish = choice["finish_reason"] or finish
    return text, finish


def _one(server: Server, i: int, rng: random.Random) -> str:
    kind = rng.choice(["benign", "benign-stream", "harmful", "harmful-stream", "count", "disconnect", "bad", "moderation"])
    with httpx.Client(timeout=60) as client:
        tag = f"request {i}"
        if kind == "benign":
            reply = _post(client, server, {"model": MODEL, "messages": [{"role": "user", "content": tag}], "temperature": 0})
            assert (reply["choices"][0]["message"]["content"], reply["choices"][0]["finish_reason"]) == (DEMO_BENIGN_REPLY, "stop")
        elif kind == "benign-stream":
            body = {"model": MODEL, "messages": [{"role": "user", "content": tag}], "temperature": 0}
            assert _stream_text(client, server, body) == (DEMO_BENIGN_REPLY, "stop")
        elif kind in ("harmful", "harmful-stream"):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"{tag}: a {DEMO_TRIGGER_WORD}"}]}
            if kind == "harmful":
                choice = _post(client, server, body)["choices"][0]
                got = (choice["message"]["content"], choice["finish_reason"])
            else:
                got = _stream_text(client, server, body)
            assert got == (DEFAULT_REFUSAL, "content_filter")
        elif kind == "count":
            n = rng.randint(1, 60)
            messages = [{"role": "user", "content": tag}, {"role": "assistant", "content": DEMO_ENDLESS_PREFILL}]
            body = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": n}
            assert _stream_text(client, server, body) == (DEMO_ENDLESS_PIECE * n, "length")
        elif kind == "disconnect":
            messages = [{"role": "user", "content": tag}, {"role": "assistant", "content": DEMO_ENDLESS_PREFILL}]
            body = {"model": MODEL, "messages": messages, "max_tokens": 3000, "stream": True}
            with client.stream("POST", server.url + "/chat/completions", json=body) as response:
                lines = response.iter_lines()
                for _ in range(rng.randint(0, 30)):
                    next(lines)
            # leaving the block closes the connection mid-stream
        elif kind == "bad":
            response = client.post(server.url + "/chat/completions", content=rng.choice(BAD_BODIES))
            assert 400 <= response.status_code < 500 and response.json()["error"]["message"]
        else:
            texts = [tag, f"{tag} {DEMO_TRIGGER_WORD}"]
            results = client.post(server.url + "/moderations", json={"input": texts}).json()["results"]
            assert [r["flagged"] for r in results] == [False, True]
    return kind


def test_soak(demo_model_path: Path, long_mode: bool) -> None:
    total = 5000 if long_mode else 500
    rng = random.Random(21)
    seeds = [rng.randrange(1 << 30) for _ in range(total)]
    with rf_serve(demo_model_path, "--max-queue", "64", "--n-ctx", "4096") as server:
        with ThreadPoolExecutor(CLIENTS) as pool:  # warm-up, then the baseline RSS
            list(pool.map(lambda i: _one(server, i, random.Random(i)), range(40)))
        before = _rss_mb(server.process.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            kinds = list(pool.map(lambda i: _one(server, i, random.Random(seeds[i])), range(total)))
        took = time.monotonic() - started
        after = _rss_mb(server.process.pid)
        assert httpx.get(server.root + "/health").json()["status"] == "ok"
        final = httpx.post(server.url + "/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0})
        assert final.json()["choices"][0]["message"]["content"] == DEMO_BENIGN_REPLY
        assert "Traceback" not in server.log_text()
    counts = {kind: kinds.count(kind) for kind in sorted(set(kinds))}
    print(f"\nsoak: {total} requests in {took:.1f} s ({counts}); server RSS {before:.1f} -> {after:.1f} MB ({after - before:+.1f} MB)")
    assert counts.get("disconnect", 0) > total // 20 and counts.get("bad", 0) > total // 20
    assert after - before < MAX_RSS_GROWTH_MB
