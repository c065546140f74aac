"""Stop sequences over a streamed reply."""

from __future__ import annotations


class StopText:
    """Cuts a streamed reply before the first stop sequence.

    Text that could be the start of a stop sequence is held back until the next pieces
    show whether it is; :meth:`feed` returns what may be sent now.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of ``held + piece`` that is safe to send (all of it when there are no stops)."""
        if not self._stops:
            return piece
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held, self.stopped = "", True
            return text[:cut]
        hold = max((n for s in self._stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The held-back text, once the reply has ended without a stop sequence."""
        held, self._held = self._held, ""
        return held
