"""One chat-completion turn: the client's messages into a guarded reply, streamed as text pieces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncGenerator

from rfsdk import EndEvent, Flag, GuardedChat, TokenEvent
from rfsdk.errors import InvalidTextError
from rfsdk._prompt import check_text

from .client import ClientWatch
from .errors import ApiError
from .requests import ChatMessage
from .stops import StopText

_FINISH = {"stop": "stop", "length": "length", "halt": "content_filter", "cancelled": "cancelled", "error": "error"}


@dataclass(frozen=True)
class Conversation:
    """The request's messages as rfsdk takes them."""

    system: str | None
    history: list[dict[str, str]]
    message: str
    prefill: str


@dataclass(frozen=True)
class TurnEnd:
    """How the turn ended: the SDK's end event and OpenAI's ``finish_reason`` for it."""

    end: EndEvent
    finish_reason: str
    """"stop", "length", "content_filter" (halted), "cancelled" (the client left) or "error"."""


def conversation(messages: list[ChatMessage]) -> Conversation:
    """Split OpenAI ``messages`` into system prompt, history, the user's message and a prefill.

    Leading system (or developer) messages form the system prompt; a final assistant
    message is the start of the reply (a prefill, checked by the guard like any reply text).
    """
    system: list[str] = []
    rest = list(enumerate(messages))
    while rest and rest[0][1].role in ("system", "developer"):
        system.append(rest.pop(0)[1].content)
    for i, m in rest:
        if m.role in ("system", "developer"):
            raise ApiError(400, f"messages[{i}] is a {m.role} message after the conversation began; "
                           "put system messages first.", param=f"messages[{i}].role")
    prefill_at = rest[-1][0] if rest and rest[-1][1].role == "assistant" else None
    prefill = rest.pop()[1].content if prefill_at is not None else ""
    if not rest or rest[-1][1].role != "user":
        raise ApiError(400, "The conversation must end with a user message (optionally followed by the "
                       "start of the assistant's reply).", param="messages")
    for i, m in enumerate(messages):
        _check_content(i, m, may_be_empty=m.role in ("system", "developer") or i == prefill_at)
    return Conversation(
        system="\n\n".join(s for s in system if s.strip()) or None,
        history=[{"role": m.role, "content": m.content} for _, m in rest[:-1]],
        message=rest[-1][1].content,
        prefill=prefill,
    )


def _check_content(index: int, message: ChatMessage, *, may_be_empty: bool) -> None:
    param = f"messages[{index}].content"
    if not may_be_empty and not message.content.strip():
        raise ApiError(400, f"{param} is empty ({message.role} message); give every message some text.", param=param)
    try:
        check_text("message content", message.content)
    except InvalidTextError as exc:
        raise ApiError(400, f"{param}: {exc}", param=param) from None


async def run_turn(
    chat: GuardedChat, talk: Conversation, *, max_tokens: int | None, stops: list[str], watch: ClientWatch
) -> AsyncGenerator[str | TurnEnd, None]:
    """Yield the reply's text pieces as they may be sent, then one :class:`TurnEnd`.

    The guard has passed every piece before it is yielded; a stop sequence or the client
    leaving cancels the turn within one token.
    """
    chat.set_history(talk.history, system=talk.system)
    cut = StopText(stops)
    watch.on_gone(chat.cancel)
    events = chat.astream(talk.message, prefill=talk.prefill, max_tokens=max_tokens)
    end: EndEvent | None = None
    try:
        async for event in events:
            if isinstance(event, TokenEvent) and not cut.stopped:
                text = cut.feed(event.text)
                if cut.stopped:
                    chat.cancel()
                if text:
                    yield text
            elif isinstance(event, EndEvent):
                end = event
    finally:
        await events.aclose()
    assert end is not None
    if cut.stopped:
        yield TurnEnd(end, "stop")
        return
    if end.finish_reason in ("stop", "length"):
        tail = cut.flush()
        if tail:
            yield tail
    yield TurnEnd(end, _FINISH[end.finish_reason])


def guard_report(end: EndEvent, threshold: float) -> dict[str, Any]:
    """The guard's findings as the ``rf`` extension field of a response."""
    actions = {flag.action for flag in end.flags}
    return {
        "flagged": end.flagged,
        "action": "halt" if "halt" in actions else ("continue" if end.flags else None),
        "threshold": threshold,
        "prompt_rf_probability": end.prompt_rf_probability,
        "max_rf_probability": end.max_rf_probability,
        "flags": [flag_report(flag) for flag in end.flags],
    }


def flag_report(flag: Flag) -> dict[str, Any]:
    """A flag without its text (the client has the text it was sent)."""
    verdict = flag.verdict
    return {
        "position": flag.position,
        "probability": flag.probability,
        "source": flag.source,
        "action": flag.action,
        "classifier": None if verdict is None else verdict.model_dump(),
    }
