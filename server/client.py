"""Notice when an HTTP client goes away, so its turn can stop at once."""

from __future__ import annotations

import asyncio
from typing import Callable

from starlette.types import Receive


class ClientWatch:
    """Listens on the ASGI ``receive`` channel (after the body is read) for the disconnect.

    ``gone`` is set and every function given to :meth:`on_gone` is called when it comes.
    """

    def __init__(self, receive: Receive) -> None:
        self.gone = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._task = asyncio.ensure_future(self._watch(receive))

    def on_gone(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the client disconnects (at once if it already has)."""
        self._callbacks.append(callback)
        if self.gone.is_set():
            callback()

    def close(self) -> None:
        """Stop listening (the request is answered)."""
        self._callbacks.clear()
        self._task.cancel()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        self.gone.set()
        for callback in self._callbacks:
            callback()
