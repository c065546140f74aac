"""GuardedChat.close() and ``with``: the classifier threads stop, a model rfsdk loaded is freed,
a Llama the caller passed in is left open, and a closed chat refuses turns clearly."""

from __future__ import annotations

import threading

import llama_cpp
import pytest

from rfsdk import ChatClosedError, GuardedChat, SamplingConfig
from rfsdk.demo_model import DEMO_BENIGN_REPLY, DEMO_ENDLESS_PREFILL

GREEDY = SamplingConfig(temperature=0.0, max_tokens=64)


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rfsdk-classifier")]


def test_with_closes_the_chat_and_frees_the_model_it_loaded(demo_model_path):
    with GuardedChat(demo_model_path, sampling=GREEDY, n_threads=1, classifier=lambda p, r: False) as chat:
        assert chat.send("hi").text == DEMO_BENIGN_REPLY
        assert _pool_threads()
        llm = chat.llm
    assert chat.closed
    assert llm._ctx.ctx is None  # llama.cpp's context was freed
    for thread in _pool_threads():
        thread.join(timeout=5)
    assert not _pool_threads()
    with pytest.raises(ChatClosedError, match="closed"):
        chat.send("hi")
    with pytest.raises(ChatClosedError):
        chat.stream("hi")
    chat.close()  # a second close does nothing


def test_close_leaves_a_llama_passed_in_open(demo_model_path):
    llm = llama_cpp.Llama(model_path=str(demo_model_path), n_ctx=2048, n_threads=1, verbose=False)
    first = GuardedChat(llm, sampling=GREEDY)
    first.send("hi")
    first.close()
    second = GuardedChat(llm, sampling=GREEDY)
    assert second.send("hi").text == DEMO_BENIGN_REPLY
    second.close()
    assert llm._ctx.ctx is not None


def test_close_from_another_thread_ends_a_running_turn_first(demo_model_path):
    chat = GuardedChat(demo_model_path, sampling=GREEDY, n_threads=1)
    started = threading.Event()
    replies = []

    def run():
        for event in chat.stream("hi", prefill=DEMO_ENDLESS_PREFILL, max_tokens=100_000):
            started.set()
            if event.kind == "end":
                replies.append(event.reply())

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(30)
    chat.close()  # cancels the turn and waits for it before freeing the model
    worker.join(timeout=30)
    assert replies and replies[0].finish_reason == "cancelled"
    assert chat.llm._ctx.ctx is None
