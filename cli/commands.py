"""The /commands of rfchat: one table drives dispatch, /help and ``rfchat --help``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rfsdk._policies import ACTIONS

if TYPE_CHECKING:
    from .session import Session

CLEAR = "-"
"""Argument of /system and /prefill that clears the setting."""


class CommandError(Exception):
    """A /command that cannot run as typed; the message says how to type it."""


@dataclass(frozen=True)
class Command:
    """One /command: how to type it, what it does, and the code that does it."""

    usage: str
    summary: str
    run: Callable[[Session, str], None]


def _help(s: Session, arg: str) -> None:
    s.ui.info("help", help_text())


def _reset(s: Session, arg: str) -> None:
    s.chat.reset()
    s.ui.info("reset", "Conversation cleared.")


def _system(s: Session, arg: str) -> None:
    if arg:
        s.chat.system = None if arg == CLEAR else arg
    s.ui.info("system", f"System prompt: {s.chat.system or '(none)'}", system=s.chat.system)


def _prefill(s: Session, arg: str) -> None:
    if arg:
        s.prefill = "" if arg == CLEAR else arg
    s.ui.info("prefill", f"Prefill: {s.prefill or '(none)'}", prefill=s.prefill)


def _policy(s: Session, arg: str) -> None:
    if arg:
        if arg not in ACTIONS:
            raise CommandError(f"unknown policy {arg!r}: use one of {', '.join(ACTIONS)}")
        s.chat.policy = arg
    s.ui.info("policy", f"Policy: {s.chat.policy}", policy=s.chat.policy)


def _threshold(s: Session, arg: str) -> None:
    if arg:
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not 0.0 < value <= 1.0:
            raise CommandError(f"the threshold must be a number with 0 < P <= 1, not {arg!r}")
        s.chat.threshold = value
    s.ui.info("threshold", f"Threshold: {s.chat.threshold:g}", threshold=s.chat.threshold)


def _save(s: Session, arg: str) -> None:
    s.chat.save_history(_path(arg, "/save FILE"))
    s.ui.info("save", f"Saved {len(s.chat.history)} messages to {arg}.", path=arg)


def _load(s: Session, arg: str) -> None:
    s.chat.load_history(_path(arg, "/load FILE"))
    s.ui.info("load", f"Loaded {len(s.chat.history)} messages from {arg}.", path=arg)


def _stats(s: Session, arg: str) -> None:
    st, chat = s.stats, s.chat
    text = (
        f"turns {st.turns} · flags {st.flags} · reply tokens {st.reply_tokens} · "
        f"{st.tokens_per_s:.1f} tokens/s · policy {chat.policy} · threshold {chat.threshold:g}"
    )
    s.ui.info(
        "stats",
        text,
        turns=st.turns,
        flags=st.flags,
        reply_tokens=st.reply_tokens,
        tokens_per_s=st.tokens_per_s,
        policy=chat.policy,
        threshold=chat.threshold,
    )


def _quit(s: Session, arg: str) -> None:
    s.running = False


def _path(arg: str, usage: str) -> Path:
    if not arg:
        raise CommandError(f"usage: {usage}")
    return Path(arg).expanduser()


COMMANDS: dict[str, Command] = {
    "help": Command("/help", "this help", _help),
    "reset": Command("/reset", "forget the conversation (the system prompt stays)", _reset),
    "system": Command("/system [TEXT|-]", "show, set or (-) clear the system prompt", _system),
    "prefill": Command("/prefill [TEXT|-]", "show, set or (-) clear the text every reply starts with", _prefill),
    "policy": Command("/policy [NAME]", f"show or set the policy: {', '.join(ACTIONS)}", _policy),
    "threshold": Command("/threshold [P]", "show or set the P(<rf>) threshold, 0 < P <= 1", _threshold),
    "save": Command("/save FILE", "save the system prompt and conversation as JSON", _save),
    "load": Command("/load FILE", "replace the conversation by one saved with /save", _load),
    "stats": Command("/stats", "turns, flags and tokens/s so far", _stats),
    "quit": Command("/quit", "leave (also /exit, Ctrl-D)", _quit),
}
_ALIASES = {"exit": "quit", "q": "quit", "?": "help"}

KEYS = (
    "Ctrl-C stops the reply being written, not rfchat; at the prompt, press it twice to leave.\n"
    "Piped input works the same way: one message or /command per line.\n"
    "Start a line with // to send a message that begins with /."
)


def command_table() -> str:
    """One line per command: how to type it and what it does."""
    width = max(len(c.usage) for c in COMMANDS.values())
    return "\n".join(f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values())


def help_text() -> str:
    """The command list and keys, as /help shows them."""
    return f"Commands:\n{command_table()}\n{KEYS}"


def run_command(session: Session, line: str) -> None:
    """Run ``line`` ("/name args"); raises :class:`CommandError` for an unknown name."""
    name, _, arg = line[1:].partition(" ")
    command = COMMANDS.get(_ALIASES.get(name, name))
    if command is None:
        raise CommandError(f"unknown command /{name}: type /help for the list")
    command.run(session, arg.strip())
