"""rfchat's interactive loop on a terminal: banner, prompt, line editing, Ctrl-C and Ctrl-D."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import click

from .session import Session

_LEAVE_HINT = "(press Ctrl-C again, Ctrl-D or type /quit to leave)"


def banner(session: Session) -> None:
    """Model, guard settings and keys, on stderr."""
    chat = session.chat
    guard = f"policy {chat.policy} · threshold {chat.threshold:g}" if chat.guarded else "NO GUARD"
    threads = chat.llm.n_threads
    info = f"{Path(chat.model_path).name} · {guard} · {threads} thread{'' if threads == 1 else 's'}"
    click.echo(click.style(info, dim=True), err=True)
    keys = "Type a message. /help lists commands; Ctrl-C stops a reply; Ctrl-D leaves."
    click.echo(click.style(keys, dim=True), err=True)


def interact(session: Session, *, color: bool) -> None:
    """Read lines until /quit, Ctrl-D, or Ctrl-C twice at the prompt.

    Ctrl-C while a reply is written cancels that reply only (see :meth:`Session.turn`).
    """
    read = _reader(color)
    interrupted = False
    while session.running:
        try:
            line = read()
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo()
            if interrupted:
                return
            interrupted = True
            click.echo(click.style(_LEAVE_HINT, dim=True), err=True)
            continue
        interrupted = False
        try:
            session.handle(line)
        except KeyboardInterrupt:  # Ctrl-C outside a reply (during a command): back to the prompt
            click.echo()


def _reader(color: bool) -> Callable[[], str]:
    """``input`` with a prompt: on stdout with line editing when stdout is the terminal, else on stderr."""
    if not sys.stdout.isatty():

        def read() -> str:
            click.echo("you> ", nl=False, err=True)
            return input()

        return read
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        prompt = click.style("you", fg="cyan", bold=True) + "> " if color else "you> "
    else:
        # readline needs \001 \002 around escapes to measure the prompt's width.
        prompt = "\001\x1b[1;36m\002you\001\x1b[0m\002> " if color else "you> "
    return lambda: input(prompt)
