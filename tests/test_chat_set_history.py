"""GuardedChat.set_history: the conversation replaced by validated messages (rf-serve uses it per request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfsdk import EmptyMessageError, GuardedChat, InvalidMessageError, InvalidTextError, Message, RfsdkError
from rfsdk.demo_model import DEMO_TRIGGER_WORD


@pytest.fixture(scope="module")
def chat(demo_model_path: Path) -> GuardedChat:
    return GuardedChat(demo_model_path, n_threads=1)


def test_set_history_replaces_the_conversation(chat: GuardedChat) -> None:
    chat.set_history([{"role": "user", "content": "Hi"}, Message(role="assistant", content="Hello.")], system="Be brief.")
    assert [(m.role, m.content) for m in chat.history] == [("user", "Hi"), ("assistant", "Hello.")]
    assert chat.system == "Be brief."
    chat.set_history([{"role": "user", "content": f"a {DEMO_TRIGGER_WORD}"}, {"role": "assistant", "content": "No."}])
    assert chat.system is None
    assert chat.send("Go on").finish_reason == "halt"  # the history is in the prompt
    chat.set_history([])
    assert chat.history == [] and chat.send("Go on").finish_reason == "stop"


@pytest.mark.parametrize(
    "messages,system,error,words",
    [
        ("Hi", None, InvalidMessageError, "list of messages"),
        ([{"role": "user", "content": "a"}, 7], None, InvalidMessageError, "Message 1 is a int"),
        ([{"role": "system", "content": "a"}], None, InvalidMessageError, "system=..."),
        ([{"role": "tool", "content": "a"}], None, InvalidMessageError, "'tool'"),
        ([{"role": "user"}], None, InvalidMessageError, "content must be a string"),
        ([{"role": "user", "content": " \n"}], None, EmptyMessageError, "Message 0 (user) is empty"),
        ([{"role": "user", "content": "a\ud800"}], None, InvalidTextError, "lone surrogate"),
        ([], "\udc80", InvalidTextError, "lone surrogate"),
        ([], 5, InvalidMessageError, "system must be a string"),
    ],
)
def test_bad_history_is_refused_and_the_old_one_kept(chat: GuardedChat, messages, system, error, words) -> None:
    chat.set_history([{"role": "user", "content": "kept"}, {"role": "assistant", "content": "yes"}], system="sys")
    with pytest.raises(error, match=None) as caught:
        chat.set_history(messages, system=system)
    assert isinstance(caught.value, RfsdkError) and words in str(caught.value)
    assert [m.content for m in chat.history] == ["kept", "yes"] and chat.system == "sys"
