"""The anytime policy: may the next stage of this frame run, and if not, why not."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import psutil

from .modes import VehicleMode
from .types import StopReason

__all__ = ["StageContext", "decide", "LatencyEstimator", "LoadMonitor"]


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
    """Online per-stage latency: EWMA of the time plus ``k`` EWMA absolute deviations.

    Measured times grow when the CPU is contended, so the prediction follows the load.
    """

    def __init__(self, num_stages: int, alpha: float = 0.2, k: float = 2.0) -> None:
        self.alpha, self.k = alpha, k
        self._mean: list[float | None] = [None] * num_stages
        self._dev = [0.0] * num_stages

    def update(self, stage: int, seconds: float) -> None:
        mean = self._mean[stage]
        if mean is None:
            self._mean[stage] = seconds
            return
        self._dev[stage] += self.alpha * (abs(seconds - mean) - self._dev[stage])
        self._mean[stage] = mean + self.alpha * (seconds - mean)

    def predict(self, stage: int) -> float:
        """Predicted seconds for ``stage`` (0 before any measurement)."""
        mean = self._mean[stage]
        return 0.0 if mean is None else mean + self.k * self._dev[stage]


class LoadMonitor:
    """System-wide CPU load from processes other than this one, sampled at most every ``period_s``.

    Our own inference is excluded, otherwise the node would curtail itself.
    """

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self._process = psutil.Process(os.getpid())
        self._cores = psutil.cpu_count() or 1
        self._lock = threading.Lock()
        self._value = 0.0
        self._last = time.monotonic()
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)

    def other_load(self) -> float:
        """Share of all cores busy with other processes, in [0, 1]."""
        with self._lock:
            now = time.monotonic()
            if now - self._last >= self.period_s:
                system = psutil.cpu_percent(None) / 100.0
                own = self._process.cpu_percent(None) / 100.0 / self._cores
                self._value = min(1.0, max(0.0, system - own))
                self._last = now
            return self._value
