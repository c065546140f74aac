"""Checking, saving and loading a chat's history: only what turns themselves produce."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import HaltedContext
from .errors import HistoryError, RfsdkError
from .events import Message
from ._prompt import check_text

_FIELDS = set(Message.model_fields)


def check_history(messages: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """``messages`` as a history turns could have produced, or a :class:`HistoryError` naming the first fault.

    User and assistant messages alternate, starting with a user message and ending with an
    assistant reply; user messages are not empty; every text is valid Unicode; dicts have
    only :class:`Message`'s fields.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise HistoryError(f"A history is a list of messages, not {type(messages).__name__}.")
    checked: list[Message] = []
    for i, item in enumerate(messages):
        where = f"message {i}"
        try:
            if isinstance(item, Mapping):
                unknown = set(item) - _FIELDS
                if unknown:
                    raise HistoryError(f"{where} has unknown fields {sorted(unknown)}; a message has {sorted(_FIELDS)}.")
                item = Message.model_validate(dict(item), strict=True)  # "flagged": "yes" is not a bool
            elif not isinstance(item, Message):
                raise HistoryError(f"{where} is a {type(item).__name__}, not a Message or a dict.")
            check_text(where, item.content)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in problem["loc"])
            raise HistoryError(f"{where}: {field}: {problem['msg']}.") from None
        except RfsdkError as exc:
            raise HistoryError(str(exc)) from None
        expected = "user" if i % 2 == 0 else "assistant"
        if item.role != expected:
            raise HistoryError(
                f"{where} has role {item.role!r} where a turn would have {expected!r}: a history "
                "alternates user and assistant messages, starting with a user message (the system "
                "prompt is set on its own)."
            )
        if expected == "user" and not item.content.strip():
            raise HistoryError(f"{where} is an empty user message, which send() would refuse.")
        checked.append(item)
    if len(checked) % 2:
        raise HistoryError("The history ends with a user message; a turn ends with the assistant's reply.")
    return checked


def write_history(path: Path, system: str | None, messages: list[Message]) -> None:
    """Write ``system`` and ``messages`` to ``path`` as JSON, atomically; no temporary file is left on failure."""
    data = {"system": system, "messages": [m.model_dump() for m in messages]}
    tmp = path.with_name(path.name + ".tmp")
    try:
        text = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")  # before any file is made
        tmp.write_bytes(text)
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):  # e.g. a folder of that name, which was not ours
            if tmp.is_file():
                tmp.unlink()
        raise HistoryError(f"Cannot save the chat to {path} ({type(exc).__name__}: {exc}).") from None


def read_history(path: Path) -> tuple[str | None, list[Message]]:
    """The system prompt and messages saved at ``path`` by :func:`write_history`, checked as
    :func:`check_history` checks; a :class:`HistoryError` for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise HistoryError("it is not a JSON object with a list of 'messages'")
        unknown = set(data) - {"system", "messages"}
        if unknown:
            raise HistoryError(f"it has unknown fields {sorted(unknown)}")
        system = data.get("system")
        if system is not None:
            if not isinstance(system, str):
                raise HistoryError("'system' must be a string or null")
            check_text("system", system)
        messages = check_history(data["messages"])
    except FileNotFoundError:
        raise HistoryError(f"No saved chat at {path}.") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, RfsdkError) else f"{type(exc).__name__}: {exc}"
        raise HistoryError(
            f"{path} is not a chat saved by rfsdk ({reason}). The current conversation was left unchanged."
        ) from None
    return system, messages


def model_history(history: Sequence[Message], halted_context: HaltedContext) -> list[Message]:
    """``history`` as the model sees it: with "omit", each halted exchange (request and refusal) left out."""
    if halted_context == "keep":
        return list(history)
    kept: list[Message] = []
    for message in history:
        if message.role == "assistant" and message.finish_reason == "halt":
            if kept and kept[-1].role == "user":
                kept.pop()
            continue
        kept.append(message)
    return kept
