"""Turns on the shared model, one at a time, in arrival order, with a bounded wait."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from .errors import queue_full

RETRY_AFTER_S = 1


class ClientGone(Exception):
    """The client disconnected while its request waited for the model."""


class TurnQueue:
    """At most ``max_waiting`` requests wait behind the running one; more get a 503.

    ``asyncio.Lock`` wakes its waiters first-in first-out, so turns run in arrival order.
    """

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._lock = asyncio.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for the model now."""
        return self._waiting

    @property
    def busy(self) -> bool:
        """A turn holds the model."""
        return self._lock.locked()

    @asynccontextmanager
    async def turn(self, gone: asyncio.Event) -> AsyncIterator[None]:
        """Hold the model for one request; raise :class:`ApiError` (503) if the queue is full
        and :class:`ClientGone` if ``gone`` is set before the model is free."""
        if self._lock.locked() and self._waiting >= self.max_waiting:
            raise queue_full(self.max_waiting, RETRY_AFTER_S)
        self._waiting += 1
        acquire = asyncio.ensure_future(self._lock.acquire())
        left = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait({acquire, left}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request was cancelled: give back the model if it got it
            if acquire.done() and not acquire.cancelled():
                self._lock.release()
            acquire.cancel()
            raise
        finally:
            self._waiting -= 1
            left.cancel()
        if not acquire.done():
            acquire.cancel()
            raise ClientGone()
        try:
            yield
        finally:
            self._lock.release()
