"""Start a real rf-serve process on a free local port, for the server tests and the bench."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

STARTUP_TIMEOUT_S = 90.0


@dataclass
class Server:
    url: str
    """The API's base URL, ending in /v1."""
    root: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, api_key: str = "unused", **options: Any) -> Any:
        """An official ``openai.OpenAI`` client of this server that never retries (``options``: e.g. timeout)."""
        import openai

        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def rf_serve(model: Path | None, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``rf-serve -m model *args`` (one llama.cpp thread; no -m for None) until the block ends."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="rf-serve-", suffix=".log")[1])
    model_args = [] if model is None else ["-m", str(model)]
    command = [sys.executable, "-m", "rfsdk.cli.serve", *model_args, "--port", str(port), "--threads", "1", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"rf-serve exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.root + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"rf-serve did not answer /health within {STARTUP_TIMEOUT_S} s:\n{server.log_text()}")
