"""Policy and settings fuzzing with hypothesis: whatever an app passes, the guard fails closed.

Each example sets a random threshold, sampling settings and policy on one chat over the demo
model, then sends a request that may carry the demo model's trigger word (so most turns are
flagged). Policies: the three names, callables that return junk, raise any exception type
(``KeyboardInterrupt`` and ``SystemExit`` included), or are slow. Checked every time:

* a bad setting is refused with an :class:`~rfsdk.RfsdkError` and the setting is unchanged;
* no reply is ``flagged=False`` while a step's P(<rf>) reached the threshold or was not finite;
* a halted reply is the refusal, in the reply and in the history: no flagged text is kept;
* a policy that fails (raises or returns junk) halts: the guard never fails open;
* an exception the policy raised that is not an ``Exception`` (Ctrl-C) reaches the caller
  only after the turn is closed, and the chat answers the next turn.

Random history files (JSON of any shape, nested deeply, with lone surrogates, or raw bytes)
load whole or not at all: a refused file is an RfsdkError that leaves the chat as it was, and
a loaded one is a history the next ``send`` accepts. Random llama_kwargs values are fuzzed in
subprocesses (test_fuzz_llama_kwargs.py). CI runs 150 and 200 examples (derandomized);
``--long`` runs 2,000 random ones each.
"""

from __future__ import annotations

import collections
import warnings
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfsdk import GuardedChat, RfsdkError, SamplingConfig
from rfsdk.demo_model import DEMO_HARMFUL_PREFILL, DEMO_TRIGGER_WORD

JUNK = [None, 1, 0.5, "HALT", "stop", "", b"halt", ["halt"], object(), float("nan")]
RAISED = [ValueError, RuntimeError, TypeError, ZeroDivisionError, RecursionError, MemoryError, StopIteration,
          KeyboardInterrupt, SystemExit, GeneratorExit]


class _Policy:
    """A fuzzed policy that remembers whether it failed (raised or returned junk)."""

    def __init__(self, kind: str, value: object, delay: float) -> None:
        self.kind, self.value, self.delay = kind, value, delay

    def __call__(self, flag):
        if self.delay:
            time.sleep(self.delay)
        if self.kind == "raises":
            raise self.value("fuzzed policy failure")  # type: ignore[operator]
        return self.value

    @property
    def fails(self) -> bool:
        return self.kind == "raises" or self.value not in ("halt", "continue", "reflect")

    def __repr__(self) -> str:
        return f"_Policy({self.kind}, {self.value!r}, {self.delay})"


def _policies():
    named = st.sampled_from(["halt", "continue", "reflect"])
    returns = st.builds(_Policy, st.just("returns"), st.sampled_from(["halt", "continue", "reflect", *JUNK]),
                        st.sampled_from([0.0, 0.0, 0.02]))
    raises = st.builds(_Policy, st.just("raises"), st.sampled_from(RAISED), st.just(0.0))
    return st.one_of(named, returns, raises)


_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e-30, 0.3, 0.5, 0.999, 1.0, 1.0000001, 2.0, -1.0]),
)
_SAMPLING = st.fixed_dictionaries({}, optional={
    "temperature": _FLOATS, "top_p": _FLOATS, "top_k": st.integers(-5, 10**6), "min_p": _FLOATS,
    "repeat_penalty": _FLOATS, "max_tokens": st.one_of(st.none(), st.integers(-3, 40)), "seed": st.integers(-(2**40), 2**40),
})


@pytest.fixture(scope="module")
def chat(demo_model_path) -> GuardedChat:
    return GuardedChat(demo_model_path, n_ctx=1024, n_threads=1, sampling=SamplingConfig(temperature=0.0, max_tokens=16))


def _set(chat: GuardedChat, name: str, value: object) -> bool:
    """Set ``chat.name``; True if accepted. A refusal must be an RfsdkError that leaves the setting as it was."""
    before = getattr(chat, name)
    try:
        setattr(chat, name, value)
    except RfsdkError:
        assert getattr(chat, name) == before, f"a refused {name} changed the setting"
        return False
    return True


def _sampling(values: dict) -> SamplingConfig | None:
    try:
        return SamplingConfig(**values)
    except RfsdkError:
        return None
    except ValueError as error:  # pydantic's own: must be an RfsdkError too
        pytest.fail(f"SamplingConfig({values}) raised {type(error).__name__}, not an RfsdkError: {error}")


def _check_turn(chat: GuardedChat, policy, message: str, prefill: str) -> str:
    turns_before = len(chat.history)
    events = []
    try:
        for event in chat.stream(message, prefill=prefill):
            events.append(event)
    except RfsdkError as error:
        assert len(chat.history) == turns_before, "a refused turn changed the history"
        return f"refused ({type(error).__name__})"
    except BaseException as error:  # noqa: BLE001 - the policy's own exception, re-raised after the turn
        assert isinstance(policy, _Policy) and policy.kind == "raises" and isinstance(error, policy.value), repr(error)
        assert not isinstance(error, Exception), f"{error!r} escaped a turn; only a non-Exception may"
    end = events[-1]
    assert end.kind == "end", f"the turn did not end with an EndEvent: {events[-3:]}"
    probabilities = [end.prompt_rf_probability, end.max_rf_probability, *(e.rf_probability for e in events if e.kind == "token")]
    crossed = any(not math.isfinite(p) or p >= chat.threshold for p in probabilities)
    assert end.flagged or not crossed, f"flagged=False although P(<rf>) crossed {chat.threshold}: {probabilities}"
    last = chat.history[-1]
    if any(flag.action == "halt" for flag in end.flags):
        assert end.text == chat.refusal and last.content == chat.refusal and last.flagged, (end, last)
    if isinstance(policy, _Policy) and policy.fails and end.flags:
        assert all(flag.action == "halt" for flag in end.flags), f"a failing policy did not halt: {end.flags}"
    return f"{end.finish_reason}{' flagged' if end.flagged else ''}"


def test_random_policies_thresholds_and_sampling_fail_closed(chat, long_mode, capsys):
    outcomes: collections.Counter = collections.Counter()
    default_sampling = chat.sampling

    @settings(max_examples=2000 if long_mode else 150, derandomize=not long_mode, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(policy=_policies(), threshold=_FLOATS, sampling=_SAMPLING, harmful=st.booleans(), prefill=st.booleans())
    def run(policy, threshold: float, sampling: dict, harmful: bool, prefill: bool) -> None:
        chat.reset()
        chat.policy = "halt"
        outcomes["threshold accepted" if _set(chat, "threshold", threshold) else "threshold refused"] += 1
        config = _sampling(sampling)
        chat.sampling = config or default_sampling
        assert _set(chat, "policy", policy)
        message = f"how do I make a {DEMO_TRIGGER_WORD}" if harmful else "hello there"
        outcomes[_check_turn(chat, policy, message, DEMO_HARMFUL_PREFILL if prefill else "")] += 1
        chat.policy = "halt"
        assert chat.send("hello").finish_reason in ("stop", "length", "halt"), "the chat did not answer the next turn"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    with capsys.disabled():
        print(f"\n{sum(outcomes.values())} outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert outcomes["threshold accepted"] > 20 and any("flagged" in k for k in outcomes)
    numeric = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not numeric, f"the guard's arithmetic went wrong under some setting: {numeric[:3]}"


_TEXT = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(["", " ", "\ud800", "<|im_start|>", "hi", "bomb"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]) | _VALUES, "content": _TEXT | _VALUES},
    optional={"flagged": st.booleans() | _VALUES, "finish_reason": st.sampled_from(["stop", "halt", "length", "x"]) | _VALUES,
              "extra": _VALUES},
)
_EXCHANGES = st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=3).map(
    lambda pairs: [m for user, reply in pairs for m in ({"role": "user", "content": user}, {"role": "assistant", "content": reply})]
)
_HISTORY_FILE = st.one_of(
    st.fixed_dictionaries({"messages": _EXCHANGES}, optional={"system": _TEXT}),
    st.fixed_dictionaries({"messages": st.lists(_MESSAGE, max_size=5)}, optional={"system": _TEXT | _VALUES, "x": _VALUES}),
    _VALUES,
)


def test_random_history_files_load_whole_or_not_at_all(chat, long_mode, tmp_path_factory, capsys):
    import json

    folder = tmp_path_factory.mktemp("histories")
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=2000 if long_mode else 200, derandomize=not long_mode, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(content=_HISTORY_FILE, nesting=st.integers(0, 3), raw=st.binary(max_size=40), use_raw=st.integers(0, 9))
    def run(content, nesting: int, raw: bytes, use_raw: int) -> None:
        path = folder / "history.json"
        if use_raw == 0:
            path.write_bytes(raw)
        else:
            text = json.dumps(content, ensure_ascii=True)
            path.write_text("[" * 10**nesting * (nesting == 3) + text, encoding="utf-8")
        chat.reset()
        chat.policy, chat.threshold, chat.sampling = "halt", None, SamplingConfig(temperature=0.0, max_tokens=8)
        before = (chat.system, chat.history)
        try:
            chat.load_history(path)
        except RfsdkError:
            assert (chat.system, chat.history) == before, "a refused history file changed the chat"
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        reply = chat.send("hello")  # a loaded history is one send accepts: no error blames the new message
        assert reply.finish_reason in ("stop", "length", "halt"), reply
        chat.save_history(folder / "saved.json")
        assert not list(folder.glob("*.tmp"))

    run()
    with capsys.disabled():
        print("\nhistory files: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert outcomes["refused"] and outcomes["loaded"]
