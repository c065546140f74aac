"""Read a turn's blocking event stream from asyncio: the stream runs in a worker thread, never in the loop.

The worker reads at most one event ahead of the caller, so an async turn advances only as it
is read, as a sync stream does, and one left unread holds the model. The turn is cancelled
(the model released, the reply so far recorded with ``finish_reason="cancelled"``):

* when the caller leaves the stream: ``aclose()``, an exception or a cancelled task inside
  ``async for``, or the stream garbage-collected after a ``break``;
* when the task that read it last, or a task that one starts afterwards (``asyncio.wait_for``
  and ``gather`` run their coroutines in new tasks), starts another turn on the same model (a
  task reads one stream at a time: its new turn would otherwise wait for ever behind the one
  it left), or a blocking turn (``send``, ``stream``) starts on the thread that runs its event
  loop;
* when its event loop is closed, or the loop has stopped and the program is exiting;
* by ``GuardedChat.cancel()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from typing import Protocol

from .events import Event

_POLL_S = 0.1
"""How often a worker waiting for its caller checks that the caller's loop is still there."""
_DONE = object()

_live: weakref.WeakSet[_Handoff] = weakref.WeakSet()
_live_lock = threading.Lock()
_last_read: contextvars.ContextVar[weakref.ref[_Handoff] | None] = contextvars.ContextVar("rfsdk_last_read", default=None)
"""The async stream the current task read last. A context variable: the task's own, and copied
into the tasks it creates afterwards."""


class TurnEvents(Protocol):
    """A turn's blocking stream (:class:`rfsdk._turn_stream.TurnStream`)."""

    def __next__(self) -> Event: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class EventsInThread:
    """``events`` as an async iterator, read in a worker thread that starts at the first read.

    :meth:`leave` (also on garbage collection) says the caller reads no more: the turn is
    cancelled and the worker ends.
    """

    def __init__(self, events: TurnEvents, model: object) -> None:
        self._events = events
        self._model = model
        self._handoff: _Handoff | None = None

    def __aiter__(self) -> EventsInThread:
        return self

    async def __anext__(self) -> Event:
        handoff = self._handoff
        if handoff is None:
            handoff = self._handoff = _start(self._events, self._model)
        _last_read.set(weakref.ref(handoff))
        item = await handoff.queue.get()
        if item is _DONE:
            handoff.queue.put_nowait(_DONE)  # a later read ends too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        handoff.wanted.release()  # the worker may read the next event while the caller handles this one
        return item  # type: ignore[return-value]  # every other item is an Event

    def leave(self) -> None:
        """The caller reads no more: cancel the turn, if it started, and let the worker go."""
        if self._handoff is not None:
            self._handoff.leave()

    def __del__(self) -> None:
        self.leave()


def cancel_turns_read_here(model: object, *, blocking: bool) -> None:
    """Before a turn waits for ``model``: cancel the async turns on it that only this caller
    could read on. From a task (``blocking=False``): the stream it read last (or the task that
    created it had read last). From blocking code on an event loop's thread (``blocking=True``):
    all of that loop's. Elsewhere: none."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if blocking:
        with _live_lock:
            handoffs = list(_live)
    else:
        last = _last_read.get()
        handoff = None if last is None else last()
        handoffs = [] if handoff is None else [handoff]
    for handoff in handoffs:
        if handoff.model is model and handoff.loop is loop:
            handoff.events.cancel()


def _start(events: TurnEvents, model: object) -> _Handoff:
    cancel_turns_read_here(model, blocking=False)
    handoff = _Handoff(events, model)
    with _live_lock:
        _live.add(handoff)
    # Not a daemon: at interpreter exit Python waits for it (it stops within one token after
    # cancel()) instead of freeing the model under a running llama.cpp call.
    threading.Thread(target=handoff.work, name="rfsdk-turn", daemon=False).start()
    return handoff


class _Handoff:
    """What the worker thread and the async iterator share. Never the iterator itself, so that
    dropping the iterator frees it, and its ``__del__`` cancels the turn."""

    def __init__(self, events: TurnEvents, model: object) -> None:
        self.events = events
        self.model = model
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.wanted = threading.Semaphore(1)
        """Events the worker may read: one ahead of those the caller has taken."""
        self.left = threading.Event()

    def leave(self) -> None:
        if not self.left.is_set():
            self.left.set()
            self.events.cancel()  # a held turn ends at once, a running one within one token
            self.wanted.release()

    def work(self) -> None:
        try:
            while self._may_read():
                try:
                    event = next(self.events)
                except StopIteration:
                    break
                if not self._post(event):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            self._post(exc)
        finally:
            self.events.close()  # ends a turn still running and releases the model, even if the loop went away
            self._post(_DONE)

    def _may_read(self) -> bool:
        """Wait until the caller may want another event; False once it will read no more."""
        while not self.wanted.acquire(timeout=_POLL_S):
            if self._loop_gone():
                return False
        return not self.left.is_set()

    def _loop_gone(self) -> bool:
        loop = self.loop
        return loop.is_closed() or (not loop.is_running() and not threading.main_thread().is_alive())

    def _post(self, item: object) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            return False
