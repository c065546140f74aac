"""Soak and concurrency: many turns in one process, and one GuardedChat shared by 8 threads.

The soak runs a fixed mix of turns (benign, halted mid-stream, split UTF-8, closed early,
flagged at the prompt) on one chat and measures the process's resident memory after a
warm-up and at the end: it must not grow with the number of turns. CI runs 200 turns;
``--long`` (or ``RFSDK_LONG_TESTS=1``) runs 1,000. Both print the RSS figures.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import llama_cpp
import pytest

from rfsdk import GuardedChat, SamplingConfig
from rfsdk import DEFAULT_REFUSAL
from rfsdk.demo_model import (
    DEMO_BENIGN_REPLY,
    DEMO_ENDLESS_PREFILL,
    DEMO_HARMFUL_PREFILL,
    DEMO_SPLIT_PREFILL,
    DEMO_SPLIT_REPLY,
    DEMO_TRIGGER_WORD,
)
from rfsdk.events import EndEvent, TokenEvent

GREEDY = SamplingConfig(temperature=0.0, max_tokens=24)
WARM_UP_TURNS = 50
RSS_GROWTH_LIMIT_MB = 8.0


def _llm(path: Path, n_ctx: int) -> llama_cpp.Llama:
    # One thread for prompts too: on a busy 2-core machine, ggml's spinning thread barrier
    # makes a two-thread prompt evaluation many times slower (and the timings noisy).
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=1, n_threads_batch=1, verbose=False)


def _rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _one_turn(chat: GuardedChat, i: int) -> None:
    """Turn ``i`` of the soak mix; checks its outcome."""
    kind = i % 5
    if kind == 0:
        reply = chat.send(f"hello number {i}")
        assert (reply.text, reply.finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    elif kind == 1:
        reply = chat.send("go on", prefill=DEMO_HARMFUL_PREFILL)
        assert (reply.text, reply.finish_reason, reply.flagged) == (DEFAULT_REFUSAL, "halt", True)
    elif kind == 2:
        reply = chat.send("say it", prefill=DEMO_SPLIT_PREFILL)
        assert (reply.text, reply.finish_reason) == (DEMO_SPLIT_PREFILL + DEMO_SPLIT_REPLY, "stop")
    elif kind == 3:
        events = chat.stream("count", prefill=DEMO_ENDLESS_PREFILL)
        for n, event in enumerate(events):
            if n == 3:
                break
        events.close()
        assert chat.history[-1].finish_reason == "cancelled"
    else:
        reply = chat.send(f"a {DEMO_TRIGGER_WORD} please")
        assert (reply.finish_reason, reply.flags[0].source) == ("halt", "prompt")
        chat.reset()


def test_soak_memory_stays_flat(demo_model_path, long_mode, capsys):
    turns = 1000 if long_mode else 200
    chat = GuardedChat(_llm(demo_model_path, 2048), sampling=GREEDY)
    threads_before = threading.active_count()
    for i in range(WARM_UP_TURNS):
        _one_turn(chat, i)
    start_mb = _rss_mb()
    started = time.perf_counter()
    for i in range(WARM_UP_TURNS, WARM_UP_TURNS + turns):
        _one_turn(chat, i)
    elapsed = time.perf_counter() - started
    growth = _rss_mb() - start_mb
    with capsys.disabled():
        print(f"\nsoak: {turns} turns in {elapsed:.1f} s, RSS {start_mb:.1f} MB -> {start_mb + growth:.1f} MB "
              f"({growth:+.2f} MB)")
    assert growth < RSS_GROWTH_LIMIT_MB
    assert threading.active_count() == threads_before
    assert not chat._cancels


@pytest.mark.parametrize("n_threads", [8])
def test_threads_sharing_one_chat_get_complete_replies(demo_model_path, long_mode, capsys, n_threads):
    turns = 40 if long_mode else 8
    chat = GuardedChat(_llm(demo_model_path, 4096), sampling=GREEDY)
    expected = {
        0: ("", DEMO_BENIGN_REPLY, "stop"),
        1: (DEMO_SPLIT_PREFILL, DEMO_SPLIT_PREFILL + DEMO_SPLIT_REPLY, "stop"),
        2: (DEMO_HARMFUL_PREFILL, DEFAULT_REFUSAL, "halt"),
    }
    failures: list[str] = []
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        prefill, text, finish = expected[t % 3]
        barrier.wait()
        for n in range(turns):
            shown = ""
            end = None
            for event in chat.stream(f"thread {t} turn {n}", prefill=prefill):
                if isinstance(event, TokenEvent):
                    shown += event.text
                elif isinstance(event, EndEvent):
                    end = event
            if end is None or (end.text, end.finish_reason) != (text, finish):
                failures.append(f"thread {t} turn {n}: {end and (end.text, end.finish_reason)!r}")
            elif finish == "stop" and prefill + shown != end.text:
                failures.append(f"thread {t} turn {n}: streamed {prefill + shown!r}, reply {end.text!r}")

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n{n_threads} threads x {turns} turns on one chat: {elapsed:.2f} s")
    assert not any(w.is_alive() for w in workers)
    assert not failures, failures[:10]
    # The history holds every turn once, each user message followed by its own reply.
    history = chat.history
    assert len(history) == 2 * n_threads * turns
    for user, assistant in zip(history[::2], history[1::2], strict=True):
        assert (user.role, assistant.role) == ("user", "assistant")
        t = int(user.content.split()[1])
        assert (assistant.content, assistant.finish_reason) == expected[t % 3][1:]
    assert sorted(m.content for m in history[::2]) == sorted(
        f"thread {t} turn {n}" for t in range(n_threads) for n in range(turns)
    )
