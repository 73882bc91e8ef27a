"""Cutting a graph call off at a time: a refinement stage that would end after its frame's
deadline is stopped there instead of finishing late.

ONNX Runtime checks a run's ``RunOptions.terminate`` flag between graph nodes; ``Aborter`` owns
one background thread that sets the flag of every armed run when its time comes. A run that
returns first is disarmed. ``AnytimeModel`` turns a run ended by the flag into ``StageAborted``.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time

import onnxruntime as ort

__all__ = ["Aborter", "StageAborted"]


class StageAborted(RuntimeError):
    """A stage's graph call was stopped by its abort time (the frame keeps its earlier results)."""


class Aborter:
    """Sets ``terminate`` on armed ``RunOptions`` at their ``time.perf_counter()`` time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, ort.RunOptions]] = []
        self._armed: set[int] = set()
        self._ids = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="stage_aborter", daemon=True)
        self._thread.start()

    def arm(self, at: float) -> tuple[int, ort.RunOptions]:
        """Run options whose graph call stops at perf_counter time ``at`` (at once if it has
        passed); disarm the returned id when the call returns."""
        options = ort.RunOptions()
        handle = next(self._ids)
        if at <= time.perf_counter():
            options.terminate = True
            return handle, options
        with self._cond:
            self._armed.add(handle)
            if not self._heap or at < self._heap[0][0]:
                self._cond.notify()  # else the thread already wakes before ``at``: no switch to it per stage
            heapq.heappush(self._heap, (at, handle, options))
        return handle, options

    def disarm(self, handle: int) -> None:
        """The call returned: its options are left alone (the heap entry is dropped when due)."""
        with self._cond:
            self._armed.discard(handle)

    def close(self) -> None:
        """Stop the thread; runs armed meanwhile are not stopped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                at, handle, options = self._heap[0]
                now = time.perf_counter()
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
                if handle in self._armed:
                    self._armed.discard(handle)
                    options.terminate = True
