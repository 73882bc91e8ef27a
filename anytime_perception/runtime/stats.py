"""Running statistics of the pipeline for diagnostics (pure Python, no ROS)."""
from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

from .types import StageResult

__all__ = ["PipelineStats"]


class PipelineStats:
    """Per-frame outcomes over a sliding window of the last ``window`` frames."""

    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self._final: deque[StageResult] = deque(maxlen=window)
        self._preliminary_ms: deque[float] = deque(maxlen=window)
        self._overhead_ms: deque[float] = deque(maxlen=window)
        self.frames = 0
        self.rejected = 0  # malformed images

    def add_frame(self, results: list[StageResult]) -> None:
        """Record one processed frame (its results in stage order)."""
        with self._lock:
            self.frames += 1
            self._preliminary_ms.append(results[0].latency_ms)
            self._final.append(results[-1])

    def add_overhead(self, milliseconds: float) -> None:
        """Record the adapter's own cost for one frame (receipt -> preliminary published, minus stage 0)."""
        with self._lock:
            self._overhead_ms.append(milliseconds)

    def count_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def summary(self) -> dict[str, float | int | str]:
        """Key figures of the window: miss rate, stages, stop reasons, MACs vs budget, latency."""
        with self._lock:
            final, prelim, overhead = list(self._final), list(self._preliminary_ms), list(self._overhead_ms)
            out: dict[str, float | int | str] = {"frames": self.frames, "rejected_images": self.rejected}
        if not final:
            return out
        latency = np.array([r.latency_ms for r in final])
        out["deadline_miss_rate"] = float(np.mean([r.latency_ms > r.deadline_ms for r in final]))
        for stage, n in sorted(Counter(r.stage for r in final).items()):
            out[f"final_stage_{stage}"] = n
        for reason, n in sorted(Counter(r.stop_reason for r in final).items()):
            out[f"stop_{reason}"] = n
        out["macs_mean"] = float(np.mean([r.macs for r in final]))
        out["macs_over_budget_mean"] = float(np.mean([r.macs / max(1, r.mac_budget) for r in final]))
        for q in (50, 90, 99):
            out[f"final_latency_p{q}_ms"] = float(np.percentile(latency, q))
            out[f"preliminary_latency_p{q}_ms"] = float(np.percentile(prelim, q))
            if overhead:
                out[f"ros_overhead_p{q}_ms"] = float(np.percentile(overhead, q))
        out["mode"] = final[-1].mode
        return out
