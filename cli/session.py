"""One rfchat session: the chat, its output, the reply prefill and running statistics."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from rfsdk import GuardedChat, Reply, RfsdkError
from rfsdk.events import EndEvent

from .commands import CommandError, run_command
from .render import Ui


@dataclass
class Stats:
    """Totals over the turns of a session."""

    turns: int = 0
    flags: int = 0
    reply_tokens: int = 0
    decode_tokens: int = 0
    decode_s: float = 0.0

    def add(self, reply: Reply) -> None:
        """Count one finished turn."""
        self.turns += 1
        self.flags += len(reply.flags)
        self.reply_tokens += reply.usage.completion_tokens
        first = reply.timings.time_to_first_token_s
        if first is not None and reply.usage.completion_tokens > 1:
            # Decode speed as GuardedChat measures it: tokens after the first, over the
            # time from the first token to the end of the turn.
            self.decode_tokens += reply.usage.completion_tokens - 1
            self.decode_s += reply.timings.total_s - first

    @property
    def tokens_per_s(self) -> float:
        """Decode speed over all turns (0 before any reply of two tokens or more)."""
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0


class Session:
    """Runs input lines against a chat: messages become turns, ``/name`` lines commands.

    ``prefill`` starts every reply; ``errors`` counts the lines that failed.
    """

    def __init__(self, chat: GuardedChat, ui: Ui, *, prefill: str = "") -> None:
        self.chat = chat
        self.ui = ui
        self.prefill = prefill
        self.stats = Stats()
        self.errors = 0
        self.running = True

    def turn(self, message: str) -> Reply:
        """Send ``message`` and show the reply as it is written; Ctrl-C cancels the reply."""
        self.ui.begin(self.prefill)
        end: EndEvent | None = None
        with _cancel_on_sigint(self.chat):
            for event in self.chat.stream(message, prefill=self.prefill):
                self.ui.event(event)
                if isinstance(event, EndEvent):
                    end = event
        assert end is not None  # every turn ends with one EndEvent
        reply = end.reply()
        self.stats.add(reply)
        return reply

    def handle(self, line: str) -> bool:
        """Run one input line; errors are shown, counted and survived. False: leave.

        A line starting with ``/`` is a command; ``//`` sends a message starting with ``/``. A line
        that is not text (bytes the input's encoding could not decode) is refused whole, so that
        it neither reaches the model nor becomes the system prompt, prefill or a file name.
        """
        text = line.strip()
        if not text:
            return True
        problem = undecodable(text)
        if problem is not None:
            self.errors += 1
            self.ui.error(problem)
            return self.running
        try:
            if text.startswith("//"):
                self.turn(text[1:])
            elif text.startswith("/"):
                run_command(self, text)
            else:
                self.turn(text)
        except (RfsdkError, CommandError) as exc:
            self.errors += 1
            self.ui.error(str(exc))
        return self.running


def undecodable(text: str) -> str | None:
    """Why the input line ``text`` is not text, or None if it is.

    Python reads input bytes its encoding cannot decode as lone surrogates (U+DC80 to U+DCFF
    stand for the bytes 0x80 to 0xFF), which are not Unicode and cannot be sent or written.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"the lone surrogate U+{code:04X}"
        command = text.startswith("/") and not text.startswith("//")
        line = f"the command {text.partition(' ')[0]!r}" if command else "a message"
        encoding = getattr(sys.stdin, "encoding", None) or "the locale's encoding"
        return (
            f"ignored {line}: {what} at character {exc.start} is not text in the input's encoding "
            f"({encoding}), so nothing was sent or changed. Check the encoding of the terminal or of the piped input."
        )
    return None


@contextmanager
def _cancel_on_sigint(chat: GuardedChat) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: chat.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
