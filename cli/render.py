"""How rfchat shows a session: styled text on a terminal, JSON lines with --json."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Protocol

import click

from rfsdk.events import EndEvent, ErrorEvent, Event, Flag, FlagEvent, NoticeEvent, TokenEvent

_ACTION_TEXT = {
    "halt": "halt: reply stopped",
    "continue": "continue: flag recorded, reply goes on",
    "reflect": "reflect: <rf> put into the context, the model goes on",
}


def flag_line(flag: Flag) -> str:
    """One line describing a flag for people: where, P(<rf>), source, what the policy did."""
    where = "before the reply" if flag.source == "prompt" else f"at reply token {flag.position}"
    parts = [f"⚑ red flag {where}", f"P(<rf>)={flag.probability:.2f}", f"source: {flag.source}"]
    if flag.action is not None:
        parts.append(_ACTION_TEXT[flag.action])
    return " · ".join(parts)


class Ui(Protocol):
    """Where a session's output goes."""

    def begin(self, prefill: str) -> None:
        """A reply starts with ``prefill`` already written."""

    def event(self, event: Event) -> None:
        """Show one event of a turn."""

    def info(self, command: str, text: str, **data: Any) -> None:
        """Show what a /command did (``data``: the same as fields, for machines)."""

    def error(self, message: str) -> None:
        """Show an error the session survives."""


class TextUi:
    """Streams turns as text; styles are dropped automatically when not on a terminal."""

    def __init__(self, *, notes: bool = True) -> None:
        self._notes = notes
        self._at_line_start = True
        self._pending = ""

    def begin(self, prefill: str) -> None:
        self._pending = prefill

    def event(self, event: Event) -> None:
        if isinstance(event, TokenEvent):
            self._write(self._take_pending() + event.text)
        elif isinstance(event, FlagEvent):
            self._line(click.style(flag_line(event.flag), fg="red", bold=True))
        elif isinstance(event, NoticeEvent) and self._notes:
            self._line(click.style(f"note: {event.message}", fg="yellow"))
        elif isinstance(event, ErrorEvent):
            self._line(click.style(f"error in {event.where}: {event.message}", fg="red"))
        elif isinstance(event, EndEvent):
            self._end(event)

    def info(self, command: str, text: str, **data: Any) -> None:
        click.echo(text)

    def error(self, message: str) -> None:
        click.echo(click.style(f"error: {message}", fg="red"), err=True)

    def _end(self, end: EndEvent) -> None:
        if end.finish_reason == "halt":
            self._pending = ""
            self._line(click.style(end.text, fg="red"))
        else:
            self._write(self._take_pending())
        if end.finish_reason == "cancelled":
            self._line(click.style("(reply cancelled)", dim=True))
        elif end.finish_reason == "length":
            self._line(click.style("(reply cut: token limit reached)", dim=True))
        if not self._at_line_start:
            click.echo()
        self._at_line_start = True

    def _take_pending(self) -> str:
        pending, self._pending = self._pending, ""
        return pending

    def _write(self, text: str) -> None:
        if text:
            click.echo(text, nl=False)
            sys.stdout.flush()
            self._at_line_start = text.endswith("\n")

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            click.echo()
        click.echo(text)
        self._at_line_start = True


class JsonUi:
    """Writes every event, command result and error as one JSON line on stdout.

    Lines are ASCII (other characters as ``\\uXXXX`` escapes), so they are valid JSON, and
    valid UTF-8, whatever the locale's encoding; text that is not Unicode (a lone surrogate
    standing for an undecodable input byte) is escaped too instead of failing the line.
    """

    def begin(self, prefill: str) -> None:
        pass

    def event(self, event: Event) -> None:
        _json_line(event.model_dump(mode="json"))

    def info(self, command: str, text: str, **data: Any) -> None:
        _json_line({"kind": "command", "command": command, "text": text, **data})

    def error(self, message: str) -> None:
        _json_line(ErrorEvent(message=message, where="app").model_dump(mode="json"))


def _json_line(data: dict[str, Any]) -> None:
    click.echo(json.dumps(_finite(data), ensure_ascii=True, allow_nan=False, separators=(",", ":")))


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (null), as pydantic writes them in JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
