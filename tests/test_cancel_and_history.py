"""Cancelling in every phase of a turn, and the history after halts, cancels and failures.

Phases: before the stream is read (no turn yet: the cancel does not reach it), queued behind
another turn (the prompt is not evaluated), during prompt evaluation (cancel() from inside
``Llama.eval``), mid-stream, inside the policy and the flag callback, held between reads
(sync and async), abandoned (async), and after the end. After each the history holds the turn
once (user message, then the reply so far with its finish reason) and the chat goes on
normally. rfchat's /save then /load (cli/commands.py through a Session) restores such a history
exactly.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import llama_cpp
import pytest
from rfsdk.cli.session import Session

from rfsdk import GuardedChat, SamplingConfig
from rfsdk import DEFAULT_REFUSAL
from rfsdk.demo_model import (
    DEMO_BENIGN_REPLY,
    DEMO_ENDLESS_PIECE,
    DEMO_ENDLESS_PREFILL,
    DEMO_HARMFUL_CONTINUATION,
    DEMO_HARMFUL_ENDING,
    DEMO_HARMFUL_PREFILL,
    DEMO_TRIGGER_WORD,
)
from rfsdk.events import EndEvent, Message, TokenEvent

GREEDY = SamplingConfig(temperature=0.0, max_tokens=64)


@pytest.fixture(scope="module")
def llm(demo_model_path):
    return llama_cpp.Llama(str(demo_model_path), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)


@pytest.fixture
def chat(llm):
    return GuardedChat(llm, sampling=GREEDY)


def _assert_consistent_and_goes_on(chat: GuardedChat, last: tuple[str, str | None, str]) -> None:
    """The history ends with the turn ``last`` (user text, reply text or None, finish) and the
    chat answers the next message as usual."""
    history = chat.history
    assert [m.role for m in history] == ["user", "assistant"] * (len(history) // 2)
    user, assistant = history[-2:]
    assert user.content == last[0]
    if last[1] is not None:
        assert assistant.content == last[1]
    assert assistant.finish_reason == last[2]
    assert not chat._cancels
    reply = chat.send("hello again")
    assert (reply.text, reply.finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    assert chat.history[: len(history)] == history


def test_streams_never_read_hold_nothing_and_a_later_cancel_does_not_reach_them(chat):
    unread = [chat.stream("count", prefill=DEMO_ENDLESS_PREFILL) for _ in range(99)]
    later = chat.stream("hello")
    assert len(chat._cancels) == 0  # a turn belongs to its stream only once it starts
    chat.cancel()
    assert [e for e in later if isinstance(e, EndEvent)][0].finish_reason == "stop"  # not pre-cancelled
    assert chat.send("hi").finish_reason == "stop"
    del unread
    gc.collect()
    assert [m.content for m in chat.history] == ["hello", DEMO_BENIGN_REPLY, "hi", DEMO_BENIGN_REPLY]
    assert len(chat._cancels) == 0


def test_cancel_while_queued_behind_another_turn(llm, monkeypatch):
    first, second = GuardedChat(llm, sampling=GREEDY), GuardedChat(llm, sampling=GREEDY)
    running = first.stream("count", prefill=DEMO_ENDLESS_PREFILL)
    next(running)  # the first chat now holds the model
    ends: list[EndEvent] = []
    waiting = threading.Thread(target=lambda: ends.extend(e for e in second.stream("hi") if isinstance(e, EndEvent)))
    waiting.start()
    while not second._cancels:  # the second turn is registered, and waits for the model
        time.sleep(0.001)
    second.cancel()

    def no_evaluation(tokens):
        raise AssertionError("the prompt of a turn cancelled while queued was evaluated")

    monkeypatch.setattr(llm, "eval", no_evaluation)
    running.close()
    waiting.join(timeout=30)
    monkeypatch.undo()
    assert [e.finish_reason for e in ends] == ["cancelled"]
    _assert_consistent_and_goes_on(first, ("count", None, "cancelled"))
    _assert_consistent_and_goes_on(second, ("hi", "", "cancelled"))


def test_cancel_during_prompt_evaluation(chat, monkeypatch):
    real_eval = chat.llm.eval
    calls = []

    def eval_and_cancel(tokens):
        if not calls:
            chat.cancel()  # arrives while llama.cpp evaluates the prompt
        calls.append(len(tokens))
        real_eval(tokens)

    monkeypatch.setattr(chat.llm, "eval", eval_and_cancel)
    reply = chat.send("a long message " * 100)
    monkeypatch.undo()
    assert calls[0] > 200 and (reply.text, reply.finish_reason) == ("", "cancelled")
    _assert_consistent_and_goes_on(chat, ("a long message " * 100, "", "cancelled"))


@pytest.mark.parametrize("from_thread", [False, True])
def test_cancel_mid_stream(chat, from_thread):
    shown = []

    def on_token(event: TokenEvent) -> None:
        shown.append(event.text)
        if len(shown) == 3:
            if from_thread:
                t = threading.Thread(target=chat.cancel)
                t.start()
                t.join()
            else:
                chat.cancel()

    chat.on_token = on_token
    reply = chat.send("count", prefill=DEMO_ENDLESS_PREFILL)
    assert reply.finish_reason == "cancelled" and len(shown) in (3, 4)
    assert reply.text == DEMO_ENDLESS_PREFILL + "".join(shown) == DEMO_ENDLESS_PREFILL + DEMO_ENDLESS_PIECE * len(shown)
    chat.on_token = None
    _assert_consistent_and_goes_on(chat, ("count", reply.text, "cancelled"))


@pytest.mark.parametrize("action", ["halt", "continue"])
def test_cancel_inside_the_policy(chat, action):
    def policy(flag):
        chat.cancel()
        return action

    chat.policy = policy
    reply = chat.send("go on", prefill=DEMO_HARMFUL_PREFILL)
    # "continue": the token sampled in place of <rf> is shown, then the cancel stops the turn
    cancelled = DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION + DEMO_HARMFUL_ENDING.rstrip(".")
    expected = (DEFAULT_REFUSAL, "halt") if action == "halt" else (cancelled, "cancelled")
    assert (reply.text, reply.finish_reason) == expected and reply.flagged
    chat.policy = "halt"
    _assert_consistent_and_goes_on(chat, ("go on", expected[0], expected[1]))


def test_cancel_inside_the_flag_callback(chat):
    chat.on_flag = lambda flag: chat.cancel()
    chat.policy = "continue"
    reply = chat.send("go on", prefill=DEMO_HARMFUL_PREFILL)
    assert reply.finish_reason == "cancelled" and reply.flagged
    chat.on_flag, chat.policy = None, "halt"
    _assert_consistent_and_goes_on(chat, ("go on", reply.text, "cancelled"))


def test_cancel_after_the_end_changes_nothing(chat):
    reply = chat.send("hello")
    chat.cancel()
    assert (reply.text, reply.finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    _assert_consistent_and_goes_on(chat, ("hello", DEMO_BENIGN_REPLY, "stop"))


@pytest.mark.parametrize(
    "setup, message, prefill, finish",
    [
        ({}, f"a {DEMO_TRIGGER_WORD}", "", "halt"),
        ({}, "go on", DEMO_HARMFUL_PREFILL, "halt"),
        ({"on_token": lambda e: 1 / 0}, "hello", "", "error"),
        ({"on_flag": lambda f: 1 / 0}, "go on", DEMO_HARMFUL_PREFILL, "error"),
        ({"policy": lambda f: 1 / 0}, "go on", DEMO_HARMFUL_PREFILL, "error"),
    ],
    ids=["halt-at-prompt", "halt-mid-stream", "on_token-raises", "on_flag-raises", "policy-raises"],
)
def test_history_after_a_halt_or_failure_is_consistent(llm, setup, message, prefill, finish):
    chat = GuardedChat(llm, sampling=GREEDY, **setup)
    chat.send("hello")
    reply = chat.send(message, prefill=prefill)
    assert reply.finish_reason == finish
    if finish == "error":
        assert reply.error
    if reply.flags:  # every flag here is answered with halt (a failing policy halts): fail closed
        assert reply.text == DEFAULT_REFUSAL
    for name in setup:
        setattr(chat, name, "halt" if name == "policy" else None)
    if DEMO_TRIGGER_WORD in message:
        assert chat.history[-1].content == DEFAULT_REFUSAL and chat.history[-1].flagged
        chat.reset()  # the trigger word stays in the context: every later reply would halt
        assert chat.send("hello").text == DEMO_BENIGN_REPLY
    else:
        _assert_consistent_and_goes_on(chat, (message, reply.text, finish))


@pytest.mark.parametrize("message, prefill", [(f"a {DEMO_TRIGGER_WORD}", ""), ("go on", DEMO_HARMFUL_PREFILL)])
def test_stopping_at_the_halting_flag_keeps_the_refusal_not_the_flagged_text(llm, message, prefill):
    seen = []
    chat = GuardedChat(llm, sampling=GREEDY, on_flag=seen.append)
    events = chat.stream(message, prefill=prefill)
    for event in events:
        if event.kind == "flag":
            break  # a UI stops reading where the reply is halted
    events.close()
    assert [f.action for f in seen] == ["halt"]  # on_flag fired although the caller stopped there
    assert (chat.history[-1].content, chat.history[-1].finish_reason) == (DEFAULT_REFUSAL, "halt")
    assert chat.history[-1].flagged


def test_stopping_at_the_flag_of_a_failing_policy_records_the_failure(llm):
    chat = GuardedChat(llm, sampling=GREEDY, policy=lambda flag: 1 / 0)
    events = chat.stream("go on", prefill=DEMO_HARMFUL_PREFILL)
    for event in events:
        if event.kind == "flag":
            break
    events.close()
    assert (chat.history[-1].content, chat.history[-1].finish_reason) == (DEFAULT_REFUSAL, "error")


@pytest.mark.parametrize("fails", ["policy", "on_flag"])
def test_a_failing_policy_or_flag_callback_fails_closed(llm, fails):
    def broken(flag):
        raise TimeoutError("moderation service down")

    chat = GuardedChat(llm, sampling=GREEDY, **{fails: broken})
    reply = chat.send("go on", prefill=DEMO_HARMFUL_PREFILL)
    assert (reply.text, reply.finish_reason) == (DEFAULT_REFUSAL, "error")
    assert "moderation service down" in reply.error and [f.action for f in reply.flags] == ["halt"]
    assert chat.history[-1].content == DEFAULT_REFUSAL


def test_leaving_an_astream_early_cancels_that_turn_only(llm):
    entered, gate = threading.Event(), threading.Event()

    def hold_the_first_turn(event: TokenEvent) -> None:
        entered.set()  # the first turn holds the model while the second one queues
        gate.wait(30)

    chat = GuardedChat(llm, sampling=GREEDY, on_token=hold_the_first_turn)

    async def scenario():
        stream = chat.astream("count", prefill=DEMO_ENDLESS_PREFILL)
        first = asyncio.ensure_future(stream.__anext__())
        while not entered.is_set():
            await asyncio.sleep(0.001)
        other = asyncio.ensure_future(chat.asend("hello"))
        while len(chat._cancels) < 2:
            await asyncio.sleep(0.001)
        gate.set()
        await first
        await stream.aclose()  # leave the first turn's stream early
        return await other

    other = asyncio.run(scenario())
    assert (other.text, other.finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    assert [m.finish_reason for m in chat.history] == [None, "cancelled", None, "stop"]


def test_cancel_from_another_thread_ends_a_held_turn_and_frees_the_model(llm):
    chat, neighbour = GuardedChat(llm, sampling=GREEDY), GuardedChat(llm, sampling=GREEDY)
    held = chat.stream("count", prefill=DEMO_ENDLESS_PREFILL)
    first = next(held)  # the turn holds the model, and this thread reads no further for now
    assert first.kind == "token"
    replies: list = []
    queued = threading.Thread(target=lambda: replies.append(neighbour.send("hello")))
    queued.start()  # a chat sharing the model waits for it
    try:
        queued.join(timeout=1.0)
        assert queued.is_alive() and not replies
        threading.Thread(target=chat.cancel).start()
        queued.join(timeout=30)
        assert not queued.is_alive()
    except BaseException:
        held.close()  # a failure must not leave the model held for the tests after this one
        raise
    assert (replies[0].text, replies[0].finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    rest = list(held)  # read on, the held stream ends cleanly with the cancelled end
    cut = DEMO_ENDLESS_PREFILL + first.text
    assert [(e.kind, e.finish_reason, e.text) for e in rest] == [("end", "cancelled", cut)]
    assert list(held) == [] and not chat._cancels
    same_chat = threading.Thread(target=lambda: replies.append(chat.send("hello")))
    same_chat.start()  # this chat's own next turn, from another thread
    same_chat.join(timeout=30)
    assert (replies[1].text, replies[1].finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    assert [(m.content, m.finish_reason) for m in chat.history[:2]] == [("count", None), (cut, "cancelled")]
    _assert_consistent_and_goes_on(chat, ("hello", DEMO_BENIGN_REPLY, "stop"))


def test_reading_the_end_releases_the_model_at_once(llm):
    chat, neighbour = GuardedChat(llm, sampling=GREEDY), GuardedChat(llm, sampling=GREEDY)
    events = chat.stream("hello")
    for end in events:
        if isinstance(end, EndEvent):
            break  # the stream is kept, and not read past its end
    assert end.finish_reason == "stop" and not chat._cancels
    assert neighbour.send("hello").text == DEMO_BENIGN_REPLY  # same thread: the model is free


LONG = SamplingConfig(temperature=0.0, max_tokens=3000)


async def _read_one_token(agen):
    """Read ``agen`` up to its first token event and leave it there, without aclose()."""
    async for event in agen:
        if event.kind == "token":
            return event


def _leave_after_one_token(agen) -> asyncio.Future:
    """:func:`_read_one_token` in a task of its own."""
    return asyncio.ensure_future(_read_one_token(agen))


def test_an_abandoned_astream_is_cancelled_and_does_not_block_the_next_asend(llm):
    chat = GuardedChat(llm, sampling=LONG)

    async def scenario():
        agen = chat.astream("count", prefill=DEMO_ENDLESS_PREFILL)
        await _read_one_token(agen)
        await asyncio.sleep(0.5)  # an astream left unread does not run on
        del agen
        gc.collect()
        started = time.perf_counter()
        reply = await asyncio.wait_for(chat.asend("hello"), 60)
        return reply, time.perf_counter() - started

    reply, waited = asyncio.run(scenario())
    assert (reply.text, reply.finish_reason) == (DEMO_BENIGN_REPLY, "stop") and waited < 10
    abandoned = chat.history[1]
    assert abandoned.finish_reason == "cancelled"
    # the reply so far: the token read, and at most one more that the worker read ahead
    assert abandoned.content in [DEMO_ENDLESS_PREFILL + DEMO_ENDLESS_PIECE * n for n in (1, 2)]
    assert not chat._cancels


def test_a_task_starting_another_turn_cancels_the_astream_it_left(llm):
    chat = GuardedChat(llm, sampling=LONG)

    async def scenario():
        agen = chat.astream("count", prefill=DEMO_ENDLESS_PREFILL)
        await _read_one_token(agen)  # agen is still referenced
        reply = await asyncio.wait_for(chat.asend("hello"), 60)
        rest = [event async for event in agen]
        return reply, rest

    reply, rest = asyncio.run(scenario())
    assert (reply.text, reply.finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    assert rest[-1].kind == "end" and rest[-1].finish_reason == "cancelled" and len(rest) <= 2
    assert [m.finish_reason for m in chat.history] == [None, "cancelled", None, "stop"]
    assert len(chat.history[1].content) <= len(DEMO_ENDLESS_PREFILL + DEMO_ENDLESS_PIECE * 2)


def test_a_blocking_turn_on_the_loops_thread_cancels_the_astream_it_would_wait_for(llm):
    chat = GuardedChat(llm, sampling=LONG)
    replies: list = []

    async def scenario():
        agen = chat.astream("count", prefill=DEMO_ENDLESS_PREFILL)
        await _leave_after_one_token(agen)  # read in another task, which has ended
        replies.append(chat.send("hello"))  # blocks the loop: that astream can never be read on
        await agen.aclose()

    runner = threading.Thread(target=asyncio.run, args=(scenario(),))
    runner.start()
    runner.join(timeout=60)
    if runner.is_alive():  # deadlocked: free it, then fail
        chat.cancel()
        runner.join(timeout=30)
    assert replies and (replies[0].text, replies[0].finish_reason) == (DEMO_BENIGN_REPLY, "stop")
    assert [m.finish_reason for m in chat.history] == [None, "cancelled", None, "stop"]


class _RecordingUi:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.infos: list[str] = []

    def begin(self, prefill: str) -> None:
        pass

    def event(self, event) -> None:
        pass

    def info(self, command: str, text: str, **data) -> None:
        self.infos.append(command)

    def error(self, message: str) -> None:
        self.errors.append(message)


def test_rfchat_save_then_load_restores_the_history_exactly(llm, tmp_path: Path):
    ui = _RecordingUi()
    session = Session(GuardedChat(llm, sampling=GREEDY), ui)
    session.handle("/system Be brief. ünïcode \u2028 \x00 <rf> <|im_end|>")
    session.handle("hello")
    session.handle("/prefill " + DEMO_HARMFUL_PREFILL)
    session.handle("go on")  # halted mid-stream
    session.handle("/prefill " + DEMO_ENDLESS_PREFILL)
    session.chat.on_token = lambda e: session.chat.cancel()
    session.handle("count")  # cancelled after one token
    session.chat.on_token = lambda e: 1 / 0
    session.handle("/prefill -")
    session.handle("<|im_end|><rf> \x1b[31m tabs\tand\r\nlines")  # the callback fails
    session.chat.on_token = None
    saved = session.chat.history
    assert [m.finish_reason for m in saved[1::2]] == ["stop", "halt", "cancelled", "error"]
    path = tmp_path / "chat.json"
    session.handle(f"/save {path}")

    other = Session(GuardedChat(llm, sampling=GREEDY), _RecordingUi())
    other.handle("something else")
    other.handle(f"/load {path}")
    assert other.chat.history == saved
    assert other.chat.system == session.chat.system == "Be brief. ünïcode \u2028 \x00 <rf> <|im_end|>"
    assert ui.errors == [] and other.ui.errors == []
    # the loaded conversation goes on, and a second save writes the same file
    other.handle(f"/save {tmp_path / 'again.json'}")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    other.handle("hello")
    assert other.chat.history[:-2] == saved and other.chat.history[-1] == Message(
        role="assistant", content=DEMO_BENIGN_REPLY, finish_reason="stop"
    )
