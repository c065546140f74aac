"""How rfchat shows events: styled text on a terminal, JSON lines with --json."""

from __future__ import annotations

import sys

import click

from rfsdk.events import EndEvent, ErrorEvent, Event, Flag, FlagEvent, NoticeEvent, TokenEvent

_ACTION_TEXT = {
    "halt": "reply stopped",
    "continue": "recorded, reply continues",
    "reflect": "<rf> put into context, model continues",
    None: "",
}


def flag_line(flag: Flag) -> str:
    """One line describing a flag for people."""
    where = "before the reply" if flag.source == "prompt" else f"at token {flag.position}"
    return (
        f"⚑ red flag {where}: P(<rf>)={flag.probability:.2f}, {flag.source}; "
        f"{_ACTION_TEXT[flag.action]}"
    )


class TextRenderer:
    """Streams a turn as text; styles are dropped automatically when not on a terminal."""

    def __init__(self) -> None:
        self._at_line_start = True

    def __call__(self, event: Event) -> None:
        if isinstance(event, TokenEvent):
            click.echo(event.text, nl=False)
            self._at_line_start = event.text.endswith("\n")
            sys.stdout.flush()
        elif isinstance(event, FlagEvent):
            self._line(click.style(flag_line(event.flag), fg="red", bold=True))
        elif isinstance(event, NoticeEvent):
            self._line(click.style(f"note: {event.message}", fg="yellow"))
        elif isinstance(event, ErrorEvent):
            self._line(click.style(f"error in {event.where}: {event.message}", fg="red"))
        elif isinstance(event, EndEvent):
            if event.finish_reason == "halt":
                self._line(click.style(event.text, fg="red"))
            elif event.finish_reason == "cancelled":
                self._line(click.style("(reply cancelled)", dim=True))
            elif event.finish_reason == "length":
                self._line(click.style("(reply cut: token limit reached)", dim=True))
            if not self._at_line_start:
                click.echo()
            self._at_line_start = True

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            click.echo()
        click.echo(text)
        self._at_line_start = True


def json_renderer(event: Event) -> None:
    """Writes each event as one JSON line."""
    click.echo(event.model_dump_json())
