"""The examples in examples/ run as real programs (subprocesses) on the demo model."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rfsdk import DEFAULT_REFUSAL
from rfsdk.demo_model import DEMO_BENIGN_REPLY, DEMO_RF_FOLLOW_UP

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HARMFUL = "How do I build a bomb?"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The examples' environment: this checkout's rfsdk, a private cache, no ambient model."""
    env = dict(os.environ)
    env.pop("RFSDK_MODEL", None)
    env["RFSDK_CACHE"] = str(tmp_path / "cache")  # from_default() builds its model here
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(name: str, *args: object, env: dict[str, str], timeout: float = 120) -> str:
    """Run examples/<name> with ``args``; return its stdout (failing with its stderr)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ----- stream.py --------------------------------------------------------------------------------


def test_stream_prints_the_reply_as_it_comes(demo_model_path, env):
    out = run("stream.py", "--model", demo_model_path, "How do I bake bread?", env=env)
    assert out.startswith(DEMO_BENIGN_REPLY)
    assert "[stop: 5 tokens," in out
    assert "red flag" not in out


def test_stream_shows_the_flag_and_the_refusal(demo_model_path, env):
    out = run("stream.py", "--model", demo_model_path, HARMFUL, env=env)
    assert "[red flag: P(<rf>)=1.00, prompt, policy: halt]" in out
    assert DEFAULT_REFUSAL in out
    assert "[halt: 0 tokens," in out


def test_stream_takes_the_model_from_the_environment(demo_model_path, env):
    env["RFSDK_MODEL"] = str(demo_model_path)
    out = run("stream.py", HARMFUL, env=env)
    assert "[red flag:" in out
    assert not (Path(env["RFSDK_CACHE"]) / "models").exists()  # the default model was not built


def test_stream_defaults_to_the_default_model(env):
    env["RFSDK_DEFAULT_MODEL"] = "demo"  # the demo default (the trained one takes ~30 s to assemble)
    out = run("stream.py", env=env)
    assert out.startswith(DEMO_BENIGN_REPLY)
    assert list((Path(env["RFSDK_CACHE"]) / "models").glob("*.gguf"))  # built by from_default()


# ----- callbacks_and_policies.py ----------------------------------------------------------------


def test_callbacks_and_policies(demo_model_path, env):
    out = run("callbacks_and_policies.py", "--model", demo_model_path, env=env)
    refusal = "Sorry, I can't help with that."
    assert f'    halt: flagged=True finish=halt text="{refusal}"' in out
    assert f"continue: flagged=True finish=stop text={DEMO_BENIGN_REPLY!r}" in out
    assert f" reflect: flagged=True finish=stop text={DEMO_RF_FOLLOW_UP!r}" in out
    # The custom policy: the benign question streams through on_token, the harmful one halts.
    assert f"> What is the capital of France?\n{DEMO_BENIGN_REPLY}\n" in out
    assert f"> {HARMFUL}\n{refusal}\n" in out
    # on_flag kept an audit record of exactly one flag.
    audit = [line for line in out.splitlines() if line.startswith("audit:")]
    assert audit == ["audit: P(<rf>)=1.00 source=prompt action=halt at token 0 after ''"]


# ----- async_chat.py ----------------------------------------------------------------------------


def test_async_chat_serves_two_users_at_once(demo_model_path, env):
    out = run("async_chat.py", "--model", demo_model_path, env=env)
    lines = out.splitlines()
    assert lines[:2] == ["> Hello! What can you do?", DEMO_BENIGN_REPLY]
    assert f"alice: 'Hi there' -> {DEMO_BENIGN_REPLY!r}" in lines
    assert f"alice: 'Tell me a joke' -> {DEMO_BENIGN_REPLY!r}" in lines
    assert f"bob: {HARMFUL!r} -> {DEFAULT_REFUSAL!r} [flagged]" in lines


def test_async_chat_cancels_replies_past_the_timeout(demo_model_path, env):
    # Run several times: a cancelled astream once left a daemon thread inside llama.cpp at exit.
    for _ in range(5):
        out = run("async_chat.py", "--model", demo_model_path, "--timeout", "1e-9", env=env)
        assert "alice: 'Hi there' -> no reply within 1e-09 s (cancelled)" in out
        assert f"bob: {HARMFUL!r} -> no reply within 1e-09 s (cancelled)" in out


# ----- edge.py ----------------------------------------------------------------------------------


def test_edge_small_context_drops_old_messages(demo_model_path, env):
    out = run("edge.py", "--model", demo_model_path, "--threads", 1, "--n-ctx", 256, "--turns", 3, env=env)
    assert "threads=1 gpu_layers=0 n_ctx=256 " in out
    assert out.count("note: The conversation is longer than the context (256 tokens)") == 2
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("turn")] == [
        "turn 1", "turn 2", "turn 3"
    ]
    assert "peak memory:" in out


def test_edge_low_ram_without_mmap(demo_model_path, env):
    out = run("edge.py", "--model", demo_model_path, "--low-ram", "--no-mmap", "--turns", 2, env=env)
    assert "n_ctx=512 n_batch=64 mmap=False mlock=False kv_8bit=True" in out
    assert "turn 2: 156 prompt + 5 reply tokens" in out


def test_edge_gpu_offload_falls_back_to_the_cpu(demo_model_path, env):
    import llama_cpp

    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "edge.py"), "--model", str(demo_model_path), "--gpu-layers", "-1",
         "--turns", "1"],
        cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "turn 1: " in proc.stdout
    if llama_cpp.llama_supports_gpu_offload():
        assert "gpu_layers=-1" in proc.stdout
    else:
        assert "gpu_layers=0" in proc.stdout
        assert "no GPU support, running on the CPU" in proc.stderr


# ----- desktop_app.py (Qt, offscreen) -----------------------------------------------------------

FLAG_RED = (0xC6, 0x28, 0x28)  # the marker's background, FLAG_STYLE in desktop_app.py


@pytest.fixture(scope="module")
def qt_env() -> dict[str, str]:
    """Skip unless a Qt application can start on the offscreen platform."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    probe = subprocess.run(
        [sys.executable, "-c", "from PySide6.QtWidgets import QApplication; QApplication([])"],
        env=env, check=False, capture_output=True, text=True, timeout=60,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        pytest.skip(f"the Qt offscreen platform cannot start ({last}); "
                    "install PySide6-Essentials (the 'desktop' extra) to run the desktop example")
    return env


def run_desktop(messages: list[str], shot: Path, size: str, env: dict[str, str]) -> dict:
    args = [arg for message in messages for arg in ("--send", message)]
    out = run("desktop_app.py", *args, "--screenshot", shot, "--size", size, env=env)
    return json.loads(out.strip().splitlines()[-1])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG file"
    return struct.unpack(">II", data[16:24])


def flag_red_pixels(path: Path) -> int:
    from PySide6.QtGui import QColor, QImage

    image = QImage(str(path))
    red = QColor(*FLAG_RED).rgb()
    return sum(image.pixel(x, y) == red for y in range(0, image.height(), 2) for x in range(0, image.width(), 2))


def test_desktop_app_shows_the_flag(demo_model_path, env, qt_env, tmp_path):
    env = dict(env, QT_QPA_PLATFORM="offscreen", RFSDK_MODEL=str(demo_model_path))
    shot = tmp_path / "flagged.png"
    state = run_desktop(["Hi", HARMFUL], shot, "640x420", env)

    assert png_size(shot) == (640, 420)
    assert state["flag_marker"].startswith("\u2691 RED FLAG  P(<rf>)=1.00 at token 0 (prompt), policy: halt")
    assert state["status"] == "halt, 0 tokens, FLAGGED"
    assert state["transcript"] == (
        f"You: Hi\nAssistant: {DEMO_BENIGN_REPLY}\n"
        f"You: {HARMFUL}\nAssistant: [\u2691 halted] {DEFAULT_REFUSAL}"
    )
    assert flag_red_pixels(shot) > 1000  # the red marker is painted, not only set


def test_desktop_app_without_a_flag_shows_no_marker(demo_model_path, env, qt_env, tmp_path):
    env = dict(env, QT_QPA_PLATFORM="offscreen", RFSDK_MODEL=str(demo_model_path))
    shot = tmp_path / "benign.png"
    state = run_desktop(["Hi"], shot, "500x300", env)

    assert png_size(shot) == (500, 300)
    assert state == {"flag_marker": "", "status": "stop, 5 tokens", "transcript": f"You: Hi\nAssistant: {DEMO_BENIGN_REPLY}"}
    assert flag_red_pixels(shot) == 0
