"""rf-serve as a service: API key, CORS, the bounded queue in arrival order, disconnects, concurrency.

On the demo model; a reply prefilled with DEMO_ENDLESS_PREFILL never ends by itself, so
such a stream holds the model for as long as the test keeps it open.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from server_process import Server, rf_serve

from rfsdk.demo_model import DEMO_ECHO_PREFILL, DEMO_ENDLESS_PREFILL, DEMO_TRIGGER_WORD

MODEL = "demo"
ENDLESS = [{"role": "user", "content": "Count"}, {"role": "assistant", "content": DEMO_ENDLESS_PREFILL}]


def hello(text: str = "Hello") -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "temperature": 0}


# ----- API key, CORS ---------------------------------------------------------------------------


def test_api_key(demo_model_path: Path) -> None:
    with rf_serve(demo_model_path, "--api-key", "s3cret") as server:
        url = server.url + "/chat/completions"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}, {"Authorization": "Bearer s3cretX"}, {"Authorization": "Bearer s3cre"}):
            response = httpx.post(url, json=hello(), headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert "Bearer KEY" in response.json()["error"]["message"]
            assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(server.url + "/models").status_code == 401
        assert httpx.post(server.url + "/moderations", json={"input": "hi"}).status_code == 401
        assert httpx.get(server.root + "/health").status_code == 200  # liveness needs no key
        with pytest.raises(openai.AuthenticationError):
            server.client("wrong").models.list()
        client = server.client("s3cret")
        assert client.chat.completions.create(**hello()).choices[0].finish_reason == "stop"


def test_api_key_from_the_environment(demo_model_path: Path) -> None:
    with rf_serve(demo_model_path, env={"RF_SERVE_API_KEY": "k"}) as server:
        assert httpx.get(server.url + "/models").status_code == 401
        assert httpx.get(server.url + "/models", headers={"Authorization": "Bearer k"}).status_code == 200


def test_no_cors_unless_asked(demo_model_path: Path) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    with rf_serve(demo_model_path) as server:
        response = httpx.options(server.url + "/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        response = httpx.post(server.url + "/chat/completions", json=hello(), headers={"Origin": "http://app.example"})
        assert "access-control-allow-origin" not in response.headers
    with rf_serve(demo_model_path, "--cors", "http://app.example") as server:
        response = httpx.options(server.url + "/chat/completions", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://app.example"
        evil = httpx.options(server.url + "/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in evil.headers


def test_body_limit_also_without_content_length(demo_model_path: Path) -> None:
    with rf_serve(demo_model_path, "--max-body", "2048") as server:
        url = server.url + "/chat/completions"
        assert httpx.post(url, json=hello("x" * 1000)).status_code == 200
        assert httpx.post(url, json=hello("x" * 3000)).status_code == 413
        chunked = httpx.post(url, content=iter([b'{"model": "demo", "messages": [', b" " * 1024, b" " * 1024, b"]}"]))
        assert chunked.status_code == 413 and "--max-body" in chunked.json()["error"]["message"]


# ----- queue, order, disconnects ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_queue(demo_model_path: Path):
    with rf_serve(demo_model_path, "--max-queue", "3", "--n-ctx", "32768") as server:
        yield server


def _health(server: Server) -> dict:
    return httpx.get(server.root + "/health").json()


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class _Holder:
    """A stream that never ends by itself: it holds the model until :meth:`release`."""

    def __init__(self, server: Server) -> None:
        self._client = httpx.Client(timeout=60)
        body = {"model": MODEL, "messages": ENDLESS, "stream": True, "max_tokens": 30000, "temperature": 0}
        self._stream = self._client.stream("POST", server.url + "/chat/completions", json=body)
        self.response = self._stream.__enter__()
        self.lines = self.response.iter_lines()
        for _ in range(4):  # the role chunk and some tokens: the turn is running
            next(self.lines)

    def release(self) -> None:
        self._stream.__exit__(None, None, None)
        self._client.close()


def test_queue_full_gives_503_and_turns_run_in_arrival_order(small_queue: Server) -> None:
    holder = _Holder(small_queue)
    done: list[int] = []
    lock = threading.Lock()

    def ask(i: int) -> httpx.Response:
        # Each turn writes 300 tokens, so one ends well before the next: the order in which
        # the clients see their replies end is the order the server ran the turns in.
        body = {"model": MODEL, "messages": ENDLESS, "max_tokens": 300, "temperature": 0}
        response = httpx.post(small_queue.url + "/chat/completions", json=body, timeout=60)
        with lock:
            done.append(i)
        return response

    with ThreadPoolExecutor(3) as pool:
        futures = []
        for i in range(3):
            futures.append(pool.submit(ask, i))
            _wait_for(lambda: _health(small_queue)["waiting"] == i + 1)
        full = httpx.post(small_queue.url + "/chat/completions", json=hello())
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1"
        assert full.json()["error"]["code"] == "queue_full" and "--max-queue" in full.json()["error"]["message"]
        holder.release()
        assert all(f.result().status_code == 200 for f in futures)
    assert done == [0, 1, 2]


def test_disconnect_cancels_the_turn_within_a_token(small_queue: Server) -> None:
    holder = _Holder(small_queue)
    _wait_for(lambda: _health(small_queue)["busy"])
    released = time.perf_counter()
    holder.release()
    # Left running, the 30,000-token turn would hold the model for seconds more.
    reply = httpx.post(small_queue.url + "/chat/completions", json=hello(), timeout=60)
    took = time.perf_counter() - released
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] == "stop"
    assert took < 1.0, f"the next request waited {took:.2f} s"


def test_a_client_that_leaves_the_queue_frees_its_place(small_queue: Server) -> None:
    holder = _Holder(small_queue)
    try:
        with httpx.Client(timeout=0.5) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                impatient.post(small_queue.url + "/chat/completions", json=hello())
        _wait_for(lambda: _health(small_queue)["waiting"] == 0)
    finally:
        holder.release()


# ----- concurrency -----------------------------------------------------------------------------


def _requests() -> list[dict]:
    prompts = [
        ("Hello", None),
        ("Count", DEMO_ENDLESS_PREFILL),
        ("Echo", DEMO_ECHO_PREFILL),  # <rf> at P=0.3 after every piece: sampled flags depend on the seed
        (f"A {DEMO_TRIGGER_WORD}", None),
    ]
    bodies = []
    for i in range(8):
        text, prefill = prompts[i % len(prompts)]
        messages = [{"role": "user", "content": f"{text} #{i}"}]
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        bodies.append({"messages": messages, "temperature": 1.0, "seed": 1000 + i, "max_tokens": 40})
    return bodies


def _streamed(client: openai.OpenAI, body: dict) -> tuple[str, str, list]:
    chunks = list(client.chat.completions.create(model=MODEL, stream=True, **body))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    flags = [(f["position"], f["source"], f["action"]) for f in final.model_extra["rf"]["flags"]]
    return text, final.choices[0].finish_reason, flags


def test_eight_concurrent_seeded_clients_get_their_serial_replies(demo_model_path: Path) -> None:
    with rf_serve(demo_model_path) as server:
        client = server.client(timeout=120)
        bodies = _requests()
        alone = [_streamed(client, body) for body in bodies]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda body: _streamed(client, body), bodies))
    assert together == alone
    assert len({reply for reply, _, _ in alone}) >= 4  # different requests, different replies
    assert any(finish == "content_filter" for _, finish, _ in alone)
    for i, (text, _, _) in enumerate(alone):
        assert f"#{i}" not in text  # nothing of another request's prompt


def test_the_bundled_model_when_none_is_named(tmp_path: Path) -> None:
    env = {"RFSDK_DEFAULT_MODEL": "demo", "RFSDK_CACHE": str(tmp_path)}
    with rf_serve(None, env=env) as server:
        (model,) = httpx.get(server.url + "/models").json()["data"]
        reply = httpx.post(server.url + "/chat/completions", json={**hello(), "model": model["id"]}).json()
    assert model["id"] == "rfsdk-demo-v1" and reply["choices"][0]["finish_reason"] == "stop"


# ----- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,words",
    [
        (["--model", "/nonexistent/model.gguf"], "model.gguf"),
        (["--audit-text"], "--audit-text needs --audit-log"),
        (["--model-file", "x.gguf"], "--model-file names a file"),
        (["--classifier", "bogus"], "not none, text or a .gguf"),
    ],
)
def test_command_line_errors(args: list[str], words: str, demo_model_path: Path) -> None:
    from click.testing import CliRunner

    from rfsdk.cli.serve import main

    model = [] if "--model" in args or "--model-file" in args else ["--model", str(demo_model_path)]
    result = CliRunner().invoke(main, [*model, "--threads", "1", *args])
    assert result.exit_code != 0 and result.exception is None or isinstance(result.exception, SystemExit)
    assert words in result.output


def test_a_model_without_rf_is_refused(demo_model_no_rf_path: Path) -> None:
    from click.testing import CliRunner

    from rfsdk.cli.serve import main

    result = CliRunner().invoke(main, ["--model", str(demo_model_no_rf_path), "--threads", "1"])
    assert result.exit_code == 1 and "<rf>" in result.output and "Traceback" not in result.output
