"""The anytime policy: may the next stage of this frame run, and if not, why not."""
from __future__ import annotations

import os
import statistics
import threading
from collections import deque
from dataclasses import dataclass

import psutil

from .modes import VehicleMode
from .types import StopReason

__all__ = ["StageContext", "decide", "LatencyEstimator", "PublishMargin", "LoadMonitor"]


@dataclass(frozen=True)
class StageContext:
    """Everything the decision before stage ``next_stage`` depends on (times in seconds)."""

    next_stage: int
    num_stages: int
    macs_used: int
    next_stage_macs: int
    now: float
    frame_start: float
    predicted_stage_s: float
    other_cpu_load: float  # share of all cores used by other processes, [0, 1]
    confident: bool
    newer_frame_waiting: bool


def decide(ctx: StageContext, mode: VehicleMode) -> StopReason | None:
    """Stop reason for the frame, or None if stage ``ctx.next_stage`` may run.

    Checked in order: no stage left, newer frame, gate, MAC budget, deadline, CPU load.
    """
    if ctx.next_stage >= ctx.num_stages:
        return StopReason.COMPLETE
    if ctx.newer_frame_waiting:
        return StopReason.PREEMPTED
    if ctx.confident:
        return StopReason.CONFIDENT
    if ctx.macs_used + ctx.next_stage_macs > mode.mac_budget:
        return StopReason.BUDGET
    if ctx.now + ctx.predicted_stage_s > ctx.frame_start + mode.deadline_ms / 1000.0:
        return StopReason.DEADLINE
    if ctx.other_cpu_load > mode.cpu_load_ceiling:
        return StopReason.LOAD
    return None


class LatencyEstimator:
    """Online per-stage latency: each stage's time as a learned multiple of stage 0's.

    Stage 0 runs on every frame, so its time says how contended the CPU is right now; a later
    stage is predicted as (median + ``k`` median absolute deviations of its recent ratios to stage
    0) x the median of the last ``level_window`` stage-0 times. Medians keep one stalled run from
    inflating the estimate: a stalled ratio would block a stage that is then skipped (and so never
    re-measured) for good, and one stage 0 preempted for a time slice (2 ms of work taking 20 ms)
    would scale every later stage of its frame by ten. ``k`` = 0 (the median: start a stage that
    typically fits) suits an engine that cuts a stage off at the deadline, where a wrong start
    costs CPU time until then and never a late answer; a larger ``k`` starts only stages that
    almost surely fit (measured in docs/results/streaming.md).
    """

    def __init__(self, num_stages: int, window: int = 15, k: float = 0.0, level_window: int = 5) -> None:
        self.k = k
        self._ratios: list[deque[float]] = [deque(maxlen=window) for _ in range(num_stages)]
        self._stage0: deque[float] = deque(maxlen=level_window)

    def update(self, stage: int, seconds: float, stage0_seconds: float) -> None:
        """Record stage ``stage`` taking ``seconds`` in a frame whose stage 0 took ``stage0_seconds``."""
        if stage == 0:
            self._stage0.append(seconds)
        self._ratios[stage].append(seconds / max(stage0_seconds, 1e-6))

    def predict(self, stage: int, stage0_seconds: float) -> float:
        """Predicted seconds for ``stage`` in a frame whose stage 0 took ``stage0_seconds`` (the
        contention level is that, or the median of recent stage-0 times once there are any)."""
        ratios = list(self._ratios[stage])  # snapshots: the refinement thread appends meanwhile
        if not ratios:
            return 0.0
        level = statistics.median(self._stage0) if self._stage0 else stage0_seconds
        median = statistics.median(ratios)
        spread = statistics.median(abs(r - median) for r in ratios)
        return (median + self.k * spread) * level


class PublishMargin:
    """How long before the deadline a wait (for an appeal's answer) or a refinement stage (cut
    off by ``Aborter``) must end so that the final result is still published in time: the
    largest of the recent measured end-to-published
    times, never below ``floor_s`` (default: about one scheduler time slice of a busy Linux CPU)
    and never above half the deadline. On a loaded CPU the thread wakes late and publishing slows;
    the margin grows with it after the first late frame instead of missing every deadline.
    """

    def __init__(self, floor_s: float = 0.005, window: int = 32) -> None:
        self.floor_s = floor_s
        self._needed: deque[float] = deque(maxlen=window)

    def seconds(self, deadline_s: float) -> float:
        """The current margin for a frame with deadline ``deadline_s``."""
        return min(deadline_s / 2, max([self.floor_s, *self._needed]))

    def update(self, wait_end: float, published: float) -> None:
        """Record a wait that ran out at ``wait_end`` and a final published at ``published``
        (same clock): the margin that frame needed."""
        self._needed.append(max(0.0, published - wait_end))


class LoadMonitor:
    """System-wide CPU load from processes other than this one, sampled every ``period_s`` in a
    background thread, so reading it on a frame's hot path costs nothing.

    Our own inference is excluded, otherwise the node would curtail itself.
    """

    def __init__(self, period_s: float = 0.2) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = period_s
        self._process = psutil.Process(os.getpid())
        self._cores = psutil.cpu_count() or 1
        self._value = 0.0
        self._stop = threading.Event()
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)
        threading.Thread(target=self._sample, name="load_monitor", daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            system = psutil.cpu_percent(None) / 100.0
            own = self._process.cpu_percent(None) / 100.0 / self._cores
            self._value = min(1.0, max(0.0, system - own))

    def other_load(self) -> float:
        """Share of all cores busy with other processes over the last period, in [0, 1]."""
        return self._value

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
