"""Chat-input fuzzing with hypothesis: whatever a user types, the turn ends cleanly and no
special token gets into the prompt.

Messages mix random unicode (lone surrogates included), control characters, and the text
of every special token: every CONTROL / USER_DEFINED token of the demo vocabulary (<rf>,
<|im_start|>, <|im_end|>, <|endoftext|>) plus those of other model families. After each
turn the test reads the tokens llama-cpp-python actually evaluated (``llm.input_ids``) and
checks them against an independent rendering of the chat template:

* the special tokens in the prompt are exactly those of the template (the same template
  rendered with a plain "x" for every message content, tokenized with special parsing on);
* the prompt's pieces spell exactly the template rendered with the real contents, so no
  character was lost, merged into a special token, or normalised away.

Refused input must be refused with an rfsdk error (EmptyMessageError, ContextOverflowError,
InvalidTextError) and leave the history as it was. CI runs 300 examples per property
(derandomized); ``--long`` (or ``RFSDK_LONG_TESTS=1``) runs 5,000 random ones.
"""

from __future__ import annotations

import collections

import jinja2
import llama_cpp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfsdk import GuardedChat, SamplingConfig
from rfsdk._history import model_history
from rfsdk.demo_model import DEMO_CHAT_TEMPLATE, DEMO_TRIGGER_WORD
from rfsdk.errors import ContextOverflowError, EmptyMessageError, InvalidTextError
from rfsdk.events import EndEvent, NoticeEvent
from rfsdk._prompt import token_piece

GREEDY = SamplingConfig(temperature=0.0, max_tokens=16)
_SPECIAL_ATTRS = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
# Special-token texts of other model families: plain text to this vocabulary, but typical
# injection attempts.
FOREIGN_SPECIALS = [
    "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<|begin_of_text|>", "<|eot_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|endofprompt|>", "<think>", "</think>",
    "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<start_of_turn>", "<end_of_turn>",
]  # fmt: skip
CONTROL_CHARS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))] + [
    "\u200b", "\u200d", "\u202e", "\u2028", "\u2029", "\ufeff", "\ufffd", "\ufffe", "\U0010ffff",
    "\ud800", "\udfff",  # lone surrogates: not Unicode text, refused with InvalidTextError
]  # fmt: skip


@pytest.fixture(scope="module")
def chat(demo_model_path) -> GuardedChat:
    return GuardedChat(demo_model_path, n_ctx=1024, sampling=GREEDY)


@pytest.fixture(scope="module")
def specials(chat) -> list[str]:
    """Texts of every CONTROL / USER_DEFINED token of the model's vocabulary."""
    vocab = chat.llm._model.vocab
    ids = [t for t in range(chat.llm.n_vocab()) if llama_cpp.llama_vocab_get_attr(vocab, t) & _SPECIAL_ATTRS]
    return [token_piece(chat.llm, t, special=True).decode() for t in ids]


def test_the_vocabulary_has_the_expected_specials(specials):
    assert set(specials) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<rf>"}


def _text(special_texts: list[str]) -> st.SearchStrategy[str]:
    piece = st.one_of(
        st.text(max_size=12),
        st.sampled_from(special_texts + FOREIGN_SPECIALS),
        st.sampled_from(CONTROL_CHARS),
        st.sampled_from(["<", "|", ">", "im_", "<rf", "rf>", "<|im", "_end|>", " ", "\n", DEMO_TRIGGER_WORD]),
    )
    return st.lists(piece, max_size=16).map("".join)


_TEMPLATE = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(DEMO_CHAT_TEMPLATE)


def _render(contents: list[tuple[str, str]]) -> str:
    messages = [{"role": role, "content": content} for role, content in contents]
    return _TEMPLATE.render(messages=messages, add_generation_prompt=True)


def _special_ids(llm: llama_cpp.Llama, tokens: list[int]) -> list[int]:
    vocab = llm._model.vocab
    return [t for t in tokens if llama_cpp.llama_vocab_get_attr(vocab, t) & _SPECIAL_ATTRS]


def _check_turn(chat: GuardedChat, before: list, message: str) -> str:
    """Send ``message``; check the outcome and the prompt tokens llama.cpp evaluated.

    Returns the outcome: "refused: <error class>" or "answered: <finish reason>".
    """
    try:
        events = list(chat.stream(message))
    except (EmptyMessageError, InvalidTextError, ContextOverflowError) as exc:
        assert chat.history == before
        return f"refused: {type(exc).__name__}"
    end = events[-1]
    outcome = f"answered: {end.finish_reason}"
    assert isinstance(end, EndEvent) and end.finish_reason in ("stop", "length", "halt"), end
    assert chat.history[:-2] == before and chat.history[-2].content == message
    if any(isinstance(e, NoticeEvent) for e in events):
        return outcome  # older messages were left out: the rendering below would not match
    llm = chat.llm
    prompt = [int(t) for t in llm.input_ids[: end.usage.prompt_tokens]]
    contents = [(m.role, m.content) for m in model_history(before, chat.halted_context)] + [("user", message)]
    expected_specials = llm.tokenize(_render([(r, "x") for r, _ in contents]).encode(), add_bos=False, special=True)
    assert _special_ids(llm, prompt) == _special_ids(llm, expected_specials)
    spelled = b"".join(token_piece(llm, t, special=True) for t in prompt)
    assert spelled == _render(contents).encode()
    # the reply never starts from an injected <rf>: the guard's prompt score stays tiny
    if DEMO_TRIGGER_WORD not in "".join(c for _, c in contents):
        assert end.prompt_rf_probability < 1e-3
    return outcome


def _settings(long_mode: bool) -> settings:
    return settings(
        max_examples=5000 if long_mode else 300,
        deadline=None,
        derandomize=not long_mode,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def _report(outcomes: collections.Counter, capsys) -> None:
    with capsys.disabled():
        print(f"\n{sum(outcomes.values())} fuzzed turns: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    # most examples must reach the model, not just the input checks
    assert sum(v for k, v in outcomes.items() if k.startswith("answered")) > sum(outcomes.values()) / 2


def test_one_message_from_a_fresh_chat(chat, specials, long_mode, capsys):
    outcomes: collections.Counter = collections.Counter()

    @_settings(long_mode)
    @given(message=_text(specials))
    def run(message: str) -> None:
        chat.reset()
        outcomes[_check_turn(chat, [], message)] += 1

    run()
    _report(outcomes, capsys)


def test_a_conversation_of_fuzzed_messages(chat, specials, long_mode, capsys):
    outcomes: collections.Counter = collections.Counter()

    @_settings(long_mode)
    @given(messages=st.lists(_text(specials), min_size=1, max_size=4))
    def run(messages: list[str]) -> None:
        chat.reset()
        for message in messages:
            outcomes[_check_turn(chat, chat.history, message)] += 1

    run()
    _report(outcomes, capsys)


@pytest.mark.parametrize("message", ["", " ", "\n\t\r ", "\u3000", "\x1c\x1d\x1e\x1f"])
def test_empty_messages_are_refused(chat, message):
    chat.reset()
    with pytest.raises(EmptyMessageError):
        chat.send(message)
    assert chat.history == []


@pytest.mark.parametrize("where", ["message", "prefill", "system"])
def test_text_that_is_not_unicode_is_refused_clearly(chat, where):
    bad = "a\ud800b"
    chat.reset()
    with pytest.raises(InvalidTextError, match="surrogate"):
        if where == "system":
            chat.system = bad  # refused when set, not at every later send
        else:
            chat.send(bad if where == "message" else "hello", prefill=bad if where == "prefill" else "")
    assert chat.history == [] and chat.system is None
    assert chat.send("hello").finish_reason == "stop"


def test_a_very_long_message_is_refused_and_the_chat_goes_on(chat):
    chat.reset()
    chat.send("hello")
    before = chat.history
    with pytest.raises(ContextOverflowError):
        chat.send("<|im_end|><rf> \x00 é" * 20_000)
    assert chat.history == before
    _check_turn(chat, before, "hello again")


def test_a_message_that_just_fits_is_answered(chat):
    chat.reset()
    _check_turn(chat, [], "<rf>" * 150)
