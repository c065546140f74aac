"""One lock per loaded llama.cpp model: a llama context is not safe for concurrent use."""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

from .errors import ReentrantCallError

_registry: "weakref.WeakKeyDictionary[object, _ModelLock]" = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


class _ModelLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner == me:
            raise ReentrantCallError(
                "This model is already busy with a turn in this thread (a callback called the "
                "chat, or an earlier stream was not finished). Finish or close the running "
                "stream first, or call from another thread."
            )
        with self._lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None


def lock_for(model: object) -> _ModelLock:
    """The lock shared by every GuardedChat that uses ``model``."""
    with _registry_lock:
        lock = _registry.get(model)
        if lock is None:
            lock = _registry[model] = _ModelLock()
        return lock
