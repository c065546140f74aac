"""A turn's event stream as its caller holds it, and the running turns of a chat.

The rule, for :meth:`GuardedChat.stream` (and, through :mod:`rfsdk._async_bridge`, ``astream``):

* A turn belongs to its stream only once it starts, at the first read: only then does it
  register with the chat's running turns and wait for the model. A stream that is never read
  holds nothing, and no ``cancel()`` reaches it.
* A started turn holds the model until its :class:`EndEvent` has been read (the model is
  released as that event is handed out), until the stream is closed or dropped, or until it
  is cancelled; also while the caller holds the stream between reads.
* ``cancel()`` from another thread ends a held turn at once: the turn is recorded as a closed
  stream records it (the reply so far, ``finish_reason="cancelled"``; a halted reply keeps the
  refusal), the model is released, and the stream's next read gives that :class:`EndEvent`.
  A turn being read when ``cancel()`` comes ends within one token, as the guard sees the
  cancel; one read in the very thread that cancels (a callback, the policy) ends at its next
  step.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator, Iterator

from .errors import ReentrantCallError
from .events import EndEvent, Event, Reply

StartTurn = Callable[[threading.Event, list[Reply]], Generator[Event, None, None]]
"""Makes the turn's generator from its cancel event and a list its Reply is appended to once the
turn has ended (the generator must not hold the stream itself: a dropped stream must be freed
at once, closing its turn)."""


class TurnStream(Iterator[Event]):
    """One turn's events, the :class:`EndEvent` last, read with ``next()`` from any thread.

    ``close()`` stops reading (a started turn ends as cancelled, like a generator's close);
    ``cancel()`` ends the started turn from any thread (see the module's rule).
    """

    def __init__(self, start: StartTurn, running: RunningTurns) -> None:
        self._start = start
        self._running = running
        self._turn: Generator[Event, None, None] | None = None
        self._cancel: threading.Event | None = None
        self._ended: list[Reply] = []
        self._pending: Event | None = None
        """The end of a turn that cancel() closed, for the next read."""
        self._after_end: BaseException | None = None
        """What the turn raised after its end (e.g. the policy's KeyboardInterrupt), for the next read."""
        self._step = threading.Lock()
        """Held while the turn's generator runs (a read, a close)."""
        self._reader: int | None = None
        self._end_requested = False
        self._done = False

    def __iter__(self) -> TurnStream:
        return self

    def __next__(self) -> Event:
        self._refuse_reentry("read")
        with self._step:
            self._reader = threading.get_ident()
            try:
                event = self._read()
            finally:
                self._reader = None
        self._end_if_requested()  # a cancel() from another thread came while the turn ran
        return event

    def cancel(self) -> None:
        """End this turn if it has started and not ended; safe from any thread (see the module)."""
        cancel = self._cancel
        if cancel is None or self._done:
            return  # never read: nothing to cancel; or over already
        cancel.set()
        if self._reader == threading.get_ident():
            return  # called from inside the turn: it ends at its next step
        self._end_requested = True
        self._end_if_requested()

    def close(self) -> None:
        """Stop reading: a turn that has started and not ended ends as cancelled, and releases
        the model. A stream closed before its first read never starts."""
        self._refuse_reentry("close")
        if self._cancel is not None:
            self._cancel.set()  # a read in another thread ends within one token
        with self._step:
            if self._turn is not None and not self._done:
                self._turn.close()
            self._pending = self._after_end = None
            self._end()

    @property
    def started(self) -> bool:
        """Whether the turn has started (the stream was read)."""
        return self._turn is not None

    # ----- inside the step lock ---------------------------------------------------------

    def _read(self) -> Event:
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        if self._after_end is not None:
            exc, self._after_end = self._after_end, None
            raise exc
        if self._done:
            raise StopIteration
        if self._turn is None:
            self._cancel = threading.Event()
            self._running.add(self)
            self._turn = self._start(self._cancel, self._ended)
        try:
            event = next(self._turn)
        except BaseException:
            self._end()
            raise
        if isinstance(event, EndEvent):
            self._run_out()
        return event

    def _run_out(self) -> None:
        # The end has been produced: run the turn out now, so the model is free before the
        # caller reads on (or never does).
        assert self._turn is not None
        try:
            next(self._turn)
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised to the caller at its next read, after the end
            self._after_end = exc
        else:
            self._turn.close()  # not reached: the end is a turn's last event
        self._end()

    def _end_if_requested(self) -> None:
        if not self._end_requested or self._done or not self._step.acquire(blocking=False):
            return  # a read under way in another thread sees the cancel, and comes back here after it
        try:
            if self._turn is not None and not self._done:
                try:
                    self._turn.close()  # GeneratorExit: the turn records itself and releases the model
                except Exception as exc:  # noqa: BLE001 - the reader hears it at its next read
                    self._after_end = exc
                self._end()
                if self._ended:
                    self._pending = EndEvent(**self._ended[-1].model_dump())
        finally:
            self._step.release()

    def _end(self) -> None:
        self._done = True
        self._running.discard(self)

    def _refuse_reentry(self, what: str) -> None:
        if self._reader == threading.get_ident():
            raise ReentrantCallError(
                f"This stream is being read in this thread (a callback tried to {what} it). "
                "Call the stream's owner after the turn instead, or use chat.cancel() to end it."
            )


class RunningTurns:
    """The turns of one chat that have started and not ended, for ``cancel()``.

    Held weakly: a started stream that is dropped closes its turn (the generator's own
    finalisation) and leaves the set.
    """

    def __init__(self) -> None:
        self._refs: set[weakref.ref[TurnStream]] = set()
        # Re-entrant: rfchat's Ctrl-C handler cancels on the thread that may be adding a turn.
        self._lock = threading.RLock()

    def add(self, stream: TurnStream) -> None:
        with self._lock:
            self._refs.add(weakref.ref(stream))

    def discard(self, stream: TurnStream) -> None:
        with self._lock:
            self._refs.discard(weakref.ref(stream))

    def streams(self) -> list[TurnStream]:
        """The started streams still alive (those dropped are forgotten)."""
        with self._lock:
            live = [(ref, ref()) for ref in self._refs]
            self._refs = {ref for ref, stream in live if stream is not None}
        return [stream for _, stream in live if stream is not None]

    def cancel(self) -> None:
        """Cancel every running turn (outside the lock: cancelling one may end it)."""
        for stream in self.streams():
            stream.cancel()

    def __len__(self) -> int:
        return len(self.streams())
