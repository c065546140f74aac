"""Render a conversation with the model's chat template and tokenize it safely.

Template text is tokenized with special-token parsing ON (so ``<|im_start|>`` in the
template becomes the control token), while message contents are tokenized with it
OFF, so text a user types can never turn into a special token such as ``<rf>``.
"""

from __future__ import annotations

import ctypes
import functools
import re
from typing import Sequence

import jinja2
import jinja2.sandbox
import llama_cpp

from .errors import (
    ArgumentTypeError,
    ChatTemplateError,
    ContextOverflowError,
    InvalidTextError,
)
from .events import Message

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"The model's chat template refused this conversation: {message}")


class PromptBuilder:
    """Turns messages into prompt tokens for one loaded model."""

    def __init__(self, llm: llama_cpp.Llama, template: str) -> None:
        self._llm = llm
        vocab = llm._model.vocab
        self._bos_id = llm.token_bos()
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab)) and self._bos_id >= 0
        bos_text = _token_text(llm, self._bos_id)
        eos_text = _token_text(llm, llm.token_eos())
        self._template = _compiled(template)
        self._template_vars = {"bos_token": bos_text, "eos_token": eos_text}

    def build(self, messages: Sequence[Message], *, prefill: str = "") -> list[int]:
        """Prompt tokens for ``messages`` followed by the assistant header and ``prefill``."""
        placeholders = [
            {"role": m.role, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)
        ]
        try:
            rendered = self._template.render(
                messages=placeholders, add_generation_prompt=True, **self._template_vars
            )
        except ChatTemplateError:
            raise
        except Exception as exc:  # a template can raise anything jinja2 can
            raise ChatTemplateError(
                f"The model's chat template failed to render the conversation ({exc})."
            ) from None
        pieces = _SENTINEL.split(rendered)
        seen = [int(i) for i in pieces[1::2]]
        if sorted(seen) != list(range(len(messages))):
            raise ChatTemplateError(
                "The chat template does not place each message's content exactly once, so "
                "its content cannot be tokenized safely. Pass a standard chat_template=..."
            )
        tokens: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2:
                tokens += self._tokenize(messages[int(piece)].content, special=False)
            elif piece:
                tokens += self._tokenize(piece, special=True)
        tokens += self.text_tokens(prefill)
        if self._add_bos and (not tokens or tokens[0] != self._bos_id):
            tokens.insert(0, self._bos_id)
        return tokens

    def text_tokens(self, text: str) -> list[int]:
        """``text`` as plain text tokens: special-token markup in it stays text."""
        return self._tokenize(text, special=False) if text else []

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        return tokenize(self._llm, _utf8(text), special=special)


@functools.lru_cache(maxsize=16)
def _compiled(template: str) -> jinja2.Template:
    """The chat template compiled once (chats on one model, e.g. one per rf-serve request, share it)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(
            f"The chat template does not parse ({exc}). Pass a working chat_template=..."
        ) from None


def fit_prompt(
    builder: PromptBuilder,
    *,
    n_ctx: int,
    system: str | None,
    history: Sequence[Message],
    user: Message,
    prefill: str,
    reply_room: int,
    overflow: str,
) -> tuple[list[int], int]:
    """The prompt for one turn and how many of the oldest ``history`` messages it leaves out.

    Args:
        builder: renders and tokenizes messages for the chat's model.
        n_ctx: the context size in tokens.
        system: the system prompt (None or "": none).
        history: the conversation so far (user and assistant messages).
        user: this turn's user message.
        prefill: text the reply starts with.
        reply_room: tokens kept free for the reply.
        overflow: "truncate" keeps the longest suffix of ``history`` that starts at a user
            message and fits (found by bisection, so a long history costs a few prompt
            builds, not one per message left out); "error" raises
            :class:`~rfsdk.ContextOverflowError` instead of leaving anything out.
    """
    head = [Message(role="system", content=system)] if system else []

    def build(start: int) -> list[int]:
        return builder.build(head + list(history[start:]) + [user], prefill=prefill)

    def fits(prompt: list[int]) -> bool:
        return len(prompt) + reply_room <= n_ctx

    whole = build(0)
    if fits(whole):
        return whole, 0
    if history and overflow == "error":
        raise ContextOverflowError(
            f"The conversation needs {len(whole)} prompt tokens plus {reply_room} for the "
            f"reply, more than the context's {n_ctx}. Call reset(), or create the chat "
            "with overflow='truncate' to leave the oldest messages out."
        )
    starts = [i for i in range(1, len(history)) if history[i].role == "user"] + [len(history)]
    fitted = build(starts[-1])
    if not fits(fitted):
        raise ContextOverflowError(
            f"The message needs {len(fitted)} prompt tokens (with the system prompt and "
            f"chat format) and {reply_room} more are kept for the reply, but the context holds "
            f"{n_ctx} tokens. Shorten the message or create the chat with a larger n_ctx."
        )
    low, high = 0, len(starts) - 1  # starts[high] fits; find the first start that does
    while low < high:
        middle = (low + high) // 2
        prompt = build(starts[middle])
        if not fits(prompt):
            low = middle + 1
        else:
            high, fitted = middle, prompt
    return fitted, starts[high]


def check_text(name: str, text: object) -> str:
    """``text`` if it is a string of valid Unicode, else an error naming ``name`` and the fault."""
    if not isinstance(text, str):
        raise ArgumentTypeError(f"{name} must be a string, not {type(text).__name__}")
    _utf8(text)
    return text


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTextError(
            f"The text {text[max(0, exc.start - 20) : exc.end + 20]!r} holds a lone surrogate "
            f"({text[exc.start]!r} at character {exc.start}), which is not Unicode text and "
            "cannot be sent to the model. Decode the input with errors='replace' first."
        ) from None


def _token_text(llm: llama_cpp.Llama, token_id: int) -> str:
    if token_id < 0:
        return ""
    return token_piece(llm, token_id, special=True).decode("utf-8", errors="replace")


def tokenize(llm: llama_cpp.Llama, data: bytes, *, special: bool) -> list[int]:
    """Tokenize ``data`` without a BOS token (``special``: parse special-token texts).

    Unlike ``Llama.tokenize``, which allocates a buffer of the model's whole training
    context on every call, the buffer fits the text (at most one token per byte).
    """
    size = len(data) + 1
    while True:
        buf = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(llm._model.vocab, data, len(data), buf, size, False, special)
        if n >= 0:
            return buf[:n]
        size = -n


def token_piece(llm: llama_cpp.Llama, token_id: int, *, special: bool = False) -> bytes:
    """The bytes a token renders as (control tokens render as b"" unless ``special``)."""
    size = 64
    while True:
        buf = (ctypes.c_char * size)()
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, token_id, buf, size, 0, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n
