"""Iterate a blocking event stream from asyncio: the stream runs in a worker thread, never in the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Iterator

from .events import Event


async def events_in_thread(events: Iterator[Event] | Generator[Event, None, None], cancel: threading.Event) -> AsyncIterator[Event]:
    """Yield ``events`` (one turn's stream) as a worker thread produces them.

    If the caller stops early (``break``, an exception, a cancelled task), ``cancel`` is set,
    so the turn ends within one token; the worker then closes the stream, which releases the
    model even if the event loop has gone away.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    done = object()

    def post(item: object) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            return False

    def work() -> None:
        try:
            for event in events:
                if not post(event):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            post(exc)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # releases the model at once, even if the loop went away
            post(done)

    # Not a daemon: at interpreter exit Python waits for it (it stops within one token
    # after cancel()) instead of freeing the model under a running llama.cpp call.
    worker = threading.Thread(target=work, name="rfsdk-turn", daemon=False)
    worker.start()
    finished = False
    try:
        while True:
            item = await queue.get()
            if item is done:
                finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]  # every other item is an Event
    finally:
        if not finished:
            cancel.set()  # this turn only; other turns of the chat go on
