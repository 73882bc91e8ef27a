"""A one-slot mailbox: the newest frame replaces an unprocessed older one (keep-last 1)."""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["LatestSlot"]

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Thread-safe slot holding only the newest item; ``put`` returns the one it replaced."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None

    def put(self, item: T) -> T | None:
        """Store ``item``; returns the unprocessed item it replaced, if any."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
            return replaced

    def has_item(self) -> bool:
        """A newer item is waiting (used for preemption)."""
        return self._item is not None

    def take(self, timeout: float) -> T | None:
        """The newest item, waiting up to ``timeout`` seconds; None if none came."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item
