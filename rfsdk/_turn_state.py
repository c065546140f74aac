"""What one turn has produced so far, and the :class:`Reply` it makes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ._cross_check import TurnChecks
from .events import FinishReason, Flag, Message, Reply, Timings, TokenEvent, Usage
from ._guard import TurnGuard


@dataclass
class TurnState:
    """What one turn has produced so far."""

    user: Message
    prompt: list[int]
    budget: int
    guard: TurnGuard
    checks: TurnChecks | None
    started: float
    text: str
    next_stream_check: int
    """Reply length at which the next stream check is due (0: no stream checks)."""
    ids: list[int] = field(default_factory=list)
    """The reply tokens so far (<rf> included), one per reply step."""
    flags: list[Flag] = field(default_factory=list)
    classifier_flagged: bool = False
    """A classifier flag stands (later harmful verdicts raise no new flag until a reflection)."""
    finish: FinishReason = "length"
    error: str | None = None
    generated: int = 0
    first_token_at: float | None = None

    def show(self, piece: str, token: int) -> TokenEvent:
        """Add ``piece`` (the text of ``token``) to the reply and make its event."""
        self.text += piece
        self.guard.text_so_far = self.text
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        return TokenEvent(
            text=piece,
            token_id=token,
            position=self.guard.position - 1,
            rf_probability=self.guard.last_probability,
        )

    @property
    def halted(self) -> bool:
        """A flag was answered with halt (a failing policy halts too): the reply is the refusal."""
        return any(flag.action == "halt" for flag in self.flags)

    def reply(self, refusal: str) -> Reply:
        """The turn's result so far, with ``refusal`` as its text if it was halted."""
        now = time.perf_counter()
        first = self.first_token_at
        decode_s = now - first if first is not None else 0.0
        return Reply(
            text=refusal if self.halted else self.text,
            flagged=bool(self.flags),
            flags=self.flags,
            prompt_rf_probability=self.guard.prompt_probability,
            max_rf_probability=self.guard.max_probability,
            finish_reason=self.finish,
            usage=Usage(prompt_tokens=len(self.prompt), completion_tokens=self.generated),
            timings=Timings(
                time_to_first_token_s=None if first is None else first - self.started,
                total_s=now - self.started,
                tokens_per_s=(self.generated - 1) / decode_s if self.generated > 1 and decode_s > 0 else 0.0,
            ),
            checks=list(self.checks.settled) if self.checks is not None else [],
            error=self.error,
        )
